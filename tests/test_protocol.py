"""The wire codec: framing, body decoding, request envelopes and error payloads."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codyd.errors import (
    ERROR_CLASSES,
    BadRequest,
    CodydError,
    Conflict,
    FrameTooLarge,
    Internal,
    InvalidParams,
    InvalidState,
    NotFound,
    Overloaded,
    ShuttingDown,
    Trimmed,
    Unauthorized,
    UnknownMethod,
    error_from_wire,
)
from codyd.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_REQUEST_ID,
    Encoded,
    FrameDecoder,
    Request,
    error_response,
    pack,
    parse_request,
    result_response,
    unpack_body,
)

SAMPLE: dict[str, Any] = {
    "id": 7,
    "method": "run.events",
    "params": {"run_id": "r-1", "after": 0, "types": ["a", "b"], "blob": b"\x00\xff", "x": None},
}


def frame_of_body(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# -- framing -------------------------------------------------------------------------------


def test_pack_then_decode_round_trips() -> None:
    """A packed message comes out of the decoder equal, bytes staying bytes."""
    decoder = FrameDecoder()
    assert decoder.feed(pack(SAMPLE)) == [SAMPLE]
    assert decoder.pending_bytes == 0


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(
    items=st.lists(_VALUES, max_size=20),
    cursor=st.none() | st.text(),
    request_id=st.integers(0, MAX_REQUEST_ID),
)
@settings(max_examples=200, deadline=None)
def test_encoded_results_frame_like_plain_ones(
    items: list[Any], cursor: str | None, request_id: int
) -> None:
    """A result spliced from pre-encoded parts is the very frame plain packing makes."""
    plain = {"id": request_id, "result": {"runs": items, "cursor": cursor}}
    runs = Encoded.array([msgpack.packb(item, use_bin_type=True) for item in items])
    spliced = {"id": request_id, "result": Encoded.map({"runs": runs, "cursor": cursor})}
    assert pack(spliced) == pack(plain)


def test_pack_header_is_big_endian_body_length() -> None:
    """The header is the 4-byte big-endian length of the msgpack body."""
    frame = pack({"a": 1})
    body = msgpack.packb({"a": 1}, use_bin_type=True)
    assert frame == struct.pack(">I", len(body)) + body


def test_frame_split_at_every_byte_boundary() -> None:
    """A frame cut in two at any point decodes once, only after its last byte."""
    frame = pack(SAMPLE)
    for cut in range(len(frame) + 1):
        decoder = FrameDecoder()
        first = decoder.feed(frame[:cut])
        second = decoder.feed(frame[cut:])
        if cut < len(frame):
            assert first == []
            assert second == [SAMPLE]
        else:
            assert first == [SAMPLE]
            assert second == []
        assert decoder.pending_bytes == 0


def test_frame_fed_byte_by_byte() -> None:
    """Feeding one byte at a time yields the message exactly once, at the end."""
    frame = pack(SAMPLE)
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    for index in range(len(frame)):
        got = decoder.feed(frame[index : index + 1])
        if index < len(frame) - 1:
            assert got == []
        out.extend(got)
    assert out == [SAMPLE]


def test_several_frames_in_one_feed() -> None:
    """Several frames and the start of another in one chunk: whole ones out, rest kept."""
    messages = [{"id": n, "method": "daemon.ping"} for n in range(5)]
    data = b"".join(pack(m) for m in messages)
    tail = pack({"id": 99, "method": "x"})
    decoder = FrameDecoder()
    assert decoder.feed(data + tail[:3]) == messages
    assert decoder.pending_bytes == 3
    assert decoder.feed(tail[3:]) == [{"id": 99, "method": "x"}]


def test_empty_feed_yields_nothing() -> None:
    """Feeding no bytes is harmless."""
    assert FrameDecoder().feed(b"") == []


def test_oversize_header_refused_before_body() -> None:
    """A header announcing more than max_frame_bytes raises at once, body never sent."""
    decoder = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(struct.pack(">I", 101))
    assert info.value.code == "frame_too_large"
    assert "101" in info.value.message


def test_oversize_default_limit() -> None:
    """The default limit is 4 MiB: one byte more is refused, the limit itself is not."""
    assert DEFAULT_MAX_FRAME_BYTES == 4 * 1024 * 1024
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME_BYTES + 1))
    assert FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME_BYTES)) == []


def test_oversize_header_after_a_good_frame() -> None:
    """A good frame before an oversize header in the same chunk still raises."""
    decoder = FrameDecoder(max_frame_bytes=64)
    with pytest.raises(FrameTooLarge):
        decoder.feed(pack({"id": 1, "method": "m"}) + struct.pack(">I", 2**32 - 1))


def test_frame_at_exact_limit_accepted() -> None:
    """A body of exactly max_frame_bytes is fine."""
    body = msgpack.packb({"k": "v"})
    decoder = FrameDecoder(max_frame_bytes=len(body))
    assert decoder.feed(frame_of_body(body)) == [{"k": "v"}]


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "list"), (5, "int"), ("text", "str"), (None, "NoneType"), (b"x", "bytes")],
)
def test_non_map_body_is_bad_request(value: object, kind: str) -> None:
    """A body that is valid msgpack but not a map is a bad request naming what it was."""
    with pytest.raises(BadRequest) as info:
        FrameDecoder().feed(frame_of_body(msgpack.packb(value, use_bin_type=True)))
    assert kind in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x81\xa1a",  # map missing its value
        msgpack.packb({"a": 1}) + b"\x01",  # trailing data
        msgpack.packb({1: "x"}),  # int key
        msgpack.packb({b"raw": "x"}, use_bin_type=True),  # bin key
        msgpack.packb({"a": {2: "nested int key"}}),
        b"\x81\xa1a\xa2\xff\xfe",  # invalid UTF-8 in a str value
        b"\x81\xa2\xff\xfe\x01",  # invalid UTF-8 in a key
        b"\x91" * 10_000 + b"\xc0",  # 10 000 nested arrays
        b"\x81\xa1a" + b"\x91" * 10_000 + b"\xc0",  # deep nesting inside a map
        b"\xdd\xff\xff\xff\xff",  # array announcing 2**32-1 elements
    ],
    ids=[
        "empty",
        "reserved-byte",
        "truncated",
        "trailing-data",
        "int-key",
        "bin-key",
        "nested-int-key",
        "bad-utf8-value",
        "bad-utf8-key",
        "deep-nesting",
        "deep-nesting-in-map",
        "huge-array-header",
    ],
)
def test_malformed_body_is_bad_request(body: bytes) -> None:
    """Corrupt or hostile bodies become BadRequest, never another exception."""
    with pytest.raises(BadRequest):
        FrameDecoder().feed(frame_of_body(body))
    with pytest.raises(BadRequest):
        unpack_body(body)


def test_nested_values_may_be_anything() -> None:
    """Only the top-level keys must be strings; values nest freely."""
    message = {"a": [1, [2, [3]]], "b": {"c": b"\x00", "d": 1.5, "e": True}}
    assert unpack_body(msgpack.packb(message, use_bin_type=True)) == message


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
    limit=st.integers(min_value=0, max_value=400),
)
def test_random_bytes_only_raise_codyd_errors(data: bytes, cuts: list[int], limit: int) -> None:
    """Random bytes in random chunks either decode to str-keyed maps or raise a CodydError."""
    decoder = FrameDecoder(max_frame_bytes=limit)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for start, end in itertools.pairwise(bounds):
            for message in decoder.feed(data[start:end]):
                assert isinstance(message, dict)
                assert all(isinstance(key, str) for key in message)
    except CodydError as exc:
        assert isinstance(exc, BadRequest | FrameTooLarge)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=200),
    prefix=st.lists(
        st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x02", b"\x82\xa1a\x01\xa1b"]),
        max_size=50,
    ),
)
def test_random_structured_bodies_only_raise_bad_request(body: bytes, prefix: list[bytes]) -> None:
    """Bodies with plausible msgpack prefixes and random tails decode or raise BadRequest."""
    raw = b"".join(prefix) + body
    try:
        message = unpack_body(raw)
    except BadRequest:
        return
    assert isinstance(message, dict)


# -- request envelope ----------------------------------------------------------------------------


def test_parse_request_valid() -> None:
    """A complete request becomes a Request; params default to an empty map."""
    assert parse_request({"id": 0, "method": "daemon.ping"}) == Request(0, "daemon.ping", {})
    assert parse_request({"id": 3, "method": "m", "params": None}) == Request(3, "m", {})
    assert parse_request({"id": MAX_REQUEST_ID, "method": "m", "params": {"a": 1}}) == Request(
        MAX_REQUEST_ID, "m", {"a": 1}
    )


@pytest.mark.parametrize(
    "request_id",
    [None, -1, True, False, "1", 1.0, MAX_REQUEST_ID + 1, 2**64 - 1, [1]],
    ids=["none", "negative", "true", "false", "str", "float", "too-big", "u64-max", "list"],
)
def test_parse_request_bad_id(request_id: object) -> None:
    """id must be an int between 0 and 2**63-1 (a bool is not an int here)."""
    with pytest.raises(BadRequest, match=r"^id: "):
        parse_request({"id": request_id, "method": "m"})


def test_parse_request_missing_id() -> None:
    """A request without id is refused, naming the field."""
    with pytest.raises(BadRequest, match=r"^id: "):
        parse_request({"method": "m"})


@pytest.mark.parametrize(
    "message",
    [{"id": 1}, {"id": 1, "method": ""}, {"id": 1, "method": 5}, {"id": 1, "method": None}],
    ids=["missing", "empty", "int", "none"],
)
def test_parse_request_bad_method(message: dict[str, Any]) -> None:
    """method must be a non-empty string."""
    with pytest.raises(BadRequest, match=r"^method: "):
        parse_request(message)


@pytest.mark.parametrize("params", [[], [1], "x", 3, True, b"{}"])
def test_parse_request_params_not_a_map(params: object) -> None:
    """params, when present and not null, must be a map."""
    with pytest.raises(BadRequest, match=r"^params: "):
        parse_request({"id": 1, "method": "m", "params": params})


def test_parse_request_unknown_keys() -> None:
    """Keys beyond id, method and params are refused, and named."""
    with pytest.raises(BadRequest, match="jsonrpc") as info:
        parse_request({"id": 1, "method": "m", "jsonrpc": "2.0", "extra": 1})
    assert "extra" in info.value.message


def test_parse_request_from_the_wire() -> None:
    """A request that went through pack and the decoder parses back to itself."""
    (message,) = FrameDecoder().feed(pack(SAMPLE))
    request = parse_request(message)
    assert (request.id, request.method, request.params) == (7, "run.events", SAMPLE["params"])


def test_response_helpers() -> None:
    """Response maps carry the id with either result or error."""
    assert result_response(4, {"pong": True}) == {"id": 4, "result": {"pong": True}}
    error = BadRequest("nope").to_wire()
    assert error_response(None, error) == {"id": None, "error": error}


# -- error payloads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "retryable", "data"),
    [
        (BadRequest("bad"), "bad_request", False, None),
        (UnknownMethod("no such method"), "unknown_method", False, None),
        (InvalidParams("budget.max_turns", "expected an int"), "invalid_params", False,
         {"field": "budget.max_turns"}),
        (NotFound("no run"), "not_found", False, None),
        (InvalidState("terminal", state="completed"), "invalid_state", False,
         {"state": "completed"}),
        (Conflict("taken"), "conflict", False, None),
        (Unauthorized("who"), "unauthorized", False, None),
        (FrameTooLarge("big"), "frame_too_large", False, None),
        (Trimmed("gone", oldest_seq=42), "trimmed", False, {"oldest_seq": 42}),
        (ShuttingDown("bye"), "shutting_down", True, None),
        (Overloaded("busy"), "overloaded", True, None),
        (Internal("oops"), "internal", True, None),
    ],
)  # fmt: skip
def test_error_to_wire(
    error: CodydError, code: str, retryable: bool, data: dict[str, Any] | None
) -> None:
    """Each error class maps to its protocol code, retryability and structured data."""
    wire = error.to_wire()
    assert wire["code"] == code
    assert wire["retryable"] is retryable
    assert isinstance(wire["message"], str) and wire["message"]
    if data is None:
        assert "data" not in wire
    else:
        assert wire["data"] == data
    assert set(wire) <= {"code", "message", "retryable", "data"}
    assert ERROR_CLASSES[code] is type(error)
    # The payload survives the codec unchanged.
    (decoded,) = FrameDecoder().feed(pack({"id": None, "error": wire}))
    assert decoded["error"] == wire


def test_invalid_params_message_names_field() -> None:
    """InvalidParams puts the dotted field path first in its message."""
    error = InvalidParams("completion.pattern", "expected a valid regular expression")
    assert error.message == "completion.pattern: expected a valid regular expression"
    assert error.field == "completion.pattern"


def test_error_classes_cover_spec_codes() -> None:
    """Every error code of the protocol has exactly one class, and only those."""
    assert set(ERROR_CLASSES) == {
        "bad_request", "unknown_method", "invalid_params", "not_found", "invalid_state",
        "conflict", "unauthorized", "frame_too_large", "trimmed", "shutting_down",
        "overloaded", "internal",
    }  # fmt: skip
    retryable = {code for code, cls in ERROR_CLASSES.items() if cls.retryable}
    assert retryable == {"shutting_down", "overloaded", "internal"}


def test_error_from_wire_rebuilds_the_class_message_and_data() -> None:
    """A response's error becomes its class again; an unknown code keeps code and retryability."""
    rebuilt = error_from_wire(InvalidParams("limit", "expected an integer").to_wire())
    assert type(rebuilt) is InvalidParams
    assert (rebuilt.message, rebuilt.field) == ("limit: expected an integer", "limit")
    assert error_from_wire(Trimmed("gone", oldest_seq=3).to_wire()).data == {"oldest_seq": 3}
    novel = error_from_wire({"code": "novel", "message": "m", "retryable": True})
    assert (novel.code, novel.retryable, novel.message) == ("novel", True, "m")
    assert isinstance(novel, CodydError)
    malformed = error_from_wire("nonsense")
    assert type(malformed) is Internal and "nonsense" in malformed.message


def test_every_startup_error_is_a_startup_failure() -> None:
    """``codyd serve`` catches one class: each error that stops start-up derives from it."""
    from codyd.config import ConfigError
    from codyd.daemon import StateDirBusy, StateDirUnusable
    from codyd.errors import StartupError, StartupFailure
    from codyd.store import StoreUnusable, StoreVersionError

    kinds = (ConfigError, StartupError, StateDirBusy, StateDirUnusable)
    for kind in (*kinds, StoreVersionError, StoreUnusable):
        assert issubclass(kind, StartupFailure)
    assert not issubclass(CodydError, StartupFailure)


def test_error_repr_shows_message_and_data() -> None:
    """The repr names the class, message and data."""
    assert repr(Trimmed("gone", oldest_seq=3)) == "Trimmed('gone', data={'oldest_seq': 3})"
