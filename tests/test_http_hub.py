"""The SSE hub: one reader of the store, a ring of encoded frames, streams behind it read alone."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from codyd.config import Config, load_config
from codyd.errors import Trimmed
from codyd.http.adapter import HttpCall
from codyd.http.hub import FrameRing, SseHub, sse_frame
from codyd.model.record import RunRecord
from codyd.protocol import Request
from codyd.server import Connection
from codyd.spec import parse_run_spec
from codyd.store import Store, open_store

ID_LINE = re.compile(rb"^id: (\d+)$", re.M)


# -- the ring alone ------------------------------------------------------------------------


def test_the_ring_keeps_the_newest_frames_within_its_bounds() -> None:
    """Past its count or bytes the ring drops its oldest frames, and its floor follows."""
    ring = FrameRing(10, max_events=3, max_bytes=1000)
    assert ring.after(10) == (b"", 10) and ring.after(9) is None
    for gid in range(11, 16):
        ring.add(gid, b"%d;" % gid)
    assert (ring.floor, ring.head, len(ring)) == (12, 15, 3)
    assert ring.after(11) is None  # 12 is gone: what follows 11 is for the store to give
    assert ring.after(12) == (b"13;14;15;", 15)
    assert ring.after(14) == (b"15;", 15)
    assert ring.after(15) == (b"", 15)
    big = FrameRing(0, max_events=100, max_bytes=10)
    for gid in range(1, 5):
        big.add(gid, b"abcd")
    assert (big.floor, len(big), big.size_bytes) == (2, 2, 8)
    with pytest.raises(ValueError, match="not after the ring's head"):
        big.add(4, b"x")


def test_a_ring_write_is_bounded_but_never_empty() -> None:
    """One write takes frames up to its byte budget, and at least one frame however large."""
    ring = FrameRing(0)
    for gid in range(1, 5):
        ring.add(gid, b"x" * 10)
    assert ring.after(0, max_bytes=25) == (b"x" * 20, 2)
    assert ring.after(2, max_bytes=5) == (b"x" * 10, 3)


def test_events_deleted_past_the_head_move_it_and_reset_forgets() -> None:
    ring = FrameRing(0)
    ring.add(1, b"a")
    ring.advance(5)  # 2..5 committed but not retained
    assert ring.after(1) == (b"", 1) and ring.head == 5
    ring.add(6, b"b")
    assert ring.after(0) == (b"ab", 6)
    ring.reset(9)
    assert (ring.floor, ring.head, len(ring)) == (9, 9, 0) and ring.after(8) is None


# -- the hub over a real store --------------------------------------------------------------


@dataclass
class View:
    config: Config
    store: Store
    stopping: bool = False


class Reader:
    """An SSE client in-process: what the hub writes, kept as the bytes a socket would carry."""

    def __init__(self, hub: SseHub, after: int | None, gate: trio.Event | None = None) -> None:
        params: dict[str, Any] = {"follow": True}
        if after is not None:
            params["after"] = after
        self.hub = hub
        self.gate = gate
        self.body = bytearray()
        self.writes = 0
        self._moved = trio.Event()
        # The hub's streams never send through the connection: their items go to the sink.
        origin = cast(Connection, None)
        request = Request(0, "run.events", params)
        self.call = HttpCall(origin, request, is_stream=True, sink=self._sink, on_wait=self._waits)
        self.result: dict[str, Any] | None = None
        self.waiting = trio.Event()  # it has its cursor and has sent what there was

    async def _waits(self) -> None:
        self.waiting.set()

    async def _sink(self, key: str, value: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()  # a client that does not read: its write does not return
        assert key == "frames", key
        self.body += value
        self.writes += 1
        self._moved.set()
        self._moved = trio.Event()

    async def run(self) -> None:
        self.result = await self.hub.follow(self.call)

    def ids(self) -> list[int]:
        return [int(found) for found in ID_LINE.findall(self.body)]

    async def reach(self, gid: int) -> None:
        with trio.fail_after(10):
            while not self.ids() or self.ids()[-1] < gid:
                await self._moved.wait()


def make_record(workspace: Path) -> RunRecord:
    params = {"workspace": str(workspace), "prompt": "x", "command": ["true"]}
    return RunRecord(spec=parse_run_spec(params), node="test-node", created_at=time.time())


async def commit(store: Store, record: RunRecord, count: int, per_commit: int = 5) -> int:
    for n in range(count):
        store.append(record, "message", {"n": n, "text": f"line {n}"})
        if n % per_commit == per_commit - 1:
            await store.sync()
    await store.sync()
    return store.committed_gid


def well_formed(reader: Reader) -> None:
    """Every frame's id is its event's gid, and its data is the event's JSON."""
    for frame in bytes(reader.body).split(b"\n\n")[:-1]:
        lines = frame.split(b"\n")
        gid = int(lines[0].removeprefix(b"id: "))
        assert lines[1] == b"event: message"
        assert json.loads(lines[2].removeprefix(b"data: "))["gid"] == gid


async def open_hub(
    nursery: trio.Nursery, store: Store, ring_events: int
) -> tuple[SseHub, RunRecord]:
    view = View(load_config(env={"CODYD_KEEPALIVE_S": "60"}), store)
    hub = SseHub(view)  # type: ignore[arg-type]  # what the hub uses of the daemon
    hub.ring = FrameRing(store.committed_gid, max_events=ring_events)
    nursery.start_soon(hub.run)
    record = make_record(store.path.parent)
    store.add_run(record)
    await store.sync()
    return hub, record


async def test_a_stream_behind_the_ring_catches_up_exactly_once(tmp_path: Path) -> None:
    """A stuck client falls behind the ring, reads the store, and gets each event once, in order."""
    async with open_store(tmp_path / "store.db") as store, trio.open_nursery() as nursery:
        hub, record = await open_hub(nursery, store, ring_events=8)
        gate = trio.Event()
        fast, slow = Reader(hub, after=0), Reader(hub, after=0, gate=gate)
        nursery.start_soon(fast.run)
        nursery.start_soon(slow.run)
        first = await commit(store, record, 5)
        await fast.reach(first)
        last = await commit(store, record, 100)
        await fast.reach(last)
        assert hub.ring.floor > first  # what the slow client has not taken left the ring
        assert slow.ids() == []
        gate.set()
        await slow.reach(last)
        even_later = await commit(store, record, 7)
        await slow.reach(even_later)
        await fast.reach(even_later)
        expected = list(range(1, even_later + 1))
        assert slow.ids() == expected and fast.ids() == expected
        assert slow.body == fast.body
        well_formed(slow)
        nursery.cancel_scope.cancel()


async def test_resume_from_inside_and_from_before_the_ring(tmp_path: Path) -> None:
    """A cursor inside the ring reads it; one before it reads the store first; both go on live."""
    async with open_store(tmp_path / "store.db") as store, trio.open_nursery() as nursery:
        hub, record = await open_hub(nursery, store, ring_events=8)
        watcher = Reader(hub, after=None)  # keeps the hub reading
        nursery.start_soon(watcher.run)
        await hub.wait_moved()  # the hub has started from the newest commit
        last = await commit(store, record, 30)
        await watcher.reach(last)
        inside, before = last - 4, 3
        assert hub.ring.floor <= inside < hub.ring.head and before < hub.ring.floor
        readers = [Reader(hub, after=inside), Reader(hub, after=before), Reader(hub, after=None)]
        for reader in readers:
            nursery.start_soon(reader.run)
        with trio.fail_after(10):
            for reader in readers:
                await reader.waiting.wait()
        assert readers[0].ids()[-1] == readers[1].ids()[-1] == last
        assert readers[0].writes == 1  # the ring's frames in one write
        more = await commit(store, record, 6)
        for reader in readers:
            await reader.reach(more)
        assert readers[0].ids() == list(range(inside + 1, more + 1))
        assert readers[1].ids() == list(range(before + 1, more + 1))
        assert readers[2].ids() == list(range(last + 1, more + 1))
        for reader in readers:
            well_formed(reader)
        nursery.cancel_scope.cancel()


async def test_many_streams_receive_identical_bytes(tmp_path: Path) -> None:
    """Streams opened at different moments from the same cursor carry the same bytes."""
    async with open_store(tmp_path / "store.db") as store, trio.open_nursery() as nursery:
        hub, record = await open_hub(nursery, store, ring_events=16)
        early = [Reader(hub, after=0) for _ in range(10)]
        for reader in early:
            nursery.start_soon(reader.run)
        middle = await commit(store, record, 40, per_commit=3)
        late = [Reader(hub, after=0) for _ in range(10)]
        for reader in late:
            nursery.start_soon(reader.run)
        last = await commit(store, record, 40, per_commit=7)
        for reader in early + late:
            await reader.reach(last)
        assert middle < last
        assert {bytes(reader.body) for reader in early + late} == {bytes(early[0].body)}
        assert early[0].ids() == list(range(1, last + 1))
        nursery.cancel_scope.cancel()


async def test_a_cursor_before_the_retained_events_is_trimmed(tmp_path: Path) -> None:
    """A resume from before what retention kept is refused, as on the socket (410 over HTTP)."""
    async with (
        open_store(tmp_path / "store.db", max_events_per_run=5) as store,
        trio.open_nursery() as nursery,
    ):
        hub, record = await open_hub(nursery, store, ring_events=8)
        await commit(store, record, 20)
        store.apply_retention(5, 1000)
        await store.sync()
        with pytest.raises(Trimmed):
            await hub.follow(Reader(hub, after=2).call)
        nursery.cancel_scope.cancel()


async def test_an_ended_stream_returns_its_cursor(tmp_path: Path) -> None:
    """A stream told to end (client gone, shutdown) returns where it was, from the ring."""
    async with open_store(tmp_path / "store.db") as store, trio.open_nursery() as nursery:
        hub, record = await open_hub(nursery, store, ring_events=8)
        reader = Reader(hub, after=0)
        done = trio.Event()

        async def follow() -> None:
            await reader.run()
            done.set()

        nursery.start_soon(follow)
        last = await commit(store, record, 3)
        await reader.reach(last)
        reader.call.end("cancelled")
        with trio.fail_after(5):
            await done.wait()
        assert reader.result == {"end": "cancelled", "last_seq": last}
        assert reader.body == b"".join(
            sse_frame(event.gid, event.to_wire()) for event in await store.read_events(None, 0)
        )
        nursery.cancel_scope.cancel()
