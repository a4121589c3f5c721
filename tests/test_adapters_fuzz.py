"""Whatever an agent prints, the line parsers never raise (any bytes, any lines, any JSON).

An exception here would fail the run with an internal error (the supervisor's
fault rule); for the parsers it must never come to that.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from codyd.agents import adapter_for, jsonline, shell
from codyd.telemetry.runner_summary import TestSummaryDetector
from codyd.telemetry.sentinel import parse_sentinel
from codyd.telemetry.session import find_session_id

from adapter_checks import json_values

ADAPTERS = ("codex", "claude", "command")
# Keys the adapters look for, so that generated objects reach deep into their parsing.
KEYS = st.sampled_from(
    [
        "type", "msg", "item", "message", "content", "usage", "session_id", "thread_id",
        "id", "text", "command", "exit_code", "aggregated_output", "status", "is_error",
        "result", "subtype", "tool_use_id", "name", "input", "total_cost_usd", "cost_usd",
        "input_tokens", "output_tokens", "cached_input_tokens", "cache_read_input_tokens",
        "__cody_event__", "path", "passed", "failed", "changes", "error",
    ]
)  # fmt: skip
TYPES = st.sampled_from(
    [
        "thread.started", "turn.started", "turn.completed", "turn.failed", "item.started",
        "item.completed", "item.updated", "error", "system", "assistant", "user", "result",
        "command_execution", "agent_message", "file_change", "reasoning", "tool_use",
        "tool_result", "text", "init", "file_written", "test_run_completed", "token_usage",
    ]
)  # fmt: skip
objects = st.recursive(
    json_values | TYPES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


def dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def decoded(raw: bytes) -> str:
    """As the run driver decodes an output line."""
    return raw.decode("utf-8", "replace")


lines = st.one_of(
    st.binary(max_size=300).map(decoded),
    st.text(max_size=300),
    objects.map(dump),
    st.dictionaries(KEYS, objects, max_size=6).map(lambda d: dump({**d, "type": d.get("type")})),
    st.builds(lambda t, d: dump({"type": t, **d}), TYPES, st.dictionaries(KEYS, objects)),
    st.builds(lambda d: dump({"__cody_event__": d}), objects),
)


def parse_everything(name: str, texts: list[str], exit_code: int | None) -> None:
    adapter = adapter_for(name)
    for text in texts:
        adapter.parse_stdout(text)
        adapter.parse_stderr(text)
    adapter.finish(exit_code)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ADAPTERS), st.lists(lines, max_size=8), st.none() | st.integers(-64, 255))
def test_adapters_never_raise(name: str, texts: list[str], exit_code: int | None) -> None:
    parse_everything(name, texts, exit_code)


@settings(max_examples=150, deadline=None)
@given(st.lists(lines, max_size=8))
def test_telemetry_parsers_never_raise(texts: list[str]) -> None:
    detector = TestSummaryDetector()
    for text in texts:
        parse_sentinel(text)
        find_session_id(text)
        detector.feed(text)
    detector.flush()


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(decoded)))
def test_shell_readers_never_raise(text: str) -> None:
    # (simple_commands refuses an unclosed quote by design; its callers catch that.)
    shell.unwrap_shell(text)
    shell.is_test_command(text)
    shell.summaries_in(text)
    shell.files_read(text)
    jsonline.load_object(text)
