"""One reader of the store for every all-runs SSE stream: a ring of encoded frames.

Each all-runs stream used to query the store on every commit and JSON-encode every
event itself: with many dashboards open that cost grew as streams × events. The
hub's task reads each committed event once, encodes it once as an SSE frame, and
keeps the newest frames in a :class:`FrameRing` bounded in count and bytes. A stream
whose cursor is inside the ring copies the frames after it in one write; a stream
whose cursor is behind the ring's start (a slow client, a resume from long ago)
reads the store at its own pace, as ``run.events`` does, until it is inside again.
What a slow client holds is at most one read or one write, whatever the backlog.

The hub reads only while a stream is open; after an idle spell it starts again
from the newest commit, and the streams behind that point read the store.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog
import trio

from codyd.http.adapter import HttpCall, to_json
from codyd.rpc import start_cursor
from codyd.store import Store

if TYPE_CHECKING:
    from codyd.rpc import DaemonView

RING_EVENTS = 4096
RING_BYTES = 1024 * 1024
# Events one read of the store takes (the hub's, or a stream's behind the ring): few, so
# that a read of large events costs little memory; a commit rarely holds more.
READ_EVENTS = 64
WRITE_BYTES = 256 * 1024  # what one stream writes at a time from the ring
WAKE_S = 1.0  # while streams are open the hub looks at the store at least this often
IDLE_WAKE_S = 60.0  # with none, it waits to be wanted (the bound heals a missed wake-up)
RETRY_S = 1.0  # after a failed read of the store

log = structlog.get_logger("codyd.http")


def sse_frame(cursor: int, value: dict[str, Any]) -> bytes:
    """One event as SPEC 10 frames it: its cursor, its type and its JSON."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (cursor, value["type"].encode(), to_json(value))


class FrameRing:
    """The newest events' frames by gid: every retained event in ``(floor, head]``.

    Events deleted from the store (retention, forget) after they were read stay here
    until they are pushed out; the ring never misses one the store still has.
    """

    def __init__(self, at: int, max_events: int = RING_EVENTS, max_bytes: int = RING_BYTES):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._gids: list[int] = []
        self._frames: list[bytes] = []
        self._start = 0  # index of the oldest entry kept; the lists are compacted now and then
        self._bytes = 0
        self.floor = self.head = at

    def __len__(self) -> int:
        return len(self._gids) - self._start

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def reset(self, at: int) -> None:
        """Forget every frame: the ring holds ``(at, at]`` from now on."""
        self._gids, self._frames, self._start, self._bytes = [], [], 0, 0
        self.floor = self.head = at

    def add(self, gid: int, frame: bytes) -> None:
        if gid <= self.head:
            raise ValueError(f"gid {gid} is not after the ring's head {self.head}")
        self._gids.append(gid)
        self._frames.append(frame)
        self._bytes += len(frame)
        self.head = gid
        self._evict()

    def advance(self, head: int) -> None:
        """Nothing retained up to ``head`` beyond what was added (the rest was deleted)."""
        self.head = max(self.head, head)

    def _evict(self) -> None:
        while len(self) > 1 and (len(self) > self.max_events or self._bytes > self.max_bytes):
            self._bytes -= len(self._frames[self._start])
            self.floor = self._gids[self._start]
            self._start += 1
        if self._start > len(self._gids) // 2:
            del self._gids[: self._start]
            del self._frames[: self._start]
            self._start = 0

    def after(self, cursor: int, max_bytes: int = WRITE_BYTES) -> tuple[bytes, int] | None:
        """The frames after ``cursor`` (up to ``max_bytes``, at least one) and the last gid.

        None when the cursor is behind the ring: what follows it must come from the store.
        """
        if cursor < self.floor:
            return None
        first = bisect.bisect_right(self._gids, cursor, lo=self._start)
        end, size = first, 0
        while end < len(self._gids) and (
            end == first or size + len(self._frames[end]) <= max_bytes
        ):
            size += len(self._frames[end])
            end += 1
        if end == first:
            return b"", cursor
        return b"".join(self._frames[first:end]), self._gids[end - 1]


class SseHub:
    """The task that fills the ring after each commit, and the streams that read it."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.store: Store = daemon.store
        self.ring = FrameRing(self.store.committed_gid)
        self._subscribers = 0
        self._wanted = trio.Event()
        self._moved = trio.Event()

    # -- the hub's task ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self.watched():
                with trio.move_on_after(IDLE_WAKE_S):
                    await self._wanted.wait()
                self._wanted = trio.Event()
                if self.watched():
                    self._restart()  # what came while nobody watched is for the store to give
                continue
            try:
                await self._catch_up()
            except Exception as exc:
                # The streams go on from the store; the hub tries again shortly.
                log.warning("SSE hub cannot read the store", error=str(exc))
                self._restart()
                await trio.sleep(RETRY_S)
                continue
            if self.store.committed_gid <= self.ring.head:
                with trio.move_on_after(WAKE_S):
                    await self.store.wait_committed()

    def watched(self) -> bool:
        """A stream is open: the hub reads each commit."""
        return self._subscribers > 0

    def _restart(self) -> None:
        self.ring.reset(self.store.committed_gid)
        self._broadcast()

    async def _catch_up(self) -> None:
        store = self.store
        while store.committed_gid > self.ring.head:
            bound = store.committed_gid  # read_events reads up to the commit it starts at
            events = await store.read_events(None, self.ring.head, limit=READ_EVENTS)
            for event in events:
                self.ring.add(event.gid, sse_frame(event.gid, event.to_wire()))
            if len(events) < READ_EVENTS:
                self.ring.advance(bound)
            self._broadcast()

    def _broadcast(self) -> None:
        self._moved.set()
        self._moved = trio.Event()

    async def wait_moved(self) -> None:
        await self._moved.wait()

    @contextmanager
    def subscribed(self) -> Iterator[None]:
        self._subscribers += 1
        self._wanted.set()
        try:
            yield
        finally:
            self._subscribers -= 1

    # -- a stream ----------------------------------------------------------------------------

    async def follow(self, call: HttpCall) -> dict[str, Any]:
        """``run.events`` with ``follow`` on all runs, its items being runs of frames."""
        store = self.store
        await store.settle()
        oldest = await store.oldest_gid()
        cursor = start_cursor(
            call.request.params.get("after"), store.committed_gid, oldest, "all runs"
        )
        with self.subscribed():
            return await self._follow(call, cursor)

    async def _follow(self, call: HttpCall, cursor: int) -> dict[str, Any]:
        keepalive_s = self.daemon.config.keepalive_s
        last_sent = trio.current_time()
        while True:
            moved = self._moved  # taken before the ring is looked at: no wake-up is missed
            found = self.ring.after(cursor)
            if found is None:
                sent, moved_on = await self._from_store(call, cursor)
            else:
                chunk, moved_on = found
                sent = bool(chunk)
                if sent:
                    await call.send_item("frames", chunk)
            if sent:
                last_sent = trio.current_time()
            if call.end_reason is not None:
                return {"end": call.end_reason, "last_seq": moved_on}
            if moved_on != cursor:
                cursor = moved_on
                continue
            if self.daemon.stopping:
                call.end("shutdown")
                continue
            idle_for = trio.current_time() - last_sent
            await call.wait(moved.wait, max(0.0, keepalive_s - idle_for))
            if call.end_reason is None and trio.current_time() - last_sent >= keepalive_s:
                await call.send_item("keepalive", True)
                last_sent = trio.current_time()

    async def _from_store(self, call: HttpCall, cursor: int) -> tuple[bool, int]:
        """One read of the store after ``cursor`` (behind the ring), written in pieces.

        Whether anything was written, and the new cursor.
        """
        floor = self.ring.floor
        events = await self.store.read_events(None, cursor, limit=READ_EVENTS)
        if not events:
            # Nothing retained between the cursor and the newest commit: the ring has the rest.
            return False, max(cursor, floor)
        piece: list[bytes] = []
        size = 0
        for n, event in enumerate(events):
            frame = sse_frame(event.gid, event.to_wire())
            piece.append(frame)
            size += len(frame)
            if size >= WRITE_BYTES or n == len(events) - 1:
                await call.send_item("frames", b"".join(piece))
                cursor = event.gid
                piece, size = [], 0
                if call.end_reason is not None:
                    break
        return True, cursor
