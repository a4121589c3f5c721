"""Streams the mirror cannot simply append to: foreign entries, and streams Redis lost.

The mirror writes each stream with explicit, increasing IDs, so Redis refuses an XADD
whose ID is not above the stream's last ID. That refusal has two causes:

* **our own entry, sent again** (a batch retried after a lost reply, or re-sent after a
  crash before the cursor was saved): the entry at that ID is the same event (its seq,
  gid, run_id and type), or it was trimmed away and the stream's last ID is one codyd could have
  written. Counted and passed over, as before.
* **a foreign entry**: something else wrote an ID at or above ours (``XADD … 999999-0``,
  an ``XADD … *`` timestamp ID, another daemon on the same prefix). Writing on would
  swallow every later event, so the stream is **held**: it gets no entries while the
  rest of the mirror goes on, ``daemon.info.mirror.last_error`` names it, and the log
  says so once with the key and the IDs. Once a second its last ID is read again; when
  it is back at or below what codyd wrote (an operator deleted the key, or ``XDEL`` and
  ``XSETID`` it back), the held events are written from the store, in order, and the
  hold ends.

A stream that is gone (``NOMKSTREAM`` answered nil), or every stream when the holds
saved in the store cannot be read, is held the same way, and its events are re-sent
from the store, from whatever the stream still has (all of them, for a stream that is
gone).

Holds are kept in the store (``kv`` key ``mirror.holds``) no later than the cursor moves
past their events, so a restart resumes every repair.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from codyd.mirror.batch import Entry, Limits, build_resend, read_replies
from codyd.mirror.fields import event_fields
from codyd.mirror.keys import Keys
from codyd.mirror.redis_io import RedisLink
from codyd.mirror.resp import encode
from codyd.store import Store

log = structlog.get_logger("codyd.mirror")

HOLDS_KEY = "mirror.holds"
# A stream in conflict is looked at again this often.
CONFLICT_RETRY_S = 1.0
# Events re-sent per repair step, and steps per mirror cycle: repairs share the connection.
RESEND_EVENTS = 1000
STEPS_PER_CYCLE = 8

StreamId = tuple[int, int]


def parse_id(raw: Any) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def shown(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What decides whether a stream can take our next entry: its last and first IDs."""

    last: StreamId
    first: StreamId | None


def stream_info(reply: Any) -> StreamInfo | None:
    """Parse redis-py's ``XINFO STREAM`` answer; None for a stream that does not exist."""
    if isinstance(reply, Exception):
        if "no such key" in str(reply).lower():
            return None
        raise reply
    first = reply.get("first-entry")
    return StreamInfo(
        last=parse_id(reply["last-generated-id"]),
        first=None if not first else parse_id(first[0]),
    )


# What makes an entry a given event of codyd's. Not ``data`` nor ``ts``: their text may
# differ between codyd versions, and a re-send after an upgrade is still a re-send.
IDENTITY = (b"seq", b"gid", b"run_id", b"type")


def identity(entry: Entry) -> dict[bytes, bytes]:
    flat = [encode(value) for value in event_fields(entry.event, b"")]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return {name: fields[name] for name in IDENTITY}


def is_ours(entry: Entry, found: Any, info: StreamInfo | None, bound: int) -> bool:
    """Whether a refused XADD was refused because our own entry is there (or was, trimmed).

    ``found`` is ``XRANGE key id id``; ``bound`` the highest number codyd has given out
    for that stream (the run's last seq, or the newest committed gid).
    """
    if isinstance(found, Exception):
        raise found
    if found:
        fields = {encode(name): encode(value) for name, value in found[0][1].items()}
        return {name: fields.get(name) for name in IDENTITY} == identity(entry)
    if info is None:
        return False
    trimmed = info.first is None or info.first > (entry.number, 0)
    return trimmed and info.last[1] == 0 and info.last[0] <= bound


@dataclass(slots=True)
class Hold:
    """A stream the mirror does not append to until it is repaired."""

    key: str
    run_id: str | None
    # "foreign": in conflict; "missing": gone from Redis; "rebuild": the saved holds were
    # unreadable; "repairing": a conflict that was fixed, being refilled.
    reason: str
    # For a conflict: entries up to this number are ours, what is above is not.
    # None: any last ID codyd could have written is taken as ours.
    ours_upto: int | None = None
    found: str = ""
    # The oldest gid that may still be missing from the stream (1: not known yet).
    from_gid: int = 1
    next_try: float = 0.0

    def describe(self) -> str:
        return (
            f"{self.key}: holds entry {self.found}, which codyd did not write; "
            f"its events from {(self.ours_upto or 0) + 1} are held until it is fixed"
        )

    def dump(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "run_id": self.run_id,
            "reason": self.reason,
            "ours_upto": self.ours_upto,
            "found": self.found,
            "from_gid": self.from_gid,
        }

    @classmethod
    def load(cls, item: dict[str, Any]) -> Hold:
        return cls(
            key=str(item["key"]),
            run_id=None if item["run_id"] is None else str(item["run_id"]),
            reason=str(item["reason"]),
            ours_upto=None if item["ours_upto"] is None else int(item["ours_upto"]),
            found=str(item.get("found", "")),
            from_gid=int(item.get("from_gid", 1)),
        )


def resume_after(hold: Hold, info: StreamInfo | None, bound: int) -> int | None:
    """The number after which the held stream takes entries again; None while in conflict."""
    if info is None:
        return 0
    if hold.ours_upto is not None:
        return info.last[0] if info.last <= (hold.ours_upto, 0) else None
    return info.last[0] if info.last[1] == 0 and info.last[0] <= bound else None


class Repairs:
    """The held streams of one mirror, and the work that ends each hold."""

    def __init__(self, store: Store, link: RedisLink, keys: Keys, limits: Limits) -> None:
        self._store = store
        self._link = link
        self._keys = keys
        self._limits = limits
        self.holds: dict[str, Hold] = {}
        # The holds changed since they were last queued for the store.
        self.dirty = False

    # -- state -------------------------------------------------------------------------------------

    def held(self) -> set[str]:
        return set(self.holds)

    def repairing(self) -> bool:
        """Whether a held stream is being refilled (not waiting for a conflict to be fixed)."""
        return any(hold.reason != "foreign" for hold in self.holds.values())

    def oldest_missing_gid(self) -> int | None:
        """The oldest gid a held stream may still lack; None without holds."""
        return min((hold.from_gid for hold in self.holds.values()), default=None)

    def conflict(self) -> str | None:
        """One line naming the streams in conflict, for ``last_error``; None if there are none."""
        conflicts = [hold.describe() for hold in self.holds.values() if hold.reason == "foreign"]
        if not conflicts:
            return None
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        return f"foreign entries in redis: {conflicts[0]}{more}"

    def load(self, text: str | None) -> None:
        self.holds = {}
        for item in json.loads(text or "[]"):
            hold = Hold.load(item)
            self.holds[hold.key] = hold

    def dump(self) -> str:
        self.dirty = False
        return json.dumps([hold.dump() for hold in self.holds.values()], separators=(",", ":"))

    def bound(self, run_id: str | None) -> int:
        if run_id is None:
            return self._store.committed_gid
        record = self._store.runs.get(run_id)
        return 0 if record is None else record.last_seq

    def hold(self, key: str, run_id: str | None, reason: str) -> None:
        """Hold a stream for a repair (``missing`` or ``rebuild``), unless it is held already."""
        if key not in self.holds:
            self.holds[key] = Hold(key, run_id, reason)
            self.dirty = True

    def release(self, key: str) -> None:
        """The stream is gone for good (its run forgotten): nothing left to repair."""
        if self.holds.pop(key, None) is not None:
            self.dirty = True

    def rebuild(self, run_ids: Sequence[str]) -> None:
        """Every stream is checked and refilled from the store (the saved holds are lost)."""
        self.hold(self._keys.events, None, "rebuild")
        for run_id in run_ids:
            self.hold(self._keys.run_events(run_id), run_id, "rebuild")

    # -- refused entries ---------------------------------------------------------------------------

    async def check(self, refused: Sequence[Entry]) -> int:
        """Sort refused XADDs into repeats (their count is returned) and conflicts (held)."""
        keys = list(dict.fromkeys(entry.key for entry in refused))

        def look(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for entry in refused:
                pipe.xrange(entry.key, entry.entry_id, entry.entry_id)
            for key in keys:
                pipe.xinfo_stream(key)
            return list(pipe.execute(raise_on_error=False))

        replies = await self._link.execute(look)
        infos = {
            key: stream_info(reply)
            for key, reply in zip(keys, replies[len(refused) :], strict=True)
        }
        repeats = 0
        for entry, found in zip(refused, replies[: len(refused)], strict=True):
            info = infos[entry.key]
            if entry.key in self.holds and self.holds[entry.key].reason == "foreign":
                continue  # the rest of a stream already found in conflict in this batch
            if is_ours(entry, found, info, self.bound(entry.run_id)):
                repeats += 1
                continue
            at = parse_id(found[0][0]) if found else (info.last if info else (0, 0))
            self._conflict(entry, shown(at))
        return repeats

    def _conflict(self, entry: Entry, found: str) -> None:
        hold = Hold(
            entry.key,
            entry.run_id,
            "foreign",
            ours_upto=entry.number - 1,
            found=found,
            from_gid=min(entry.event.gid, self.holds[entry.key].from_gid)
            if entry.key in self.holds
            else entry.event.gid,
        )
        self.holds[entry.key] = hold
        self.dirty = True
        log.warning(
            "mirror found an entry in redis it did not write; holding the stream",
            key=entry.key,
            entry_id=entry.entry_id,
            found=found,
        )

    # -- repair ------------------------------------------------------------------------------------

    async def step(self, cursor: int, now: float) -> bool:
        """Work on the held streams that are due; True if anything was written or released."""
        progressed = False
        budget = STEPS_PER_CYCLE
        for hold in list(self.holds.values()):
            if budget <= 0:
                break
            if hold.next_try > now:
                continue
            budget -= 1
            if await self._repair(hold, cursor, now):
                progressed = True
        return progressed

    async def _repair(self, hold: Hold, cursor: int, now: float) -> bool:
        if hold.run_id is not None and hold.run_id not in self._store.runs:
            return self._release(hold, "its run is no longer in the store")
        reply = await self._link.execute(lambda client: _xinfo(client, hold.key))
        info = stream_info(reply)
        after = resume_after(hold, info, self.bound(hold.run_id))
        if after is None:
            self._still_in_conflict(hold, info, now)
            return False
        if hold.reason == "foreign":
            log.info("mirror stream conflict resolved; writing its held events", key=hold.key)
            hold.reason = "repairing"
            self.dirty = True
        hold.ours_upto = None
        found = await self._store.read_events(hold.run_id, after, limit=RESEND_EVENTS)
        events = [event for event in found if event.gid <= cursor]
        if not events:
            return self._release(hold, "repaired")
        hold.from_gid = events[0].gid
        batch = build_resend(
            self._keys,
            self._limits,
            hold.key,
            hold.run_id,
            events,
            groups=info is None and hold.run_id is not None,
        )
        outcome = read_replies(
            batch, await self._link.pipeline(lambda: (batch.payload(), len(batch)))
        )
        if outcome.refused:
            await self.check(outcome.refused)
        if hold.key in self.holds and self.holds[hold.key] is hold:
            hold.from_gid = events[-1].gid + 1
        log.debug("mirror re-sent held events", key=hold.key, entries=outcome.added)
        return True

    def _still_in_conflict(self, hold: Hold, info: StreamInfo | None, now: float) -> None:
        hold.next_try = now + CONFLICT_RETRY_S
        if hold.reason != "foreign":
            # A stream to rebuild whose last ID codyd cannot have written: a conflict.
            hold.reason = "foreign"
            hold.found = shown(info.last) if info else ""
            self.dirty = True
            log.warning(
                "mirror found an entry in redis it did not write; holding the stream",
                key=hold.key,
                found=hold.found,
                held_from=f"{(hold.ours_upto or 0) + 1}-0",
            )

    def _release(self, hold: Hold, why: str) -> bool:
        del self.holds[hold.key]
        self.dirty = True
        # A rebuild holds every stream; most have nothing to re-send, not worth a line each.
        level = log.debug if hold.reason == "rebuild" else log.info
        level("mirror stream repaired", key=hold.key, reason=hold.reason, result=why)
        return True


def _xinfo(client: Any, key: str) -> Any:
    pipe = client.pipeline(transaction=False)
    pipe.xinfo_stream(key)
    return pipe.execute(raise_on_error=False)[0]
