"""One mirror batch: the commands of one pipeline, and what Redis said to each (pure).

A batch holds, in this order: consumer-group creation for runs seen for the first
time, two XADDs per event (the run's stream with ID ``<seq>-0``, the global stream
with ID ``<gid>-0``), the meta hash of every run it touches and their index entries.
Every command is idempotent or recognisably repeated, so a batch can be sent again
after any failure: an XADD whose explicit ID is not above the stream's top entry
was accepted before, and a group that exists already is fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from codyd.events import Event
from codyd.mirror.fields import Value, data_json
from codyd.mirror.keys import Keys
from codyd.mirror.resp import pack_command, pack_entry_fields, pack_xadd, xadd_head

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
    events: int = 0

    def add(self, kind: Kind, *args: Value) -> None:
        self.add_packed(kind, (str(args[0]), str(args[1])), pack_command(*args))

    def add_packed(self, kind: Kind, label: tuple[str, str], packed: bytes) -> None:
        self.chunks.append(packed)
        self.kinds.append(kind)
        self.labels.append(label)

    def payload(self) -> bytes:
        return b"".join(self.chunks)

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(frozen=True, slots=True)
class Limits:
    run_maxlen: int
    global_maxlen: int
    groups: tuple[str, ...] = ()


def build_batch(
    keys: Keys,
    limits: Limits,
    events: Sequence[Event],
    metas: Iterable[RunMeta],
    max_bytes: int = MAX_BATCH_BYTES,
) -> Batch:
    """The pipeline for ``events`` (in gid order) and the given run metas.

    Events are taken in order until their data passes ``max_bytes`` (at least one
    is always taken); ``batch.events`` says how many made it in.
    """
    batch = Batch()
    metas = list(metas)
    for meta in metas:
        if meta.first_seen:
            stream = keys.run_events(meta.run_id)
            for group in limits.groups:
                batch.add(Kind.GROUP, "XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
    global_key = keys.events
    global_head = xadd_head(global_key, limits.global_maxlen)
    run_heads: dict[str, tuple[str, bytes]] = {}
    size = 0
    for event in events:
        if batch.events and size >= max_bytes:
            break
        data = data_json(event.data)
        size += len(data) + ENTRY_OVERHEAD_BYTES
        fields = pack_entry_fields(event, data)
        if event.run_id not in run_heads:
            run_key = keys.run_events(event.run_id)
            run_heads[event.run_id] = (run_key, xadd_head(run_key, limits.run_maxlen))
        run_key, run_head = run_heads[event.run_id]
        batch.add_packed(
            Kind.XADD, ("XADD", run_key), pack_xadd(run_head, b"%d-0" % event.seq, fields)
        )
        batch.add_packed(
            Kind.XADD, ("XADD", global_key), pack_xadd(global_head, b"%d-0" % event.gid, fields)
        )
        batch.events += 1
    for meta in metas:
        flat = [item for pair in meta.fields.items() for item in pair]
        batch.add(Kind.OTHER, "HSET", keys.meta(meta.run_id), *flat)
        if meta.first_seen:
            batch.add(Kind.OTHER, "ZADD", keys.runs, meta.created_ms, meta.run_id)
    return batch


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a sent batch did: entries added, and entries Redis had already."""

    added: int
    repeated: int


def read_replies(batch: Batch, replies: Sequence[object]) -> Outcome:
    """Check each reply against its command; raise :class:`BatchRejected` on a real error."""
    if len(replies) != len(batch):
        raise BatchRejected(f"expected {len(batch)} replies to the pipeline, got {len(replies)}")
    added = repeated = 0
    for kind, label, reply in zip(batch.kinds, batch.labels, replies, strict=True):
        if not isinstance(reply, Exception):
            if kind is Kind.XADD:
                added += 1
            continue
        message = str(reply)
        if kind is Kind.XADD and ALREADY_THERE in message:
            repeated += 1
        elif not (kind is Kind.GROUP and message.startswith(GROUP_EXISTS)):
            raise BatchRejected(f"{label[0]} {label[1]}: {message}")
    return Outcome(added, repeated)
