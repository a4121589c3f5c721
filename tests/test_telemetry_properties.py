"""Property tests: no line crashes a telemetry parser, and results have the documented types."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from codyd.model.events import SENTINEL_TYPES
from codyd.telemetry.ansi import strip_ansi
from codyd.telemetry.runner_summary import TestSummary, TestSummaryDetector
from codyd.telemetry.sentinel import Sentinel, parse_sentinel
from codyd.telemetry.session import find_session_id

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
RUNNERS = {"pytest", "jest", "bun", "cargo", "go"}
FIELD_NAMES = [
    "path",
    "bytes_added",
    "tail",
    "command",
    "passed",
    "failed",
    "skipped",
    "runner",
    "input",
    "output",
    "cached",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cached_input_tokens",
    "usd",
    "role",
    "text",
    "invalid",
    "type",
    "extra",
]
EVENT_TYPES = [*sorted(SENTINEL_TYPES), "run_completed", "turn_started", "custom", "x"]
NORMALIZED_KEYS: dict[str, dict[str, type]] = {
    "file_read": {"path": str},
    "file_written": {"path": str},
    "file_deleted": {"path": str},
    "log_updated": {"path": str, "bytes_added": int, "tail": str},
    "test_run_started": {"command": str},
    "test_run_completed": {"passed": int, "failed": int, "skipped": int, "runner": str},
    "token_usage": {"input": int, "output": int, "cached": int},
    "cost": {"usd": float},
    "message": {"role": str, "text": str},
}

# Any text, including NUL, ESC, lone surrogates and U+FFFD.
lines = st.text(
    alphabet=st.one_of(
        st.characters(codec=None),
        st.sampled_from(["\x1b", "[", "]", "{", "}", "\x07", "\\", "\ufffd", "\udce9", "\x00"]),
    )
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
event_values = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.text(min_size=1),
    st.floats(min_value=0, allow_infinity=False),
    json_values,
)


@st.composite
def sentinel_lines(draw: st.DrawFn) -> str:
    """Sentinel-like lines: right and wrong types and fields, framing, and truncation."""
    event: dict[str, Any] = draw(st.dictionaries(st.sampled_from(FIELD_NAMES), event_values))
    wrong_type = draw(st.integers(0, 4)) == 0
    event_type = draw(json_values if wrong_type else st.sampled_from(EVENT_TYPES))
    if isinstance(event_type, str) and event_type in SENTINEL_TYPES:
        # Keep some events free of stray fields, so valid events are common.
        event = {key: value for key, value in event.items() if draw(st.booleans())}
    if draw(st.integers(0, 9)) > 0:
        event["type"] = event_type
    payload: Any = {"__cody_event__": event}
    if draw(st.booleans()):
        payload["other"] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        payload = draw(json_values)
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    prefix = draw(st.sampled_from(["", "", "", " ", "\t", "\x1b[32m", "x", "\x1b]0;t\x07"]))
    suffix = draw(st.sampled_from(["", "", "", " ", "\r", "\x1b[0m", "}", "x"]))
    return prefix + text + suffix


def assert_sentinel_shape(result: Sentinel | None) -> None:
    """A parse result is None or a sentinel with documented, encodable data."""
    if result is None:
        return
    assert isinstance(result, Sentinel)
    assert isinstance(result.data, dict)
    msgpack.packb(result.data, use_bin_type=True)
    json.dumps(result.data, allow_nan=False).encode("utf-8")
    if result.type == "custom":
        assert isinstance(result.data["type"], str)
        assert result.data["type"] not in SENTINEL_TYPES or "invalid" in result.data
        return
    assert result.type in SENTINEL_TYPES
    shape = NORMALIZED_KEYS[result.type]
    assert set(result.data) == set(shape)
    for key, expected_type in shape.items():
        value: Any = result.data[key]
        assert type(value) is expected_type
        if isinstance(value, int):
            assert 0 <= value < 2**63
        if isinstance(value, float):
            assert math.isfinite(value)
            assert value >= 0
    if result.type.startswith("file_") or result.type == "log_updated":
        assert result.data["path"]


def assert_summaries_shape(summaries: list[TestSummary]) -> None:
    for summary in summaries:
        assert isinstance(summary, TestSummary)
        assert summary.runner in RUNNERS
        for count in (summary.passed, summary.failed, summary.skipped):
            assert type(count) is int
            assert 0 <= count < 2**63
        assert summary.to_data() == {
            "passed": summary.passed,
            "failed": summary.failed,
            "skipped": summary.skipped,
            "runner": summary.runner,
        }


@given(lines)
def test_strip_ansi_leaves_no_escape(line: str) -> None:
    """strip_ansi never raises, leaves no ESC and is idempotent."""
    stripped = strip_ansi(line)
    assert "\x1b" not in stripped
    assert strip_ansi(stripped) == stripped
    if "\x1b" not in line:
        assert stripped == line


@given(lines)
def test_find_session_id_on_any_text(line: str) -> None:
    """find_session_id never raises and returns None or a lowercase uuid."""
    result = find_session_id(line)
    assert result is None or UUID_RE.fullmatch(result)


@given(st.uuids(), st.sampled_from(["session id: ", "Session ID:", "SESSION_ID=", "session-id = "]))
def test_find_session_id_finds_any_uuid(uuid: Any, key: str) -> None:
    """Any uuid after a session-id key is found, lowercased."""
    assert find_session_id(f"\x1b[1m{key}\x1b[0m{str(uuid).upper()}") == str(uuid)


@given(lines)
def test_parse_sentinel_on_any_text(line: str) -> None:
    """parse_sentinel never raises on arbitrary text."""
    assert_sentinel_shape(parse_sentinel(line))


@given(sentinel_lines())
def test_parse_sentinel_on_json_like_lines(line: str) -> None:
    """parse_sentinel never raises on sentinel-like lines and its data has the documented shape."""
    assert_sentinel_shape(parse_sentinel(line))


@given(
    st.sampled_from(["input", "input_tokens"]),
    st.sampled_from(["output", "output_tokens"]),
    st.sampled_from(["cached", "cached_tokens", "cached_input_tokens"]),
    st.tuples(*[st.integers(min_value=0, max_value=2**63 - 1)] * 3),
)
def test_token_usage_round_trip(
    input_key: str, output_key: str, cached_key: str, counts: tuple[int, int, int]
) -> None:
    """Valid token counts under any accepted spelling come back exactly, normalized."""
    event = {"type": "token_usage", input_key: counts[0], output_key: counts[1]}
    event[cached_key] = counts[2]
    line = json.dumps({"__cody_event__": event})
    assert parse_sentinel(line) == Sentinel(
        "token_usage", {"input": counts[0], "output": counts[1], "cached": counts[2]}
    )


clean_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
in_range_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    clean_text,
)


@given(
    clean_text.filter(lambda t: t not in SENTINEL_TYPES),
    st.dictionaries(clean_text.filter(lambda k: k != "type"), in_range_scalars),
)
def test_unknown_types_are_never_forged(event_type: str, fields: dict[str, Any]) -> None:
    """Any type outside the allowed set becomes custom, with its given type and fields."""
    line = json.dumps({"__cody_event__": {"type": event_type, **fields}}, ensure_ascii=False)
    assert parse_sentinel(line) == Sentinel("custom", {"type": event_type, **fields})


@given(st.lists(lines, max_size=20))
def test_summary_detector_on_any_text(stream: list[str]) -> None:
    """The detector never raises and only reports well-formed summaries."""
    detector = TestSummaryDetector()
    for line in stream:
        assert_summaries_shape(detector.feed(line))
    assert_summaries_shape(detector.flush())
    assert detector.flush() == []


summary_fragments = st.sampled_from(
    [
        " 5 pass",
        " 1 fail",
        " 0 skip",
        " 2 todo",
        " 3 expect() calls",
        "PASS",
        "FAIL",
        "ok  \tex.com/a\t0.1s",
        "ok  \tex.com/b\t(cached)",
        "FAIL\tex.com/c\t0.2s",
        "FAIL\tex.com/d",
        "?   \tex.com/e\t[no test files]",
        "1 failed, 5 passed in 0.12s",
        "Tests: 1 failed, 6 total",
        "Tests  2 passed (2)",
        "test result: ok. 1 passed; 0 failed; 0 ignored",
        "noise",
        "",
    ]
)


@given(st.lists(summary_fragments, max_size=30))
def test_summary_detector_on_runner_output(stream: list[str]) -> None:
    """Any interleaving of runner lines yields well-formed summaries and counts every go package."""
    detector = TestSummaryDetector()
    summaries = [summary for line in stream for summary in detector.feed(line)]
    summaries += detector.flush()
    assert_summaries_shape(summaries)
    go = [summary for summary in summaries if summary.runner == "go"]
    assert sum(summary.passed for summary in go) == sum(line.startswith("ok") for line in stream)
    assert sum(summary.failed for summary in go) == sum(
        line.startswith("FAIL\t") for line in stream
    )
