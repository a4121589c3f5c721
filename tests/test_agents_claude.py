"""The claude adapter: argv, stream-json transcripts, tricky lines, and the fake claude CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codyd.agents import ClaudeAdapter, adapter_for
from codyd.agents.base import Parsed
from codyd.agents.claude import NO_RESULT
from codyd.config import AgentConfig
from codyd.spec import RunSpec, parse_run_spec

from adapter_checks import DATA, check_any_lines, json_values, line, replay, run_fake, transcript

FAKE_CLAUDE = Path(__file__).parent / "agents" / "fake_claude.py"
WS = "/srv/work/calc"
SESSION = "5e0c9a3b-7d21-4f68-b1e4-8a2f6c0d3e97"
ERROR_SESSION = "b7d2f4a6-1c3e-4b58-9a0d-6e8f2c4a7b13"


def assistant(*blocks: dict[str, Any], msg_id: str = "msg_1", parent: str | None = None) -> str:
    usage = {
        "input_tokens": 4,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "output_tokens": 50,
    }
    message = {"id": msg_id, "role": "assistant", "content": list(blocks), "usage": usage}
    return line(
        {
            "type": "assistant",
            "message": message,
            "parent_tool_use_id": parent,
            "session_id": SESSION,
        }
    )


def tool_use(tool_id: str, name: str, **tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


def tool_result(tool_id: str, content: Any, is_error: bool = False) -> str:
    block = {
        "type": "tool_result",
        "tool_use_id": tool_id,
        "content": content,
        "is_error": is_error,
    }
    return line(
        {"type": "user", "message": {"role": "user", "content": [block]}, "session_id": SESSION}
    )


def spec(tmp_path: Path, **params: Any) -> RunSpec:
    return parse_run_spec({"workspace": str(tmp_path), "agent": "claude", "prompt": "go", **params})


# -- argv -------------------------------------------------------------------------------------


def test_argv_defaults(tmp_path: Path) -> None:
    """Without config the binary is `claude`; the prompt comes on stdin."""
    assert ClaudeAdapter().argv(spec(tmp_path), None, None) == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
    ]  # fmt: skip


def test_argv_with_model_args_and_resume(tmp_path: Path) -> None:
    """Model, then the operator's args, then `--resume=<id>` in the equals form."""
    config = AgentConfig(bin="/usr/local/bin/claude", args=("--permission-mode", "acceptEdits"))
    argv = ClaudeAdapter().argv(spec(tmp_path, model="claude-sonnet-4-5"), config, "-odd-id")
    assert argv == [
        "/usr/local/bin/claude", "-p", "--output-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-4-5", "--permission-mode", "acceptEdits", "--resume=-odd-id",
    ]  # fmt: skip


def test_adapter_for_claude() -> None:
    """`adapter_for("claude")` gives a fresh claude adapter each time."""
    first, second = adapter_for("claude"), adapter_for("claude")
    assert isinstance(first, ClaudeAdapter) and first is not second
    assert first.name == "claude"


# -- transcripts ------------------------------------------------------------------------------


def test_success_transcript() -> None:
    """A whole turn: text, tool calls with reads, writes and a test run, then usage and cost."""
    adapter = ClaudeAdapter()
    events = replay(adapter, transcript("claude-stream.jsonl"))
    assert [type_ for type_, _ in events] == [
        "session_started", "quota", "message", "tool_call", "file_read", "tool_call", "file_written",
        "tool_call", "file_written", "tool_call", "test_run_started", "command",
        "test_run_completed", "message", "token_usage", "cost",
    ]  # fmt: skip
    by_type = [(type_, data) for type_, data in events if type_ != "tool_call"]
    assert by_type == [
        ("session_started", {"session_id": SESSION}),
        (
            "quota",
            {
                "status": "allowed",
                "resets_at": 1763787600.0,
                "utilization": None,
                "kind": "five_hour",
            },
        ),
        ("message", {"role": "assistant", "text": "Let me read divide() first."}),
        ("file_read", {"path": f"{WS}/src/calc/ops.py"}),
        ("file_written", {"path": f"{WS}/src/calc/ops.py"}),
        ("file_written", {"path": f"{WS}/tests/test_errors.py"}),
        ("test_run_started", {"command": "python -m pytest -q"}),
        ("command", {"command": "python -m pytest -q", "exit_code": 0, "status": "completed"}),
        ("test_run_completed", {"passed": 8, "failed": 0, "skipped": 0, "runner": "pytest"}),
        (
            "message",
            {
                "role": "assistant",
                "text": 'divide() in src/calc/ops.py now raises CalcError("division by zero") for b == 0, and tests/test_errors.py adds two regression tests. python -m pytest -q: 8 passed.',
            },
        ),
        # modelUsage: the main model and the haiku side-call (612 input, 38 output tokens)
        ("token_usage", {"input": 107506, "output": 1113, "cached": 96066}),
        ("cost", {"usd": 0.0863458}),
    ]
    calls = [data for type_, data in events if type_ == "tool_call"]
    assert [call["name"] for call in calls] == ["Read", "Edit", "Write", "Bash"]
    assert calls[0]["input"] == {"file_path": f"{WS}/src/calc/ops.py"}
    assert calls[3]["input"] == {"command": "python -m pytest -q", "description": "Run the tests"}
    assert adapter.finish(0) is None


def test_success_transcript_message_text_and_sessions() -> None:
    """Text frames carry message_text; init and result both report the (same) session id."""
    parsed = [ClaudeAdapter().parse_stdout(text) for text in transcript("claude-stream.jsonl")]
    assert [n for n, p in enumerate(parsed, start=1) if p.message_text] == [4, 13]
    assert [n for n, p in enumerate(parsed, start=1) if p.session_id == SESSION] == [1, 14]
    assert not any(p.resume_failed for p in parsed)


def test_error_transcript() -> None:
    """A failing test run, then max turns: usage and cost still count, and the turn fails."""
    adapter = ClaudeAdapter()
    events = replay(adapter, transcript("claude-stream-error.jsonl"))
    assert events == [
        ("session_started", {"session_id": ERROR_SESSION}),
        ("message", {"role": "assistant", "text": "Running the tests to see what fails."}),
        (
            "tool_call",
            {
                "name": "Bash",
                "input": {"command": "python -m pytest -q", "description": "Run the tests"},
            },
        ),
        ("test_run_started", {"command": "python -m pytest -q"}),
        ("command", {"command": "python -m pytest -q", "exit_code": 1, "status": "failed"}),
        ("test_run_completed", {"passed": 5, "failed": 1, "skipped": 0, "runner": "pytest"}),
        ("tool_call", {"name": "Read", "input": {"file_path": f"{WS}/src/calc/ops.py"}}),
        ("file_read", {"path": f"{WS}/src/calc/ops.py"}),
        ("token_usage", {"input": 42405, "output": 279, "cached": 31760}),
        ("cost", {"usd": 0.053628}),
    ]
    assert adapter.finish(0).message == "error_max_turns: Reached maximum number of turns (2)"
    assert adapter.finish(1).message == "error_max_turns: Reached maximum number of turns (2)"


def test_resume_reporting_another_session() -> None:
    """A resumed turn whose init names another session reports that id (the driver flags the mismatch)."""
    adapter = ClaudeAdapter()
    parsed = [adapter.parse_stdout(text) for text in transcript("claude-resume-mismatch.jsonl")]
    assert parsed[0].session_id == "c81e4a2d-6b3f-4d97-a5c0-3e9b7f1d2a64"
    assert parsed[1].message_text == "Continuing: the fix is in place.\nTASK COMPLETE"
    assert parsed[2].events == [
        ("token_usage", {"input": 22353, "output": 31, "cached": 22110}),
        ("cost", {"usd": 0.0101694}),
    ]
    assert not any(p.resume_failed for p in parsed)
    assert adapter.finish(0) is None


def test_unknown_session_transcript() -> None:
    """'No conversation found' marks a failed resume; the result's fresh session id is not reported."""
    adapter = ClaudeAdapter()
    [parsed] = [adapter.parse_stdout(text) for text in transcript("claude-unknown-session.jsonl")]
    assert parsed.resume_failed
    assert parsed.session_id is None
    assert parsed.events == [("cost", {"usd": 0.0})]  # an empty modelUsage reports no tokens
    assert (
        adapter.finish(1).message
        == "error_during_execution: No conversation found with session ID: 6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f"
    )


def test_unknown_session_on_stderr() -> None:
    """The same words on stderr (text mode) also mark a failed resume; other stderr is plain output."""
    adapter = ClaudeAdapter()
    assert adapter.parse_stderr("No conversation found with session ID: 6f1e2d3c").resume_failed
    assert adapter.parse_stderr("warning: something else") == Parsed()


# -- tricky lines -----------------------------------------------------------------------------


def test_usage_repeated_on_frames_is_never_counted() -> None:
    """Frames of one message repeat their usage; tokens come from the result only."""
    adapter = ClaudeAdapter()
    frames = [
        assistant({"type": "thinking", "thinking": "hm", "signature": "s"}),
        assistant({"type": "text", "text": "Looking."}),
        assistant(tool_use("toolu_1", "Glob", pattern="**/*.py")),
    ]
    events = [event for frame in frames for event in adapter.parse_stdout(frame).events]
    assert [type_ for type_, _ in events] == ["message", "tool_call"]
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "usage": {
            "input_tokens": 4,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 50,
        },
    }
    assert adapter.parse_stdout(line(result)).events == [
        ("token_usage", {"input": 1104, "output": 50, "cached": 1000})
    ]


@pytest.mark.parametrize(
    "value",
    [
        {"type": "user", "message": {"role": "user", "content": "Fix the failing test"}},
        {
            "type": "user",
            "message": {"role": "user", "content": [{"type": "text", "text": "hook feedback"}]},
        },
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "unknown", "content": "x"}],
            },
        },
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "delta": {"type": "text_delta", "text": "Hel"},
            },
        },
        {"type": "rate_limit_event", "rate_limit_info": "not a map"},
        {"type": "system", "subtype": "hook_response", "hook_name": "SessionStart"},
        {"type": "control_request", "request_id": "r1", "request": {"subtype": "can_use_tool"}},
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "server_tool_use", "id": "s1", "name": "web_search"},
                    {"type": "image"},
                    "junk",
                ]
            },
        },
        {"type": "assistant", "message": "not a map"},
        {"type": "keep_alive"},
        {"no": "type"},
    ],
)
def test_ignored_lines_are_consumed_without_events(value: dict[str, Any]) -> None:
    """Replays, partial-message events, other system lines and unknown blocks are consumed quietly."""
    assert ClaudeAdapter().parse_stdout(line(value)) == Parsed(consumed=True)


@pytest.mark.parametrize(
    "text", ["[SandboxDebug] Seccomp filter applied", "", "[1]", "not json {", "  "]
)
def test_non_object_stdout_is_output(text: str) -> None:
    """Lines that are not JSON objects (sandbox debug output) stay output."""
    assert ClaudeAdapter().parse_stdout(text) == Parsed()


def test_writers_and_readers() -> None:
    """Write, Edit, MultiEdit and NotebookEdit write; Read reads; Grep on a file reads it: once the tool succeeded."""
    adapter = ClaudeAdapter()
    frame = assistant(
        tool_use("t1", "MultiEdit", file_path="/w/a.py", edits=[]),
        tool_use("t2", "NotebookEdit", notebook_path="/w/n.ipynb", new_source="x"),
        tool_use("t3", "Grep", pattern="divide", path="src/calc/ops.py"),
        tool_use("t4", "Grep", pattern="divide", path="src"),
        tool_use("t5", "Read", file_path=7),
    )
    assert [event[0] for event in adapter.parse_stdout(frame).events] == ["tool_call"] * 5
    events = []
    for tool_id in ("t1", "t2", "t3", "t4", "t5"):
        events += adapter.parse_stdout(tool_result(tool_id, "ok")).events
    assert events == [
        ("file_written", {"path": "/w/a.py"}),
        ("file_written", {"path": "/w/n.ipynb"}),
        ("file_read", {"path": "src/calc/ops.py"}),
    ]


def test_repeated_tool_use_counts_once() -> None:
    """The same tool_use id seen twice is reported once."""
    adapter = ClaudeAdapter()
    frame = assistant(tool_use("t1", "Write", file_path="/w/a.py", content=""))
    assert len(adapter.parse_stdout(frame).events) == 1
    assert adapter.parse_stdout(frame).events == []
    assert adapter.parse_stdout(tool_result("t1", "done")).events == [
        ("file_written", {"path": "/w/a.py"})
    ]
    assert adapter.parse_stdout(tool_result("t1", "done")).events == []


def test_bash_results() -> None:
    """Bash results: list content, an `Exit code N` prefix, and an error without a code."""
    adapter = ClaudeAdapter()
    adapter.parse_stdout(
        assistant(
            tool_use("b1", "Bash", command="go test ./..."),
            tool_use("b2", "Bash", command="ls"),
            tool_use("b3", "Bash", command="sleep 900"),
        )
    )
    listed = tool_result(
        "b1",
        [{"type": "text", "text": "Exit code 1\nok  \tcalc\t0.01s\nFAIL\tcalc/ops\t0.02s\nFAIL"}],
        is_error=True,
    )
    assert adapter.parse_stdout(listed).events == [
        ("command", {"command": "go test ./...", "exit_code": 1, "status": "failed"}),
        ("test_run_completed", {"passed": 1, "failed": 1, "skipped": 0, "runner": "go"}),
    ]
    assert adapter.parse_stdout(tool_result("b2", "a.py\nb.py")).events == [
        ("command", {"command": "ls", "exit_code": 0, "status": "completed"})
    ]
    assert adapter.parse_stdout(
        tool_result("b3", "Command timed out after 2m", is_error=True)
    ).events == [("command", {"command": "sleep 900", "exit_code": None, "status": "failed"})]
    assert adapter.parse_stdout(tool_result("b3", "again")).events == []


def test_subagent_text_is_no_completion_candidate() -> None:
    """A sub-agent's text is a message, but not matched against completion.pattern."""
    parsed = ClaudeAdapter().parse_stdout(
        assistant({"type": "text", "text": "DONE"}, parent="toolu_task")
    )
    assert parsed.events == [("message", {"role": "assistant", "text": "DONE"})]
    assert parsed.message_text is None


def test_several_text_blocks_in_one_line() -> None:
    """An older build's single line with several text blocks gives one message each, text joined."""
    parsed = ClaudeAdapter().parse_stdout(
        assistant({"type": "text", "text": "a"}, {"type": "text", "text": "b"})
    )
    assert [data["text"] for _, data in parsed.events] == ["a", "b"]
    assert parsed.message_text == "a\nb"


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"subtype": "success", "is_error": False, "result": "ok"}, None),
        (
            {
                "subtype": "success",
                "is_error": True,
                "result": "API Error: 529 overloaded",
                "api_error_status": 529,
            },
            "API Error: 529 overloaded",
        ),
        ({"subtype": "error_during_execution", "is_error": True}, "error_during_execution"),
        (
            {
                "subtype": "error_max_budget_usd",
                "is_error": True,
                "errors": ["budget reached", 3, "stop"],
            },
            "error_max_budget_usd: budget reached; stop",
        ),
        ({"is_error": True, "errors": ["bare"]}, "bare"),
        ({"is_error": True}, "claude reported an error"),
        ({"subtype": "error_max_turns", "is_error": "yes"}, None),
    ],
)
def test_result_errors(result: dict[str, Any], error: str | None) -> None:
    """`is_error: true` fails the turn whatever the subtype: errors, else result text, else subtype."""
    adapter = ClaudeAdapter()
    adapter.parse_stdout(line({"type": "result", **result}))
    report = adapter.finish(0)
    assert (None if report is None else report.message) == error


def test_older_cost_key_and_odd_costs() -> None:
    """Older builds say `cost_usd`; a cost that is not a finite non-negative number is skipped."""
    assert ClaudeAdapter().parse_stdout(line({"type": "result", "cost_usd": 0.25})).events == [
        ("cost", {"usd": 0.25})
    ]
    for cost in ("0.25", True, -1, None):
        assert (
            ClaudeAdapter().parse_stdout(line({"type": "result", "total_cost_usd": cost})).events
            == []
        )
    assert (
        ClaudeAdapter().parse_stdout('{"type": "result", "total_cost_usd": Infinity}').events == []
    )


def test_finish_without_a_result() -> None:
    """Exit 0 without a result is a crash; a non-zero exit already fails the turn."""
    assert ClaudeAdapter().finish(0).message == NO_RESULT
    assert ClaudeAdapter().finish(1) is None
    assert ClaudeAdapter().finish(None) is None


# -- properties -------------------------------------------------------------------------------

SHAPES: dict[str, dict[str, tuple[type, ...]]] = {
    "message": {"role": (str,), "text": (str,)},
    "tool_call": {"name": (str,), "input": (dict,)},
    "command": {"command": (str,), "exit_code": (int, type(None)), "status": (str,)},
    "file_read": {"path": (str,)},
    "file_written": {"path": (str,)},
    "test_run_started": {"command": (str,)},
    "test_run_completed": {"passed": (int,), "failed": (int,), "skipped": (int,), "runner": (str,)},
    "token_usage": {"input": (int,), "output": (int,), "cached": (int,)},
    "cost": {"usd": (float,)},
    "permission_denied": {"tool": (str,), "path": (str, type(None)), "message": (str,)},
    "tool_failed": {"tool": (str,), "message": (str,)},
    "agent_retry": {
        "attempt": (int,),
        "delay_ms": (int,),
        "error_status": (int, type(None)),
        "error": (str, type(None)),
    },
    "context_compacted": {},
    "quota": {
        "status": (str, type(None)),
        "resets_at": (float, type(None)),
        "utilization": (float, type(None)),
        "kind": (str, type(None)),
    },
}

tool_ids = st.sampled_from(["t1", "t2"]) | json_values
blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "tool_use", "tool_result", "thinking"]) | json_values},
    optional={
        "id": tool_ids,
        "tool_use_id": tool_ids,
        "name": st.sampled_from(
            ["Bash", "Read", "Write", "Edit", "MultiEdit", "NotebookEdit", "Grep"]
        )
        | json_values,
        "input": st.fixed_dictionaries(
            {},
            optional={
                "command": st.sampled_from(["pytest", "cat a.py"]) | json_values,
                "file_path": json_values,
                "notebook_path": json_values,
                "path": json_values,
            },
        )
        | json_values,
        "text": json_values,
        "content": st.sampled_from(
            [
                "Exit code 2\n1 failed, 2 passed in 0.1s",
                "3 passed in 0.1s",
                "Exit code 99999999999999999999\n",
            ]
        )
        | json_values,
        "is_error": json_values,
    },
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "content": st.lists(blocks, max_size=3) | json_values,
        "usage": json_values,
        "id": json_values,
    },
)
events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["system", "assistant", "user", "result", "stream_event", "rate_limit_event"]
        )
        | json_values
    },
    optional={
        "subtype": st.sampled_from(
            ["init", "success", "error_max_turns", "api_retry", "compact_boundary"]
        )
        | json_values,
        "attempt": json_values,
        "retry_delay_ms": json_values,
        "error_status": st.sampled_from([401, 429, 529, None]) | json_values,
        "error": st.sampled_from(["authentication_failed", "rate_limit"]) | json_values,
        "permission_denials": json_values,
        "modelUsage": json_values,
        "rate_limit_info": st.fixed_dictionaries(
            {"status": st.sampled_from(["allowed", "rejected"]) | json_values},
            optional={"resetsAt": json_values, "utilization": json_values},
        )
        | json_values,
        "session_id": json_values,
        "message": messages | json_values,
        "parent_tool_use_id": json_values,
        "is_error": st.booleans() | json_values,
        "errors": st.lists(
            st.sampled_from(["No conversation found with session ID: x", "boom"]) | json_values,
            max_size=2,
        )
        | json_values,
        "result": json_values,
        "usage": st.fixed_dictionaries(
            {},
            optional={
                k: json_values
                for k in (
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                    "output_tokens",
                )
            },
        )
        | json_values,
        "total_cost_usd": json_values,
        "cost_usd": json_values,
    },
)
lines = st.lists(
    events.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=40), max_size=8
)


@given(lines, st.one_of(st.none(), st.integers(-255, 255)))
def test_random_lines_never_crash(texts: list[str], exit_code: int | None) -> None:
    """Any stdout/stderr lines give well-formed, msgpack-encodable results and a clean finish."""
    check_any_lines(ClaudeAdapter(), texts, exit_code, SHAPES)


# -- the fake claude CLI ----------------------------------------------------------------------


def test_fake_claude_replays_by_turn_and_logs_argv(tmp_path: Path) -> None:
    """The fake picks the transcript of CODYD_TURN (the last one repeating) and logs its argv."""
    log = tmp_path / "argv.jsonl"
    scripts = f"{DATA / 'claude-stream.jsonl'},{DATA / 'claude-stream-error.jsonl'}"
    argv = ["-p", "--output-format", "stream-json", "--verbose"]
    outputs = [
        run_fake(
            FAKE_CLAUDE,
            argv,
            FAKE_AGENT_SCRIPT=scripts,
            FAKE_AGENT_ARGV_LOG=str(log),
            CODYD_TURN=str(turn),
        )
        for turn in (1, 2, 5)
    ]
    assert [out.stdout for out in outputs] == [
        (DATA / "claude-stream.jsonl").read_text(),
        (DATA / "claude-stream-error.jsonl").read_text(),
        (DATA / "claude-stream-error.jsonl").read_text(),
    ]
    assert [json.loads(text) for text in log.read_text().splitlines()] == [argv] * 3


def test_fake_claude_unknown_session_and_exit_status(tmp_path: Path) -> None:
    """Resuming an id outside FAKE_AGENT_KNOWN_SESSIONS fails like claude; FAKE_AGENT_EXIT sets the status."""
    script = str(DATA / "claude-resume-mismatch.jsonl")
    unknown = run_fake(
        FAKE_CLAUDE,
        ["-p", "--resume=gone"],
        FAKE_AGENT_SCRIPT=script,
        FAKE_AGENT_KNOWN_SESSIONS=f"{SESSION},x",
    )
    assert unknown.returncode == 1
    adapter = ClaudeAdapter()
    [parsed] = [adapter.parse_stdout(text) for text in unknown.stdout.splitlines()]
    assert parsed.resume_failed and parsed.session_id is None
    assert (
        adapter.finish(1).message
        == "error_during_execution: No conversation found with session ID: gone"
    )
    known = run_fake(
        FAKE_CLAUDE,
        ["-p", f"--resume={SESSION}"],
        FAKE_AGENT_SCRIPT=script,
        FAKE_AGENT_KNOWN_SESSIONS=SESSION,
        FAKE_AGENT_EXIT="2",
    )
    assert known.returncode == 2
    assert known.stdout == (DATA / "claude-resume-mismatch.jsonl").read_text()


def test_fake_claude_is_executable() -> None:
    """The fake runs as a binary (shebang and mode), as `agents.claude.bin` needs."""
    assert os.access(FAKE_CLAUDE, os.X_OK)
    assert FAKE_CLAUDE.read_text().startswith("#!/usr/bin/env python3\n")
