"""One mirror batch: the commands of one pipeline, and what Redis said to each (pure).

A batch holds, in this order: consumer-group creation for runs seen for the first
time, two XADDs per event (the run's stream with ID ``<seq>-0``, the global stream
with ID ``<gid>-0``), the meta hash of every run it touches and their index entries.
Every command is idempotent or recognisably repeated, so a batch can be sent again
after any failure: an XADD refused because its explicit ID is not above the stream's
last ID is checked against what the stream holds (``repair.classify``), and a group
that exists already is fine.

Only an event's first entry (seq 1, gid 1) may create its stream. Every later XADD
carries ``NOMKSTREAM``: a stream that should exist and does not was lost, and Redis
says so with a nil reply instead of starting it again with a gap.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from codyd.mirror.fields import Value, data_json
from codyd.mirror.keys import Keys
from codyd.mirror.resp import pack_command, pack_entry_fields, pack_xadd, xadd_head
from codyd.model.events import Event

# What Redis answers an XADD whose explicit ID is not above the stream's top entry.
ALREADY_THERE = "equal or smaller than the target stream top item"
GROUP_EXISTS = "BUSYGROUP"
# A pipeline stays below this much event data (one agent may print 1 MiB sentinel lines).
MAX_BATCH_BYTES = 8 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 128


class Kind(Enum):
    XADD = "xadd"
    GROUP = "group"
    OTHER = "other"


class Entry(NamedTuple):
    """One XADD of a batch: its stream, its entry number (seq or gid) and the event."""

    key: str
    number: int
    event: Event
    # The run whose stream this is; None for the global stream.
    run_id: str | None

    @property
    def entry_id(self) -> str:
        return f"{self.number}-0"


class BatchRejected(Exception):
    """Redis refused a command of a batch for a reason other than a repeat."""


@dataclass(frozen=True, slots=True)
class RunMeta:
    """A run's meta hash as of this batch, and whether it is new to this process."""

    run_id: str
    fields: Mapping[str, str]
    created_ms: int
    first_seen: bool
    # The record's updated_at and terminality when the fields were taken.
    updated_at: float | None = None
    terminal: bool = False


@dataclass(slots=True)
class Batch:
    """Packed commands for one pipeline, each with what tells how to read its reply."""

    chunks: list[bytes] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)
    # (command, key) of each command, for error messages.
    labels: list[tuple[str, str]] = field(default_factory=list)
    # The entry of each XADD, None for other commands.
    entries: list[Entry | None] = field(default_factory=list)
    events: int = 0

    def add(self, kind: Kind, *args: Value) -> None:
        self.add_packed(kind, (str(args[0]), str(args[1])), pack_command(*args))

    def add_packed(
        self, kind: Kind, label: tuple[str, str], packed: bytes, entry: Entry | None = None
    ) -> None:
        self.chunks.append(packed)
        self.kinds.append(kind)
        self.labels.append(label)
        self.entries.append(entry)

    def add_xadd(self, head: bytes, entry: Entry, fields: bytes) -> None:
        self.chunks.append(pack_xadd(head, b"%d-0" % entry.number, fields))
        self.kinds.append(Kind.XADD)
        self.labels.append(("XADD", entry.key))
        self.entries.append(entry)

    def payload(self) -> bytes:
        return b"".join(self.chunks)

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(frozen=True, slots=True)
class Limits:
    run_maxlen: int
    global_maxlen: int
    groups: tuple[str, ...] = ()


class Heads:
    """XADD heads, packed once per stream and per creating / not creating."""

    def __init__(self, limits: Limits, global_key: str) -> None:
        self._limits = limits
        self._global_key = global_key
        self._packed: dict[tuple[str, bool], bytes] = {}

    def __call__(self, key: str, create: bool) -> bytes:
        head = self._packed.get((key, create))
        if head is None:
            maxlen = (
                self._limits.global_maxlen if key == self._global_key else self._limits.run_maxlen
            )
            head = self._packed[key, create] = xadd_head(key, maxlen, create=create)
        return head


def add_groups(batch: Batch, stream: str, groups: Iterable[str]) -> None:
    for group in groups:
        batch.add(Kind.GROUP, "XGROUP", "CREATE", stream, group, "0", "MKSTREAM")


def build_batch(
    keys: Keys,
    limits: Limits,
    events: Sequence[Event],
    metas: Iterable[RunMeta],
    max_bytes: int = MAX_BATCH_BYTES,
    held: Container[str] = frozenset(),
) -> Batch:
    """The pipeline for ``events`` (in gid order) and the given run metas.

    Events are taken in order until their data passes ``max_bytes`` (at least one
    is always taken); ``batch.events`` says how many made it in. Streams in ``held``
    get no entries: they are being repaired (``repair.Repairs``).
    """
    batch = Batch()
    metas = list(metas)
    for meta in metas:
        if meta.first_seen:
            add_groups(batch, keys.run_events(meta.run_id), limits.groups)
    global_key = keys.events
    heads = Heads(limits, global_key)
    global_held = global_key in held
    # Per run: its stream's key, whether it is held, and its XADD head (not creating).
    runs: dict[str, tuple[str, bool, bytes]] = {}
    global_head = heads(global_key, False)
    size = 0
    for event in events:
        if batch.events and size >= max_bytes:
            break
        data = data_json(event.data)
        size += len(data) + ENTRY_OVERHEAD_BYTES
        fields = pack_entry_fields(event, data)
        run = runs.get(event.run_id)
        if run is None:
            run_key = keys.run_events(event.run_id)
            run = runs[event.run_id] = (run_key, run_key in held, heads(run_key, False))
        if not run[1]:
            head = run[2] if event.seq != 1 else heads(run[0], True)
            batch.add_xadd(head, Entry(run[0], event.seq, event, event.run_id), fields)
        if not global_held:
            head = global_head if event.gid != 1 else heads(global_key, True)
            batch.add_xadd(head, Entry(global_key, event.gid, event, None), fields)
        batch.events += 1
    for meta in metas:
        flat = [item for pair in meta.fields.items() for item in pair]
        batch.add(Kind.OTHER, "HSET", keys.meta(meta.run_id), *flat)
        if meta.first_seen:
            batch.add(Kind.OTHER, "ZADD", keys.runs, meta.created_ms, meta.run_id)
    return batch


def build_resend(
    keys: Keys,
    limits: Limits,
    key: str,
    run_id: str | None,
    events: Sequence[Event],
    *,
    groups: bool,
) -> Batch:
    """XADDs of ``events`` to the one stream ``key`` (a run's, or the global one if no run).

    These may create the stream: a repair writes into a stream that may be gone. With
    ``groups`` the run's consumer groups are created first.
    """
    batch = Batch()
    if groups:
        add_groups(batch, key, limits.groups)
    head = Heads(limits, keys.events)(key, True)
    for event in events:
        number = event.gid if run_id is None else event.seq
        batch.add_xadd(
            head, Entry(key, number, event, run_id), pack_entry_fields(event, data_json(event.data))
        )
        batch.events += 1
    return batch


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a sent batch did: entries added, refused as not above the stream's last ID,
    and not written because their stream is gone (``NOMKSTREAM``)."""

    added: int
    refused: list[Entry]
    missing: list[Entry]


def read_replies(batch: Batch, replies: Sequence[object]) -> Outcome:
    """Check each reply against its command; raise :class:`BatchRejected` on a real error."""
    if len(replies) != len(batch):
        raise BatchRejected(f"expected {len(batch)} replies to the pipeline, got {len(replies)}")
    added = 0
    refused: list[Entry] = []
    missing: list[Entry] = []
    for kind, label, entry, reply in zip(
        batch.kinds, batch.labels, batch.entries, replies, strict=True
    ):
        if not isinstance(reply, Exception):
            if entry is not None:
                if reply is None:
                    missing.append(entry)
                else:
                    added += 1
            continue
        message = str(reply)
        if entry is not None and ALREADY_THERE in message:
            refused.append(entry)
        elif not (kind is Kind.GROUP and message.startswith(GROUP_EXISTS)):
            raise BatchRejected(f"{label[0]} {label[1]}: {message}")
    return Outcome(added, refused, missing)
