"""In-process: the connection boundary of codyd.server over in-memory streams.

Each test drives ``Server.handle`` with one end of a ``trio.testing`` stream pair
and plays the peer on the other end: hanging up mid-stream, half-closing, not
reading at all, or leaving with answers in flight. Whatever the peer does, handle
returns normally, the connection's calls are over, and the server serves on.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from codyd.config import load_config
from codyd.errors import NotFound, Overloaded
from codyd.protocol import FrameDecoder, pack
from codyd.server import Call, Peer, Server

ME = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
BIG = "x" * 300_000


class Methods:
    """What the connection dispatches to: streams and answers of known shapes."""

    def __init__(self) -> None:
        self.items_sent = 0
        self.streams_open = 0
        self.stream_started = trio.Event()

    async def dispatch(self, call: Call) -> Any:
        method = call.request.method
        if method == "daemon.ping":
            return {"pong": True}
        if method == "big":
            return {"data": BIG}
        if method == "unpackable":
            return {"value": object()}  # fails in the encoder, outside the request's guard
        if method == "endless":
            return await self._endless(call)
        if method == "missing":
            raise NotFound("no run 'x'")
        if method == "busy":
            raise Overloaded("the store cannot write")
        raise AssertionError(f"unexpected method {method}")

    async def _endless(self, call: Call) -> Any:
        """A follower that always has more to send, like run.events on a chatty run."""
        self.streams_open += 1
        self.stream_started.set()
        try:
            while True:
                await call.send_item("event", {"seq": self.items_sent, "text": "line"})
                self.items_sent += 1
        finally:
            self.streams_open -= 1


@pytest.fixture
def methods() -> Methods:
    return Methods()


@pytest.fixture
def server(tmp_path: Path, methods: Methods) -> Server:
    config = load_config(
        env={"HOME": str(tmp_path)},
        flags={"socket": tmp_path / "s.sock", "state_dir": tmp_path / "state"},
    )
    return Server(config, methods.dispatch)


class Peer_:
    """The client's end: frames out, frames in."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.pending: list[dict[str, Any]] = []

    async def send(self, request_id: int, method: str, **params: Any) -> None:
        await self.stream.send_all(pack({"id": request_id, "method": method, "params": params}))

    async def receive(self) -> dict[str, Any] | None:
        """The next frame, or None at the end of the stream."""
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)


Pair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
PAIRS: dict[str, Pair] = {
    "memory": trio.testing.memory_stream_pair,
    "lockstep": trio.testing.lockstep_stream_pair,
}


async def serve_one(
    server: Server, pair: Pair, peer_side: Callable[[Peer_], Awaitable[None]]
) -> None:
    """Run one connection against ``peer_side``; fail if handle raises or outlives 5 s."""
    client, daemon_end = pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, daemon_end, ME)
            await peer_side(Peer_(client))
    assert not server.connections
    with trio.fail_after(1):
        await server.wait_calls_done()


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
async def test_peer_closing_mid_stream_ends_the_stream(
    server: Server, methods: Methods, pair: Pair
) -> None:
    """A follower that hangs up after three items: its stream stops sending, nothing escapes."""

    async def peer(p: Peer_) -> None:
        await p.send(1, "endless")
        for _ in range(3):
            frame = await p.receive()
            assert frame is not None and "event" in frame
        await p.stream.aclose()

    await serve_one(server, pair, peer)
    assert methods.streams_open == 0
    sent = methods.items_sent
    await trio.testing.wait_all_tasks_blocked()
    assert methods.items_sent == sent


async def test_peer_that_stops_reading_holds_only_its_own_connection(
    server: Server, methods: Methods
) -> None:
    """With no send buffer (lockstep), a peer that never reads blocks its stream; a second
    connection is served meanwhile, and the stalled one ends the moment its peer closes."""
    stalled_client, stalled_end = trio.testing.lockstep_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, stalled_end, ME)
            await Peer_(stalled_client).send(1, "endless")
            await methods.stream_started.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert methods.items_sent == 0  # the first item waits for a reader that never comes

            async def pinger(p: Peer_) -> None:
                await p.send(7, "daemon.ping")
                assert await p.receive() == {"id": 7, "result": {"pong": True}}
                await p.stream.aclose()

            other_client, other_end = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle, other_end, ME)
            await pinger(Peer_(other_client))
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 1 and methods.items_sent == 0
            await stalled_client.aclose()
    assert methods.streams_open == 0 and not server.connections


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
async def test_half_close_ends_the_connection_and_its_calls(
    server: Server, methods: Methods, pair: Pair
) -> None:
    """EOF from the peer (half-close) ends the connection: the daemon closes its side."""

    async def peer(p: Peer_) -> None:
        await p.send(1, "endless")
        assert await p.receive() is not None
        await p.stream.send_eof()
        while await p.receive() is not None:
            pass  # items sent before the daemon saw the EOF, then the end

    await serve_one(server, pair, peer)
    assert methods.streams_open == 0


async def test_close_with_pipelined_answers_in_flight(server: Server, methods: Methods) -> None:
    """Twenty pipelined requests (large answers, pings, streams), then the peer leaves at once.

    (Over a lockstep pair a peer that sends without reading blocks itself: the daemon's
    reader answers pings in order. Memory streams buffer, so all twenty are in flight.)"""

    async def peer(p: Peer_) -> None:
        for request_id in range(20):
            method = ("big", "daemon.ping", "endless")[request_id % 3]
            await p.send(request_id, method)
        await p.stream.aclose()

    await serve_one(server, trio.testing.memory_stream_pair, peer)
    assert methods.streams_open == 0


async def test_peer_reading_part_of_a_large_answer_then_leaving(
    server: Server, methods: Methods
) -> None:
    async def peer(p: Peer_) -> None:
        await p.send(1, "big")
        assert await p.stream.receive_some(1000)
        await p.stream.aclose()

    await serve_one(server, trio.testing.lockstep_stream_pair, peer)


async def test_a_bug_in_a_connection_is_logged_and_ends_that_connection(
    server: Server, methods: Methods
) -> None:
    """An answer that cannot be encoded: logged with its traceback; the peer sees a close."""

    async def peer(p: Peer_) -> None:
        await p.send(1, "unpackable")
        assert await p.receive() is None

    with structlog.testing.capture_logs() as logs:
        await serve_one(server, trio.testing.memory_stream_pair, peer)
    failed = [entry for entry in logs if entry["event"] == "connection failed; closed it"]
    assert failed and failed[0]["log_level"] == "error" and failed[0].get("exc_info")


async def test_unreadable_peer_credentials_drop_only_that_connection(server: Server) -> None:
    """SO_PEERCRED failing (here: the socket is already closed) is a warning, not a crash."""
    left, right = trio.socket.socketpair()
    stream = trio.SocketStream(right)
    right.close()
    with structlog.testing.capture_logs() as logs, trio.fail_after(5):
        await server.handle(stream)
    left.close()
    assert any("peer credentials" in entry["event"] for entry in logs)
    assert not server.connections


async def test_wait_calls_done_waits_for_the_last_call(server: Server, methods: Methods) -> None:
    """The shutdown drain wakes when the last call ends, not on a poll."""
    client, daemon_end = trio.testing.lockstep_stream_pair()
    done = trio.Event()

    async def drain() -> None:
        await server.wait_calls_done()
        done.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, daemon_end, ME)
            p = Peer_(client)
            await p.send(1, "endless")
            await methods.stream_started.wait()
            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            await client.aclose()
            await done.wait()


# -- out of descriptors in accept() -------------------------------------------------------------


def _lowest_free_descriptor() -> int:
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    return probe


async def _ping_or_refusal(client: trio.socket.SocketType) -> dict[str, Any] | None:
    """Send a ping and read the first frame back; None if the daemon closed without one."""
    with contextlib.suppress(OSError):  # a refused client may be closed before it sends
        await client.send(pack({"id": 5, "method": "daemon.ping", "params": {}}))
    decoder = FrameDecoder()
    while True:
        try:
            data = await client.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        frames = decoder.feed(data)
        if frames:
            return frames[0]


async def test_out_of_descriptors_in_accept_answers_overloaded_then_recovers(
    server: Server, tmp_path: Path
) -> None:
    """A real EMFILE: this process's limit is lowered to just above its open descriptors.
    The clients the server has no descriptor for are answered `overloaded` through the spare
    descriptor, with one warning; once the limit allows again, a new client is served."""
    server.keep_fd_headroom = False  # else it refuses before the kernel does
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients = [trio.socket.socket(trio.socket.AF_UNIX) for _ in range(6)]
    later = trio.socket.socket(trio.socket.AF_UNIX)
    with structlog.testing.capture_logs() as logs, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_descriptor() + 1, hard))
            try:
                for client in clients:
                    await client.connect(str(server.path))
                answers = [await _ping_or_refusal(client) for client in clients]
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for client in clients:
                client.close()
            await later.connect(str(server.path))
            assert await _ping_or_refusal(later) == {"id": 5, "result": {"pong": True}}
            later.close()
            nursery.cancel_scope.cancel()
    served = [a for a in answers if a is not None and "result" in a]
    refused = [a for a in answers if a is not None and "error" in a]
    assert len(served) == 1 and len(refused) == len(clients) - 1, answers
    assert all(a["id"] is None and a["error"]["code"] == "overloaded" for a in refused)
    events = [entry["event"] for entry in logs]
    assert events.count("cannot accept connections; answering overloaded and pausing") == 1
    assert "accepting connections again" in events


async def test_client_mistakes_are_logged_at_info_daemon_failures_at_warning(
    server: Server,
) -> None:
    """A request refused for the client's own mistake is info; one the daemon failed is a warning."""

    async def peer(p: Peer_) -> None:
        for request_id, method in enumerate(("missing", "busy"), start=1):
            await p.send(request_id, method)
            frame = await p.receive()
            assert frame is not None and "error" in frame
        await p.stream.aclose()

    with structlog.testing.capture_logs() as logs:
        await serve_one(server, trio.testing.memory_stream_pair, peer)
    levels = {e["code"]: e["log_level"] for e in logs if e["event"] == "request failed"}
    assert levels == {"not_found": "info", "overloaded": "warning"}
