"""Tests of codyd.telemetry.sentinel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from codyd.model.events import SENTINEL_TYPES
from codyd.telemetry.sentinel import MAX_DEPTH, Sentinel, parse_sentinel, report_of


def sentinel_line(**event: Any) -> str:
    return json.dumps({"__cody_event__": event}, ensure_ascii=False)


def test_allowed_types_are_the_documented_set() -> None:
    """SENTINEL_TYPES is exactly the list of docs/events.md §6."""
    assert (
        frozenset(
            {
                "file_read",
                "file_written",
                "file_deleted",
                "log_updated",
                "test_run_started",
                "test_run_completed",
                "token_usage",
                "cost",
                "message",
            }
        )
        == SENTINEL_TYPES
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "file_read", "path": "a.py"}, Sentinel("file_read", {"path": "a.py"})),
        ({"type": "file_written", "path": "b/c.py"}, Sentinel("file_written", {"path": "b/c.py"})),
        ({"type": "file_deleted", "path": "d.py"}, Sentinel("file_deleted", {"path": "d.py"})),
        (
            {"type": "log_updated", "path": "LOG.md"},
            Sentinel("log_updated", {"path": "LOG.md", "bytes_added": 0, "tail": ""}),
        ),
        (
            {"type": "log_updated", "path": "LOG.md", "bytes_added": 12, "tail": "done\n"},
            Sentinel("log_updated", {"path": "LOG.md", "bytes_added": 12, "tail": "done\n"}),
        ),
        ({"type": "test_run_started"}, Sentinel("test_run_started", {"command": ""})),
        (
            {"type": "test_run_started", "command": "pytest -q"},
            Sentinel("test_run_started", {"command": "pytest -q"}),
        ),
        (
            {"type": "test_run_completed", "passed": 5, "failed": 1},
            Sentinel(
                "test_run_completed", {"passed": 5, "failed": 1, "skipped": 0, "runner": "sentinel"}
            ),
        ),
        (
            {"type": "test_run_completed", "passed": 2, "skipped": 3, "runner": "tox"},
            Sentinel(
                "test_run_completed", {"passed": 2, "failed": 0, "skipped": 3, "runner": "tox"}
            ),
        ),
        (
            {"type": "token_usage", "input_tokens": 18234, "output_tokens": 2311},
            Sentinel("token_usage", {"input": 18234, "output": 2311, "cached": 0}),
        ),
        (
            {"type": "token_usage", "input": 10, "output": 2, "cached": 7},
            Sentinel("token_usage", {"input": 10, "output": 2, "cached": 7}),
        ),
        (
            {"type": "token_usage", "cached_tokens": 4},
            Sentinel("token_usage", {"input": 0, "output": 0, "cached": 4}),
        ),
        (
            {"type": "token_usage", "cached_input_tokens": 9},
            Sentinel("token_usage", {"input": 0, "output": 0, "cached": 9}),
        ),
        ({"type": "token_usage"}, Sentinel("token_usage", {"input": 0, "output": 0, "cached": 0})),
        ({"type": "cost", "usd": 0.25}, Sentinel("cost", {"usd": 0.25})),
        ({"type": "cost", "usd": 3}, Sentinel("cost", {"usd": 3.0})),
        ({"type": "cost", "usd": 0}, Sentinel("cost", {"usd": 0.0})),
        (
            {"type": "message", "text": "hello"},
            Sentinel("message", {"role": "assistant", "text": "hello"}),
        ),
        (
            {"type": "message", "role": "user", "text": ""},
            Sentinel("message", {"role": "user", "text": ""}),
        ),
    ],
)
def test_allowed_types_are_normalized(event: dict[str, Any], expected: Sentinel) -> None:
    """Each allowed type becomes that event with exactly its documented fields."""
    assert parse_sentinel(sentinel_line(**event)) == expected


def test_cost_is_always_a_float() -> None:
    """An integer usd is reported as a float."""
    sentinel = parse_sentinel(sentinel_line(type="cost", usd=3))
    assert sentinel is not None
    assert type(sentinel.data["usd"]) is float


def test_unknown_fields_of_allowed_types_are_dropped() -> None:
    """Fields not listed for an allowed type do not reach the event."""
    line = sentinel_line(type="file_read", path="a.py", lines=40, extra={"x": 1})
    assert parse_sentinel(line) == Sentinel("file_read", {"path": "a.py"})
    line = sentinel_line(type="token_usage", input=1, output=2, reasoning_output_tokens=9)
    assert parse_sentinel(line) == Sentinel("token_usage", {"input": 1, "output": 2, "cached": 0})


def test_token_usage_short_names_take_precedence() -> None:
    """When both spellings are present, `input`/`output`/`cached` win over the long names."""
    line = sentinel_line(
        type="token_usage",
        input_tokens=1,
        input=2,
        output_tokens=3,
        output=4,
        cached=5,
        cached_tokens=6,
        cached_input_tokens=7,
    )
    assert parse_sentinel(line) == Sentinel("token_usage", {"input": 2, "output": 4, "cached": 5})


@pytest.mark.parametrize(
    "event_type",
    [
        "run_completed",
        "run_failed",
        "run_started",
        "turn_started",
        "turn_completed",
        "run_x",
        "turn_",
        "session_started",
        "subprocess_output",
        "custom",
        "progress",
        "",
        "FILE_READ",
    ],
)
def test_other_types_become_custom(event_type: str) -> None:
    """Any type outside the allowed set, lifecycle types included, becomes a custom event."""
    line = sentinel_line(type=event_type, value=1, nested={"a": [1, "b", None]})
    assert parse_sentinel(line) == Sentinel(
        "custom", {"type": event_type, "value": 1, "nested": {"a": [1, "b", None]}}
    )


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "token_usage", "input": -1}, "input: expected an integer >= 0, got -1"),
        ({"type": "token_usage", "output_tokens": 1.5}, "output_tokens: expected an integer >= 0"),
        ({"type": "token_usage", "cached": True}, "cached: expected an integer >= 0, got true"),
        ({"type": "token_usage", "input": "12"}, "input: expected an integer >= 0, got a string"),
        ({"type": "token_usage", "input": None}, "input: expected an integer >= 0, got null"),
        ({"type": "cost", "usd": -0.5}, "usd: expected a number >= 0, got -0.5"),
        ({"type": "cost", "usd": "1.00"}, "usd: expected a number >= 0, got a string"),
        ({"type": "cost", "usd": False}, "usd: expected a number >= 0, got false"),
        ({"type": "cost"}, "usd: required"),
        ({"type": "file_read"}, "path: required"),
        ({"type": "file_written", "path": ""}, "path: expected a non-empty string"),
        ({"type": "file_deleted", "path": ["a"]}, "path: expected a string, got an array"),
        ({"type": "log_updated", "bytes_added": 3}, "path: required"),
        ({"type": "log_updated", "path": "L", "bytes_added": -3}, "bytes_added: expected"),
        ({"type": "log_updated", "path": "L", "tail": 5}, "tail: expected a string, got 5"),
        ({"type": "test_run_started", "command": ["pytest"]}, "command: expected a string"),
        ({"type": "test_run_completed", "passed": "5"}, "passed: expected an integer >= 0"),
        ({"type": "test_run_completed", "failed": -1}, "failed: expected an integer >= 0"),
        ({"type": "test_run_completed", "skipped": 1.0}, "skipped: expected an integer >= 0"),
        ({"type": "test_run_completed", "runner": 1}, "runner: expected a string, got 1"),
        ({"type": "message"}, "text: required"),
        ({"type": "message", "text": {"a": 1}}, "text: expected a string, got an object"),
        ({"type": "message", "text": "t", "role": None}, "role: expected a string, got null"),
    ],
)
def test_invalid_fields_make_a_custom_event(event: dict[str, Any], reason: str) -> None:
    """An allowed type with an unusable field becomes custom, keeping every field and a reason."""
    sentinel = parse_sentinel(sentinel_line(**event))
    assert sentinel is not None
    assert sentinel.type == "custom"
    assert sentinel.data["invalid"].startswith(reason)
    assert {key: value for key, value in sentinel.data.items() if key != "invalid"} == event


def test_invalid_reason_is_not_overwritten_by_a_field_named_invalid() -> None:
    """A field called `invalid` cannot hide why the sentinel was rejected."""
    sentinel = parse_sentinel(sentinel_line(type="cost", usd=-1, invalid="no"))
    assert sentinel == Sentinel(
        "custom", {"type": "cost", "usd": -1, "invalid": "usd: expected a number >= 0, got -1"}
    )


@pytest.mark.parametrize(
    "line",
    [
        "  \t" + sentinel_line(type="file_read", path="a.py") + "  \r",
        "\x1b[2m" + sentinel_line(type="file_read", path="a.py") + "\x1b[0m",
        json.dumps({"other": 1, "__cody_event__": {"type": "file_read", "path": "a.py"}}),
        '{"__cody_event__": {"\\u0074ype": "file_read", "path": "a\\u002epy"}}',
        '{"__cody_event__":{"type":"file_read","path":"a.py"}}',
    ],
)
def test_sentinel_framing_variants_are_accepted(line: str) -> None:
    """Whitespace, ANSI codes, other top-level keys and JSON escapes do not hide a sentinel."""
    assert parse_sentinel(line) == Sentinel("file_read", {"path": "a.py"})


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "plain text",
        'note: progress is reported with {"__cody_event__": {...}} lines on stdout',
        'progress: {"__cody_event__": {"type": "file_read", "path": "a.py"}}',
        '{"__cody_event__": {"type": "file_written", "path": "src/calc/__init__.py"}',
        '{"__cody_event__": {"type": "file_read", "path": "a.py"}} trailing',
        '{"__cody_event__": {"type": "file_read", "path": "a.py"}}{"x": 1}',
        '[{"__cody_event__": {"type": "file_read", "path": "a.py"}}]',
        '"__cody_event__"',
        '{"__cody_event__": "file_read"}',
        '{"__cody_event__": ["file_read"]}',
        '{"__cody_event__": null}',
        '{"__cody_event__": {"path": "a.py"}}',
        '{"__cody_event__": {"type": 7, "path": "a.py"}}',
        '{"__cody_event__": {"type": null}}',
        '{"event": {"__cody_event__": {"type": "file_read", "path": "a.py"}}}',
        '{"type": "file_read", "path": "a.py"}',
        '{"__CODY_EVENT__": {"type": "file_read", "path": "a.py"}}',
        '{"\\u005f_cody_event__": {"type": "file_read", "path": "a.py"}}',  # the key, escaped
        '{"__cody_event__": {"type": "cost", "usd": NaN}}',
        '{"__cody_event__": {"type": "cost", "usd": Infinity}}',
        '{"__cody_event__": {"type": "cost", "usd": 1e999}}',
        '{"__cody_event__": {"type": "token_usage", "input": 9223372036854775808}}',
        '{"__cody_event__": {"type": "token_usage", "input": ' + "9" * 5000 + "}}",
        "{'__cody_event__': {'type': 'file_read', 'path': 'a.py'}}",
        '{"__cody_event__": {"type": "file_read", "path": "a.py"}}\x00',
    ],
)
def test_non_sentinels_are_rejected(line: str) -> None:
    """Prose mentions, malformed JSON, non-objects and out-of-range numbers are not sentinels."""
    assert parse_sentinel(line) is None


def test_largest_64_bit_integer_is_accepted() -> None:
    """Counts up to 2**63 - 1 are kept as they are."""
    line = sentinel_line(type="token_usage", input=2**63 - 1)
    assert parse_sentinel(line) == Sentinel(
        "token_usage", {"input": 2**63 - 1, "output": 0, "cached": 0}
    )


def test_lone_surrogates_are_replaced() -> None:
    """Undecodable bytes and escaped lone surrogates become U+FFFD, keys included."""
    raw = '{"__cody_event__": {"type": "file_read", "path": "caf\udce9.py"}}'
    assert parse_sentinel(raw) == Sentinel("file_read", {"path": "caf\ufffd.py"})
    escaped = '{"__cody_event__": {"type": "x\\ud800", "k\\udfff": ["\\ud83d"]}}'
    assert parse_sentinel(escaped) == Sentinel("custom", {"type": "x\ufffd", "k\ufffd": ["\ufffd"]})


def test_paired_surrogate_escapes_are_kept() -> None:
    """A JSON surrogate pair decodes to its single character."""
    line = '{"__cody_event__": {"type": "message", "text": "\\ud83d\\ude00"}}'
    assert parse_sentinel(line) == Sentinel("message", {"role": "assistant", "text": "😀"})


def nested(depth: int) -> str:
    """A custom event whose object nests `depth` levels, counting the event object itself."""
    return (
        '{"__cody_event__": {"type": "deep", "v": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}}"
    )


def test_nesting_up_to_the_limit_is_kept() -> None:
    """An event nesting exactly MAX_DEPTH levels is a sentinel."""
    sentinel = parse_sentinel(nested(MAX_DEPTH))
    assert sentinel is not None
    assert sentinel.type == "custom"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000])
def test_deep_nesting_is_not_a_sentinel(depth: int) -> None:
    """Nesting past MAX_DEPTH, even past the interpreter's recursion limit, gives None."""
    assert parse_sentinel(nested(depth)) is None


def test_deeply_nested_ignored_key_does_not_crash() -> None:
    """Deep nesting beside the event object never raises."""
    line = '{"x": ' + "{" * 100_000 + ', "__cody_event__": {"type": "file_read", "path": "a"}}'
    assert parse_sentinel(line) is None


def test_line_over_one_mebibyte_is_not_a_sentinel() -> None:
    """A sentinel of exactly 1 MiB of UTF-8 is accepted; one byte more and it is text."""
    frame = sentinel_line(type="message", text="")
    room = 1024 * 1024 - len(frame)
    assert parse_sentinel(sentinel_line(type="message", text="x" * room)) is not None
    assert parse_sentinel(sentinel_line(type="message", text="x" * (room + 1))) is None
    # "é" is one character but two bytes of UTF-8: the limit counts bytes.
    text = "é" * (room // 2) + "x" * (room % 2)
    assert parse_sentinel(sentinel_line(type="message", text=text)) is not None
    assert parse_sentinel(sentinel_line(type="message", text=text + "x")) is None


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"type": "rate_limited", "resets_at": 1800000000, "message": "limit"},
            {"resets_at": 1800000000.0, "message": "limit"},
        ),
        (
            {"type": "rate_limited", "resets_at": None},
            {"resets_at": None, "message": "the agent reported a usage limit"},
        ),
        ({"type": "auth_failed", "message": "401"}, {"message": "401"}),
        ({"type": "context_exhausted"}, {"message": "the agent's context window is full"}),
    ],
)
def test_report_sentinels_become_reports(event: dict[str, Any], expected: dict[str, Any]) -> None:
    """The three report types are parsed like the others and stand for a turn outcome."""
    parsed = parse_sentinel(sentinel_line(**event))
    assert parsed == Sentinel(event["type"], expected)
    report = report_of(parsed)
    assert report is not None and report.outcome == event["type"]
    assert report.message == expected["message"]
    assert report.resets_at == expected.get("resets_at")


def test_a_bad_reset_time_makes_a_custom_event() -> None:
    """resets_at must be unix seconds or null; anything else is kept as a custom event."""
    parsed = parse_sentinel(sentinel_line(type="rate_limited", resets_at="3pm"))
    assert parsed is not None and parsed.type == "custom" and "resets_at" in parsed.data["invalid"]
    assert report_of(parsed) is None
