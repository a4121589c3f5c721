"""In-process: a whole daemon under ``open_daemon``, its timers on a ``MockClock``.

Timeouts, stalls, backoff and keepalives are logic, not processes: the agents are
still real subprocesses, but the clock that times them is trio's, so a
``MockClock`` that jumps whenever the daemon waits runs minutes of daemon time in
milliseconds. The end-to-end tests keep what is about processes, signals and
sockets of a separately started codyd.

Work in a worker thread looks like idleness to the autojumping clock, so a
deadline around one (the store's shielded flush at close) can pass before the
thread is done; these tests assert nothing that depends on such a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from codyd.config import load_config
from codyd.daemon import Daemon, lock_state_dir, open_daemon
from codyd.model.events import Event
from codyd.protocol import FrameDecoder, pack
from codyd.runs.pipeline import NOT_PARSED, OutputLine, OutputPump

from conftest import agent, short_tempdir

REAL_TIME_BOUND_S = 20.0  # real seconds any one test may take, whatever the mock clock says
POLL_S = 0.25  # mock seconds between looks at a run


def run_daemon(test: Callable[[Daemon, Path], Awaitable[None]], **env: str) -> None:
    """Run ``test`` against an in-process daemon whose clock jumps whenever it waits."""
    root = short_tempdir()
    config = load_config(
        env={"HOME": str(root), **env},
        flags={"socket": root / "codyd.sock", "state_dir": root / "state"},
    )
    workspace = root / "ws"
    workspace.mkdir()

    async def main() -> None:
        async with open_daemon(config, handle_signals=False, subreaper=False) as daemon:
            await test(daemon, workspace)

    try:
        with lock_state_dir(config.state_dir):
            trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def start_run(
    daemon: Daemon, workspace: Path, command: list[str], **spec: Any
) -> dict[str, Any]:
    params: dict[str, Any] = {"workspace": str(workspace), "prompt": "do the work"}
    params.update(command=command, **spec)
    return await daemon.supervisor.start(params)


async def wait_for(daemon: Daemon, run_id: str, reached: Callable[[dict[str, Any]], bool]) -> Any:
    """A bounded poll in mock time; real time bounds it too, so a bug cannot hang the suite."""
    deadline = time.monotonic() + REAL_TIME_BOUND_S
    while True:
        snapshot = daemon.supervisor.get(run_id).snapshot()
        if reached(snapshot):
            return snapshot
        assert time.monotonic() < deadline, f"run {run_id} never got there: {snapshot}"
        await trio.sleep(POLL_S)


async def wait_state(daemon: Daemon, run_id: str, *states: str) -> dict[str, Any]:
    return await wait_for(daemon, run_id, lambda s: s["state"] in states)  # type: ignore[no-any-return]


async def events(daemon: Daemon, run_id: str) -> list[Event]:
    await daemon.store.sync()
    return await daemon.store.read_events(run_id, 0)


async def wait_event(daemon: Daemon, run_id: str, type_: str) -> Event:
    deadline = time.monotonic() + REAL_TIME_BOUND_S
    while not (found := of_type(await events(daemon, run_id), type_)):
        assert time.monotonic() < deadline, f"no {type_} event of run {run_id}"
        await trio.sleep(POLL_S)
    return found[0]


def of_type(found: list[Event], type_: str) -> list[Event]:
    return [e for e in found if e.type == type_]


def test_turn_timeout_stops_the_turn() -> None:
    """A turn running longer than turn_timeout_s is stopped with outcome timed_out."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(
            daemon,
            workspace,
            agent("sleeper"),
            run_id="to",
            turn_timeout_s=120,
            max_consecutive_failures=1,
            sigkill_delay_s=1,
        )
        final = await wait_state(daemon, "to", "failed")
        assert final["error"]["code"] == "timed_out" and final["error"]["retryable"] is True
        found = await events(daemon, "to")
        assert of_type(found, "signal_sent")[0].data["signal"] == "SIGTERM"
        completed = of_type(found, "turn_completed")[0].data
        assert completed["outcome"] == "timed_out"
        # Timed by trio's clock: two minutes of it, however little real time passed.
        assert completed["duration_ms"] >= 120_000

    run_daemon(test)


def test_stalled_turn_is_stopped() -> None:
    """A turn silent for stall_timeout_s is stopped with outcome stalled."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(
            daemon,
            workspace,
            agent("staller"),
            run_id="st",
            stall_timeout_s=90,
            max_consecutive_failures=1,
            sigkill_delay_s=1,
        )
        final = await wait_state(daemon, "st", "failed")
        assert final["error"]["code"] == "stalled"
        kinds = [e.type for e in await events(daemon, "st")]
        assert "stall_detected" in kinds and "signal_sent" in kinds

    run_daemon(test)


def test_backoff_phase_between_failed_turns() -> None:
    """After a failed turn the run waits in phase backoff before the next turn."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(
            daemon,
            workspace,
            agent("failer"),
            run_id="bo",
            retry_backoff_s=30,
            max_consecutive_failures=5,
        )
        snapshot = await wait_for(daemon, "bo", lambda s: s["phase"] == "backoff")
        assert snapshot["state"] == "running" and snapshot["current_turn"] == 1
        paused = await daemon.supervisor.pause("bo", None, now=False)
        assert paused["state"] == "paused"  # a pause during backoff takes effect at once

    run_daemon(test)


async def backoff_waits(daemon: Daemon, run_id: str, turns: int) -> list[float]:
    """Mock seconds each of the first ``turns`` failed turns spent in backoff."""
    waits = []
    for turn in range(1, turns + 1):
        await wait_for(daemon, run_id, lambda s, n=turn: s["current_turn"] == n)
        await wait_for(daemon, run_id, lambda s: s["phase"] == "backoff")
        began = trio.current_time()
        await wait_for(daemon, run_id, lambda s, n=turn: s["current_turn"] > n)
        waits.append(trio.current_time() - began)
    return waits


def assert_waited(waits: list[float], delays: tuple[float, ...]) -> None:
    # Each within one look of its delay: the backoff, not the agents, sets the pace.
    for waited, delay in zip(waits, delays, strict=True):
        assert delay - POLL_S <= waited <= delay + 2 * POLL_S, waits


def test_backoff_doubles_from_retry_backoff_s() -> None:
    """Failed turns are retried after 2 s, 4 s, 8 s … of the daemon's clock."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(
            daemon, workspace, agent("failer"), run_id="dbl", max_consecutive_failures=4
        )
        assert_waited(await backoff_waits(daemon, "dbl", 3), (2.0, 4.0, 8.0))
        await wait_state(daemon, "dbl", "failed")

    run_daemon(test)


def test_backoff_is_capped_at_300_s() -> None:
    """However long retry_backoff_s doubles to, a retry waits at most 300 s."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(
            daemon,
            workspace,
            agent("failer"),
            run_id="cap",
            retry_backoff_s=200,
            max_consecutive_failures=3,
        )
        assert_waited(await backoff_waits(daemon, "cap", 2), (200.0, 300.0))
        await wait_state(daemon, "cap", "failed")

    run_daemon(test)


def test_run_completes_after_max_turns() -> None:
    """After max_turns turns the run completes, its completion reason max_turns."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(daemon, workspace, agent("printer", 3), run_id="mt", max_turns=2)
        final = await wait_state(daemon, "mt", "completed")
        assert final["completion"] == {"detected": True, "reason": "max_turns", "line": None}
        assert final["stats"]["turns"] == 2 and final["current_turn"] == 2
        kinds = [e.type for e in await events(daemon, "mt")]
        assert kinds.count("turn_completed") == 2
        assert kinds[-2:] == ["completion_detected", "run_completed"]

    run_daemon(test)


def test_streams_send_keepalives_while_idle() -> None:
    """A following stream with nothing to say sends keepalive items every keepalive_s."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        stream = await trio.open_unix_socket(str(daemon.config.socket))
        decoder = FrameDecoder()
        request = {"id": 7, "method": "run.events", "params": {"follow": True}}
        await stream.send_all(pack(request))
        seen: list[tuple[dict[str, Any], float]] = []
        began = trio.current_time()
        while len(seen) < 2:
            data = await stream.receive_some(65536)
            assert data, "the daemon hung up"
            seen += [(m, trio.current_time() - began) for m in decoder.feed(data)]
        assert [m for m, _ in seen] == [{"id": 7, "keepalive": True}] * 2
        (_, first), (_, second) = seen
        # Paced by the daemon's clock, never sooner than keepalive_s. Either may come some
        # mock seconds late: the clock jumps ahead while a worker thread of the daemon's runs
        # (a read of the store, the disk guard's look at the free space).
        assert 30 <= first < 120 and 30 <= second - first < 60, seen
        await stream.aclose()

    run_daemon(test, CODYD_KEEPALIVE_S="30")


def test_output_events_are_paced_100_ms_apart() -> None:
    """Unconsumed output becomes subprocess_output events at most one per 100 ms."""
    appended: list[tuple[float, dict[str, Any]]] = []

    async def main() -> None:
        pump = OutputPump(
            lambda text: text, lambda data: appended.append((trio.current_time(), data))
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run)
            for n in range(5):
                text = f"line {n}"
                pump(OutputLine("stdout", text.encode(), False, text, NOT_PARSED))
                await trio.sleep(0.03)
            await pump.flush()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    instants = [at for at, _ in appended]
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(instants))
    assert "".join(data["text"] for _, data in appended) == "".join(f"line {n}\n" for n in range(5))
    assert len(appended) >= 2  # coalesced, but paced over more than one event


def test_leaving_open_daemon_stops_live_turns_and_closes_the_socket() -> None:
    """open_daemon's exit is the graceful shutdown: no agent outlives it, the socket goes."""
    seen: dict[str, Any] = {}

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start_run(daemon, workspace, agent("sleeper"), run_id="live")
        started = await wait_event(daemon, "live", "turn_started")
        seen.update(pid=started.data["pid"], socket=daemon.config.socket)
        assert daemon.config.socket.exists()

    run_daemon(test)
    assert not seen["socket"].exists()
    # Killed on the way out: the kernel may take a moment to end it (the mock clock lets the
    # daemon's last wait end at once), and this process, its parent, reaps it.
    deadline = time.monotonic() + 5.0
    while True:
        with contextlib.suppress(ChildProcessError):  # reaped already (or not ours)
            os.waitpid(seen["pid"], os.WNOHANG)
        try:
            os.kill(seen["pid"], 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"agent {seen['pid']} outlived its daemon"
        time.sleep(0.01)
