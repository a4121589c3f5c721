"""The Redis mirror's pure parts: key names, entry and meta fields, batches, replies, control entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from codyd.mirror.backoff import Backoff
from codyd.mirror.batch import (
    BatchRejected,
    Entry,
    Kind,
    Limits,
    RunMeta,
    build_batch,
    build_resend,
    read_replies,
)
from codyd.mirror.control import ControlRequest, InvalidControl, parse_control
from codyd.mirror.fields import (
    data_json,
    event_fields,
    hash_text,
    heartbeat_fields,
    meta_fields,
    unix_ms,
)
from codyd.mirror.keys import Keys
from codyd.mirror.repair import Hold, Repairs, StreamInfo, is_ours, resume_after, stream_info
from codyd.mirror.resp import pack_command, pack_entry_fields, pack_xadd, xadd_head
from codyd.model.events import Event
from codyd.model.record import RunRecord
from codyd.model.state import State
from codyd.spec import parse_run_spec

KEYS = Keys("p:")
LIMITS = Limits(run_maxlen=10, global_maxlen=100, groups=("g1", "g2"))
DUPLICATE = "The ID specified in XADD is equal or smaller than the target stream top item"


def event(gid: int, seq: int, run_id: str = "r1", **data: Any) -> Event:
    return Event(gid, run_id, seq, 1700000000.1239, "custom", 2, data)


def meta(run_id: str = "r1", first_seen: bool = True) -> RunMeta:
    return RunMeta(run_id, {"state": "running"}, 1700000000123, first_seen)


def redis_py_packed(*commands: tuple[Any, ...]) -> bytes:
    """The commands as redis-py itself would put them on the wire: the oracle for our packing."""
    packer = Connection()  # type: ignore[no-untyped-call]
    packed = (packer.pack_command(*args) for args in commands)  # type: ignore[no-untyped-call]
    return b"".join(b"".join(chunks) for chunks in packed)


# -- keys and fields ---------------------------------------------------------------------------


def test_keys_follow_the_prefix() -> None:
    """Every key name of docs/redis.md "Keys" starts with the configured prefix."""
    assert KEYS.events == "p:events"
    assert KEYS.runs == "p:runs"
    assert KEYS.run_events("a") == "p:run:a:events"
    assert KEYS.meta("a") == "p:run:a:meta"
    assert KEYS.ctl("a") == "p:run:a:ctl"
    assert KEYS.daemon("n1") == "p:daemon:n1"


def test_times_are_integer_milliseconds() -> None:
    """Float unix seconds become integer milliseconds, truncated; None stays None."""
    assert unix_ms(1700000000.1239) == 1700000000123
    assert unix_ms(None) is None


def test_hash_text_renders_absent_values_and_booleans() -> None:
    """None is empty, booleans are true/false, numbers are decimal text."""
    assert [hash_text(None), hash_text(True), hash_text(False), hash_text(3), hash_text(0.25)] == [
        "",
        "true",
        "false",
        "3",
        "0.25",
    ]


def test_event_fields_in_spec_order() -> None:
    """An entry carries seq, gid, run_id, ts (ms), type, turn and compact JSON data, in that order."""
    fields = event_fields(event(7, 3, msg="hé", items=[1, 2]))
    assert fields == [
        *("seq", 3, "gid", 7, "run_id", "r1", "ts", 1700000000123),
        *("type", "custom", "turn", 2),
        *("data", '{"msg":"hé","items":[1,2]}'.encode()),
    ]


def test_event_without_turn_has_empty_turn() -> None:
    """A null turn is written as an empty string."""
    fields = event_fields(Event(1, "r1", 1, 1.0, "run_queued", None, {}))
    assert fields[fields.index("turn") + 1] == ""


def test_data_that_is_not_utf8_is_escaped() -> None:
    """A lone surrogate cannot be UTF-8: the data falls back to ASCII JSON escapes, still valid JSON."""
    data = {"text": "bad \udcff byte"}
    encoded = data_json(data)
    assert json.loads(encoded) == data
    assert encoded.isascii()


def test_bytes_in_data_become_text() -> None:
    """Bytes in event data (never expected) are decoded with replacement rather than failing the batch."""
    assert json.loads(data_json({"raw": b"ok\xff"})) == {"raw": "ok\ufffd"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_data_json_round_trips(data: dict[str, Any]) -> None:
    """Whatever JSON-shaped data an event holds, its ``data`` field parses back to it."""
    assert json.loads(data_json(data)) == data


def make_record(tmp_path: Path) -> RunRecord:
    spec = parse_run_spec(
        {
            "workspace": str(tmp_path),
            "prompt": "x",
            "command": ["true"],
            "run_id": "m1",
            "name": "n",
        }
    )
    return RunRecord(spec=spec, node="node-a", created_at=1700000000.5)


def test_meta_of_a_fresh_run(tmp_path: Path) -> None:
    """A queued run's meta: camelCase keys, empty strings for what is absent, false for booleans."""
    fields = meta_fields(make_record(tmp_path).summary())
    assert fields == {
        "runId": "m1",
        "name": "n",
        "state": "queued",
        "phase": "idle",
        "workspace": str(tmp_path.resolve()),
        "agent": "command",
        "pid": "",
        "currentTurn": "0",
        "sessionId": "",
        "stats.turns": "0",
        "stats.tokens": "0",
        "stats.tokens.input": "0",
        "stats.tokens.output": "0",
        "stats.tokens.cached": "0",
        "stats.costUsd": "0.0",
        "completion.detected": "false",
        "completion.reason": "",
        "completion.line": "",
        "error.code": "",
        "error.message": "",
        "error.retryable": "",
        "wait.reason": "",
        "wait.until": "",
        "wait.account": "",
        "attention.reason": "",
        "attention.message": "",
        "createdAt": "1700000000500",
        "startedAt": "",
        "updatedAt": "",
        "finishedAt": "",
        "lastActivity": "",
        "node": "node-a",
        "lastSeq": "0",
    }


def test_meta_of_a_failed_run(tmp_path: Path) -> None:
    """Totals, error fields and times of a finished run are flattened as docs/redis.md "Run meta" lists them."""
    record = make_record(tmp_path)
    record.state = State.FAILED
    record.stats.tokens.input, record.stats.tokens.output, record.stats.tokens.cached = 100, 20, 50
    record.stats.cost_usd = 0.25
    record.error = {"code": "stalled", "message": "no output", "retryable": True}
    record.finished_at = 1700000009.0
    record.completion_detected = True
    record.completion_reason = "pattern"
    record.completion_line = "DONE"
    fields = meta_fields(record.summary())
    assert fields["state"] == "failed"
    assert fields["stats.tokens"] == "120"
    assert (fields["stats.tokens.input"], fields["stats.tokens.cached"]) == ("100", "50")
    assert fields["stats.costUsd"] == "0.25"
    assert (fields["error.code"], fields["error.message"]) == ("stalled", "no output")
    assert fields["error.retryable"] == "true"
    assert fields["finishedAt"] == "1700000009000"

    assert fields["completion.detected"] == "true"
    assert (fields["completion.reason"], fields["completion.line"]) == ("pattern", "DONE")


def test_meta_of_a_waiting_run(tmp_path: Path) -> None:
    """A waiting run's wait and the attention it asked for are in the meta (docs/redis.md)."""
    record = make_record(tmp_path)
    record.wait = {"reason": "rate_limited", "until": 1700000300.5, "account": "claude"}
    record.attention = {"reason": "needs_auth", "message": "log in", "at": 1700000001.0}
    fields = meta_fields(record.summary())
    assert (fields["wait.reason"], fields["wait.account"]) == ("rate_limited", "claude")
    assert fields["wait.until"] == "1700000300500"
    assert (fields["attention.reason"], fields["attention.message"]) == ("needs_auth", "log in")


def test_heartbeat_fields() -> None:
    """The heartbeat hash holds pid, version, startedAt and ts in ms, and the active run count."""
    assert heartbeat_fields(42, "1.2.3", 1700000000.0, 1700000005.5, 3) == {
        "pid": "42",
        "version": "1.2.3",
        "startedAt": "1700000000000",
        "ts": "1700000005500",
        "activeRuns": "3",
    }


# -- batches ------------------------------------------------------------------------------------


def test_batch_commands_for_a_new_run() -> None:
    """Groups first, then two XADDs per event with explicit IDs and MAXLEN ~, then meta and index.

    Only a stream's first entry (seq 1, gid 1) may create it: the others carry NOMKSTREAM.
    """
    events = [event(5, 1), event(6, 2)]
    batch = build_batch(KEYS, LIMITS, events, [meta()])
    fields = [event_fields(e) for e in events]
    assert batch.payload() == redis_py_packed(
        ("XGROUP", "CREATE", "p:run:r1:events", "g1", "0", "MKSTREAM"),
        ("XGROUP", "CREATE", "p:run:r1:events", "g2", "0", "MKSTREAM"),
        ("XADD", "p:run:r1:events", "MAXLEN", "~", 10, "1-0", *fields[0]),
        ("XADD", "p:events", "NOMKSTREAM", "MAXLEN", "~", 100, "5-0", *fields[0]),
        ("XADD", "p:run:r1:events", "NOMKSTREAM", "MAXLEN", "~", 10, "2-0", *fields[1]),
        ("XADD", "p:events", "NOMKSTREAM", "MAXLEN", "~", 100, "6-0", *fields[1]),
        ("HSET", "p:run:r1:meta", "state", "running"),
        ("ZADD", "p:runs", 1700000000123, "r1"),
    )
    assert batch.kinds == [Kind.GROUP] * 2 + [Kind.XADD] * 4 + [Kind.OTHER] * 2
    assert len(batch) == 8 and batch.events == 2


def test_batch_for_a_known_run_only_sets_meta() -> None:
    """A run this process has indexed already gets no group creation and no ZADD."""
    batch = build_batch(KEYS, LIMITS, [], [meta(first_seen=False)])
    assert batch.payload() == redis_py_packed(("HSET", "p:run:r1:meta", "state", "running"))


def test_batch_stops_at_its_byte_budget() -> None:
    """Events are taken in order until their data passes the budget; at least one always goes."""
    events = [event(gid, gid, blob="x" * 1000) for gid in range(1, 6)]
    assert build_batch(KEYS, LIMITS, events, [], max_bytes=2500).events == 3
    assert build_batch(KEYS, LIMITS, events, [], max_bytes=1).events == 1


def test_pack_command_matches_redis_py() -> None:
    """Our generic packing is byte for byte what redis-py sends."""
    args = ("HSET", "k", "f", "hé", "n", 42, "b", b"\x00\xff")
    assert pack_command(*args) == redis_py_packed(args)


events_strategy = st.builds(
    Event,
    gid=st.integers(1, 2**53),
    run_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    seq=st.integers(1, 2**53),
    ts=st.floats(0, 4e9),
    type=st.sampled_from(["custom", "run_queued", "subprocess_output"]),
    turn=st.none() | st.integers(0, 10_000),
    data=st.dictionaries(st.text(), json_values, max_size=4),
)


@given(events_strategy)
def test_packed_xadd_matches_redis_py(ev: Event) -> None:
    """The fast XADD packing equals redis-py's packing of the entry's field list."""
    data = data_json(ev.data)
    packed = pack_xadd(xadd_head("p:events", 7), b"%d-0" % ev.gid, pack_entry_fields(ev, data))
    expected = ("XADD", "p:events", "MAXLEN", "~", 7, f"{ev.gid}-0", *event_fields(ev))
    assert packed == redis_py_packed(expected)


def test_replies_sort_added_refused_and_missing_entries() -> None:
    """A refused XADD is handed on for checking, a nil one (NOMKSTREAM) means its stream is gone."""
    batch = build_batch(KEYS, LIMITS, [event(5, 1), event(6, 2)], [meta()])
    replies: list[object] = [
        Exception("BUSYGROUP Consumer Group name already exists"),
        b"OK",
        Exception(DUPLICATE),
        Exception(DUPLICATE),
        b"2-0",
        None,
        1,
        1,
    ]
    outcome = read_replies(batch, replies)
    assert outcome.added == 1
    assert [(e.key, e.entry_id, e.run_id) for e in outcome.refused] == [
        ("p:run:r1:events", "1-0", "r1"),
        ("p:events", "5-0", None),
    ]
    assert [(e.key, e.entry_id) for e in outcome.missing] == [("p:events", "6-0")]


def test_held_streams_get_no_entries() -> None:
    """A stream under repair is left out of the batch; the other stream of each event is not."""
    batch = build_batch(KEYS, LIMITS, [event(5, 1)], [], held={"p:run:r1:events"})
    assert batch.labels == [("XADD", "p:events")] and batch.events == 1


def test_a_resend_writes_one_stream_and_may_create_it() -> None:
    """A repair re-sends to one stream, creating it (and its groups) if it is gone."""
    events = [event(7, 3), event(9, 4)]
    batch = build_resend(KEYS, LIMITS, "p:run:r1:events", "r1", events, groups=True)
    fields = [event_fields(e) for e in events]
    assert batch.payload() == redis_py_packed(
        ("XGROUP", "CREATE", "p:run:r1:events", "g1", "0", "MKSTREAM"),
        ("XGROUP", "CREATE", "p:run:r1:events", "g2", "0", "MKSTREAM"),
        ("XADD", "p:run:r1:events", "MAXLEN", "~", 10, "3-0", *fields[0]),
        ("XADD", "p:run:r1:events", "MAXLEN", "~", 10, "4-0", *fields[1]),
    )
    glob = build_resend(KEYS, LIMITS, "p:events", None, events, groups=False)
    assert [e.entry_id for e in glob.entries if e] == ["7-0", "9-0"]


def test_any_other_error_rejects_the_batch() -> None:
    """An error that is not a repeat fails the whole batch, naming the command and key."""
    batch = build_batch(KEYS, LIMITS, [event(5, 1)], [])
    wrongtype = Exception("WRONGTYPE Operation against a key holding the wrong kind of value")
    with pytest.raises(BatchRejected, match="XADD p:run:r1:events: WRONGTYPE"):
        read_replies(batch, [wrongtype, b"5-0"])


def test_a_repeat_is_only_recognised_on_xadd() -> None:
    """BUSYGROUP on anything but group creation is an error."""
    batch = build_batch(KEYS, LIMITS, [], [meta(first_seen=False)])
    with pytest.raises(BatchRejected, match="HSET"):
        read_replies(batch, [Exception("BUSYGROUP odd")])


def test_missing_replies_reject_the_batch() -> None:
    """Fewer replies than commands is never taken as success."""
    batch = build_batch(KEYS, LIMITS, [event(5, 1)], [])
    with pytest.raises(BatchRejected, match="expected 2 replies"):
        read_replies(batch, [b"1-0"])


def test_xadd_without_create_matches_redis_py() -> None:
    """NOMKSTREAM goes right after the key, and the array length counts it."""
    ev = event(3, 2)
    packed = pack_xadd(
        xadd_head("p:events", 7, create=False), b"3-0", pack_entry_fields(ev, data_json(ev.data))
    )
    expected = ("XADD", "p:events", "NOMKSTREAM", "MAXLEN", "~", 7, "3-0", *event_fields(ev))
    assert packed == redis_py_packed(expected)


# -- telling our entries from foreign ones --------------------------------------------------------


def our_entry(ev: Event) -> list[Any]:
    flat = [
        value if isinstance(value, bytes) else str(value).encode() for value in event_fields(ev)
    ]
    return [(f"{ev.seq}-0".encode(), dict(zip(flat[::2], flat[1::2], strict=True)))]


def test_a_refused_entry_that_is_ours_is_a_repeat() -> None:
    """The entry at our ID holds exactly our fields: sent before."""
    ev = event(7, 3)
    entry = Entry("p:run:r1:events", 3, ev, "r1")
    info = StreamInfo(last=(5, 0), first=(1, 0))
    assert is_ours(entry, our_entry(ev), info, bound=5)


def test_an_entry_of_another_event_at_our_id_is_foreign() -> None:
    """Same ID, another event (another writer): not ours. Other data text alone is still ours."""
    entry = Entry("p:run:r1:events", 3, event(7, 3), "r1")
    info = StreamInfo(last=(3, 0), first=(1, 0))
    assert not is_ours(entry, our_entry(event(8, 3)), info, bound=5)
    assert not is_ours(entry, [(b"3-0", {b"by": b"someone"})], info, bound=5)
    assert is_ours(entry, our_entry(event(7, 3, note="written by an older codyd")), info, bound=5)


def test_an_absent_entry_is_ours_only_if_trimmed_below_a_last_id_we_gave_out() -> None:
    """No entry at our ID: trimmed (the stream starts above it) and the last ID is one of ours."""
    entry = Entry("p:run:r1:events", 3, event(7, 3), "r1")
    assert is_ours(entry, [], StreamInfo(last=(9, 0), first=(6, 0)), bound=9)
    assert not is_ours(entry, [], StreamInfo(last=(999999, 0), first=(6, 0)), bound=9)
    assert not is_ours(entry, [], StreamInfo(last=(9, 0), first=(1, 0)), bound=9)
    assert not is_ours(entry, [], StreamInfo(last=(9, 1), first=(6, 0)), bound=9)
    assert not is_ours(entry, [], None, bound=9)


def test_a_held_stream_resumes_once_its_last_id_is_ours_again() -> None:
    """A conflict ends when the last ID is back at or below what codyd wrote; a gone stream at once."""
    conflict = Hold("p:run:r1:events", "r1", "foreign", ours_upto=10)
    assert resume_after(conflict, StreamInfo(last=(999999, 0), first=(1, 0)), bound=20) is None
    assert resume_after(conflict, StreamInfo(last=(10, 0), first=(1, 0)), bound=20) == 10
    assert resume_after(conflict, StreamInfo(last=(4, 0), first=(1, 0)), bound=20) == 4
    assert resume_after(conflict, None, bound=20) == 0
    rebuild = Hold("p:run:r1:events", "r1", "rebuild")
    assert resume_after(rebuild, StreamInfo(last=(20, 0), first=(1, 0)), bound=20) == 20
    assert resume_after(rebuild, StreamInfo(last=(21, 0), first=(1, 0)), bound=20) is None
    assert resume_after(rebuild, StreamInfo(last=(0, 0), first=None), bound=20) == 0


def test_stream_info_reads_redis_py_answers() -> None:
    """XINFO STREAM as redis-py parses it; a missing key is None, any other error is raised."""
    reply = {"last-generated-id": b"12-0", "first-entry": (b"3-0", {b"seq": b"3"})}
    assert stream_info(reply) == StreamInfo(last=(12, 0), first=(3, 0))
    assert stream_info({"last-generated-id": b"0-0", "first-entry": None}) == StreamInfo(
        (0, 0), None
    )
    assert stream_info(Exception("ERR no such key")) is None
    with pytest.raises(Exception, match="WRONGTYPE"):
        stream_info(Exception("WRONGTYPE Operation against a key"))


def test_holds_round_trip_through_the_store_text() -> None:
    """What is saved in ``mirror.holds`` loads back as the same holds."""
    repairs = Repairs.__new__(Repairs)
    repairs.holds = {
        "p:events": Hold("p:events", None, "rebuild"),
        "p:run:a:events": Hold("p:run:a:events", "a", "foreign", ours_upto=4, found="999999-0"),
    }
    text = repairs.dump()
    again = Repairs.__new__(Repairs)
    again.load(text)
    assert again.holds == repairs.holds


# -- control entries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"action": "pause"}, ControlRequest("pause")),
        ({b"action": b"pause", b"now": b"true"}, ControlRequest("pause", None, True)),
        ({"action": "pause", "now": "1", "reason": "r"}, ControlRequest("pause", "r", True)),
        ({"action": "pause", "now": "0"}, ControlRequest("pause", None, False)),
        ({"action": "pause", "now": "false"}, ControlRequest("pause", None, False)),
        ({"action": "resume"}, ControlRequest("resume")),
        ({"action": "resume", "reason": "", "now": ""}, ControlRequest("resume")),
        ({"action": "cancel", "reason": "enough"}, ControlRequest("cancel", "enough")),
        ({"action": "cancel", "reason": ""}, ControlRequest("cancel", None)),
        ({"action": "cancel", "reason": "r" * 1000}, ControlRequest("cancel", "r" * 1000)),
    ],
)
def test_valid_control_entries(fields: dict[Any, Any], expected: ControlRequest) -> None:
    """Valid entries (bytes or text) become requests; empty optional fields count as absent."""
    assert parse_control(fields) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "action: missing"),
        ({"action": "stop"}, "action: expected pause, resume or cancel, got 'stop'"),
        ({"action": "PAUSE"}, "action: expected pause, resume or cancel"),
        ({"action": "pause", "now": "yes"}, "now: expected true, false, 1, 0 or empty, got 'yes'"),
        ({"action": "cancel", "now": "true"}, "now: not accepted with action cancel"),
        ({"action": "resume", "reason": "why"}, "reason: not accepted with action resume"),
        ({"action": "pause", "reason": "r" * 1001}, "reason: expected at most 1000 characters"),
        ({"action": "pause", "by": "me"}, "by: unknown field"),
        ({b"action": b"pause", b"reason": b"\xff"}, "must be UTF-8 text"),
    ],
)
def test_invalid_control_entries(fields: dict[Any, Any], message: str) -> None:
    """Invalid entries are refused with a message naming the field and what was expected."""
    with pytest.raises(InvalidControl, match=message.replace("(", r"\(")):
        parse_control(fields)


def test_long_values_are_shortened_in_messages() -> None:
    """A huge bad value does not end up whole in the warning event."""
    with pytest.raises(InvalidControl) as caught:
        parse_control({"action": "x" * 5000})
    assert len(str(caught.value)) < 200


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    """Retries wait 0.1 s, doubling, never more than 5 s; a success starts over."""
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)
