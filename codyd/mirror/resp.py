"""RESP, the Redis wire format: commands packed straight into bytes (pure).

redis-py packs every argument through several layers of Python calls, which is
most of what a pipeline of XADDs costs. A mirror batch holds two XADDs per event
carrying the same fields, so codyd packs them itself, and packs those fields once.
"""

from __future__ import annotations

from codyd.mirror.fields import Value
from codyd.model.events import Event

_ENTRY_FIELDS = (
    b"$3\r\nseq\r\n$%d\r\n%b\r\n"
    b"$3\r\ngid\r\n$%d\r\n%b\r\n"
    b"$6\r\nrun_id\r\n$%d\r\n%b\r\n"
    b"$2\r\nts\r\n$%d\r\n%b\r\n"
    b"$4\r\ntype\r\n$%d\r\n%b\r\n"
    b"$4\r\nturn\r\n$%d\r\n%b\r\n"
    b"$4\r\ndata\r\n$%d\r\n%b\r\n"
)
# XADD key [NOMKSTREAM] MAXLEN ~ N id, then the 7 field/value pairs of an entry.
_XADD_ARGS = 6 + 14


def encode(value: Value) -> bytes:
    """One argument as Redis sees it: bytes as they are, text as UTF-8, integers in decimal."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"%d" % value


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def pack_command(*args: Value) -> bytes:
    """A whole command as one RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(encode(arg)) for arg in args)


def xadd_head(key: str, maxlen: int, *, create: bool = True) -> bytes:
    """The start of every XADD to ``key``: the array header and the arguments up to the ID.

    Without ``create`` the XADD carries ``NOMKSTREAM``: Redis answers nil instead of
    creating a stream that should be there already.
    """
    args: tuple[Value, ...] = ("XADD", key, "MAXLEN", "~", maxlen)
    if not create:
        args = ("XADD", key, "NOMKSTREAM", "MAXLEN", "~", maxlen)
    count = _XADD_ARGS + len(args) - 5
    return b"*%d\r\n" % count + b"".join(bulk(encode(arg)) for arg in args)


def pack_entry_fields(event: Event, data: bytes) -> bytes:
    """The field/value pairs of an event's entry (``fields.event_fields``), packed."""
    seq = b"%d" % event.seq
    gid = b"%d" % event.gid
    run_id = event.run_id.encode()
    ts = b"%d" % int(event.ts * 1000)
    type_ = event.type.encode()
    turn = b"" if event.turn is None else b"%d" % event.turn
    return _ENTRY_FIELDS % (
        *(len(seq), seq, len(gid), gid, len(run_id), run_id, len(ts), ts),
        *(len(type_), type_, len(turn), turn, len(data), data),
    )


def pack_xadd(head: bytes, entry_id: bytes, fields: bytes) -> bytes:
    """One XADD from its head (:func:`xadd_head`), explicit entry ID and packed fields."""
    return b"%b$%d\r\n%b\r\n%b" % (head, len(entry_id), entry_id, fields)
