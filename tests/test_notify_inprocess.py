"""Webhook delivery in-process, on trio's MockClock: the default retry schedule, exactly.

The receiver is a real HTTP server on loopback, a task of the same trio loop; the run
is a real subprocess. Only the clock is trio's mock one, so twenty minutes of retries
(1 s doubling up to 600 s) take a moment.
"""

from __future__ import annotations

from pathlib import Path

import trio
from standardwebhooks.webhooks import Webhook
from test_daemon_inprocess import run_daemon, start_run, wait_state
from webhook_receiver import free_port

from codyd.daemon import Daemon

from conftest import agent

SECRET = "in-process secret"
REFUSALS = 12  # 1, 2, 4, ..., 512, then 600 twice
SCHEDULE = [min(600.0, 2.0**n) for n in range(REFUSALS)]
HEAD_LIMIT = 64 * 1024


class TrioReceiver:
    """Answers 500 to the first ``refusals`` POSTs, then 204; notes when each came."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.arrivals: list[float] = []
        self.bodies: list[bytes] = []
        self.delivered = trio.Event()
        self._verifier = Webhook(SECRET.encode())

    async def serve(self, port: int, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.serve_tcp(self._handle, port, host="127.0.0.1", task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk and len(data) < HEAD_LIMIT
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            pairs = (line.split(": ", 1) for line in lines[1:])
            headers = {name.lower(): value for name, value in pairs}
            while len(body) < int(headers["content-length"]):
                body += await stream.receive_some()
            self._verifier.verify(body, headers)
            self.arrivals.append(trio.current_time())
            self.bodies.append(body)
            refused = len(self.arrivals) <= self.refusals
            status = b"500 Internal Server Error" if refused else b"204 No Content"
            await stream.send_all(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            if not refused:
                self.delivered.set()


def test_retries_back_off_from_1_s_doubling_to_600_s() -> None:
    """A refused event is sent again after 1, 2, 4, ... s, then every 600 s, until taken."""
    port = free_port()
    receiver = TrioReceiver(REFUSALS)

    async def test(daemon: Daemon, workspace: Path) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve, port)
            await start_run(daemon, workspace, agent("printer", 1), run_id="wh", max_turns=1)
            await wait_state(daemon, "wh", "completed")
            with trio.fail_after(sum(SCHEDULE) + 60):
                await receiver.delivered.wait()
            with trio.fail_after(60):
                while (status := daemon.info()["webhooks"]["ops"])["last_success_at"] is None:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        gaps = [b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:], strict=False)]
        assert len(gaps) == REFUSALS
        for gap, delay in zip(gaps, SCHEDULE, strict=True):
            assert delay <= gap < delay + 0.5, (gaps, SCHEDULE)
        assert len(set(receiver.bodies)) == 1  # the same message every time
        # The last error stays after the success, for whoever looks later.
        assert status["last_error"] == "HTTP 500" and status["lag_events"] == 0

    hooks = f'[{{name = "ops", url = "http://127.0.0.1:{port}/", secret = "{SECRET}"}}]'
    run_daemon(test, CODYD_WEBHOOKS=hooks)
