"""The codex adapter: argv, `codex exec --json` transcripts, tricky lines, and the fake codex CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codyd.agents import CodexAdapter, adapter_for
from codyd.agents.base import Parsed
from codyd.agents.codex import NO_TURN_COMPLETED
from codyd.config import AgentConfig
from codyd.spec import RunSpec, parse_run_spec

from adapter_checks import DATA, check_any_lines, json_values, line, replay, run_fake, transcript

FAKE_CODEX = Path(__file__).parent / "agents" / "fake_codex.py"
WS = "/srv/work/calc"
THREAD = "0199e2b7-4c1a-7f30-8d52-9b6a3e0c1f47"
LIMIT = "You've hit your usage limit. Try again at 4:12 PM or purchase more credits."


def spec(tmp_path: Path, **params: Any) -> RunSpec:
    return parse_run_spec({"workspace": str(tmp_path), "agent": "codex", "prompt": "go", **params})


# -- argv -------------------------------------------------------------------------------------


def test_argv_defaults(tmp_path: Path) -> None:
    """Without config the binary is `codex`; the prompt comes on stdin (`-`)."""
    ws = str(tmp_path.resolve())
    assert CodexAdapter().argv(spec(tmp_path), None, None) == [
        "codex", "exec", "--json", "--cd", ws, "--skip-git-repo-check", "-",
    ]  # fmt: skip


def test_argv_with_model_args_and_resume(tmp_path: Path) -> None:
    """Model, then the operator's args, then `resume <id>`, all before the stdin `-`."""
    config = AgentConfig(bin="/opt/codex/bin/codex", args=("--sandbox", "workspace-write"))
    argv = CodexAdapter().argv(spec(tmp_path, model="gpt-5-codex"), config, "sess-1")
    assert argv == [
        "/opt/codex/bin/codex", "exec", "--json", "--cd", str(tmp_path.resolve()),
        "--skip-git-repo-check", "-m", "gpt-5-codex", "--sandbox", "workspace-write",
        "resume", "sess-1", "-",
    ]  # fmt: skip


def test_adapter_for_codex() -> None:
    """`adapter_for("codex")` gives a fresh codex adapter each time."""
    first, second = adapter_for("codex"), adapter_for("codex")
    assert isinstance(first, CodexAdapter) and first is not second
    assert first.name == "codex"


# -- transcripts ------------------------------------------------------------------------------


def test_full_turn_transcript() -> None:
    """A whole turn: commands, a read, a test run, file changes, messages and usage, in order."""
    adapter = CodexAdapter()
    assert replay(adapter, transcript("codex-exec.jsonl")) == [
        ("session_started", {"session_id": THREAD}),
        (
            "command",
            {
                "command": 'rg -n "def divide|CalcError" src tests',
                "exit_code": 0,
                "status": "completed",
            },
        ),
        (
            "command",
            {"command": "sed -n '1,120p' src/calc/ops.py", "exit_code": 0, "status": "completed"},
        ),
        ("file_read", {"path": "src/calc/ops.py"}),
        (
            "message",
            {
                "role": "assistant",
                "text": "divide() never checks for a zero divisor, so test_divide_by_zero should fail with ZeroDivisionError. Running the suite to confirm.",
            },
        ),
        ("test_run_started", {"command": "python -m pytest -q"}),
        ("command", {"command": "python -m pytest -q", "exit_code": 1, "status": "failed"}),
        ("test_run_completed", {"passed": 5, "failed": 1, "skipped": 0, "runner": "pytest"}),
        ("file_written", {"path": f"{WS}/tests/test_errors.py"}),
        ("file_written", {"path": f"{WS}/src/calc/ops.py"}),
        ("command", {"command": "git status --short", "exit_code": 0, "status": "completed"}),
        (
            "message",
            {
                "role": "assistant",
                "text": 'divide() now raises CalcError("division by zero") when b == 0, and tests/test_errors.py covers the message and the ValueError base class.\n\nBefore the change pytest reported 5 passed, 1 failed. The suite was not re-run after the patch.',
            },
        ),
        ("token_usage", {"input": 61842, "output": 1893, "cached": 53760}),
    ]
    assert adapter.finish(0) is None


def test_full_turn_message_text_and_session() -> None:
    """Only agent messages carry text for completion.pattern; only thread.started a session id."""
    parsed = [CodexAdapter().parse_stdout(text) for text in transcript("codex-exec.jsonl")]
    assert [n for n, p in enumerate(parsed, start=1) if p.message_text] == [9, 18]
    assert parsed[17].message_text is not None
    assert "5 passed, 1 failed" in parsed[17].message_text
    assert [p.session_id for p in parsed if p.session_id] == [THREAD]
    assert not any(p.resume_failed for p in parsed)


def test_failed_turn_transcript() -> None:
    """Transient errors are warnings; turn.failed's message is the turn's error; no usage."""
    adapter = CodexAdapter()
    assert replay(adapter, transcript("codex-exec-failed.jsonl")) == [
        ("session_started", {"session_id": "0199e2c0-7d35-7a18-b6e4-2f8c5a1d9e03"}),
        ("command", {"command": "git log --oneline -5", "exit_code": 0, "status": "completed"}),
        (
            "warning",
            {
                "message": "Reconnecting... 1/5 (stream disconnected before completion: connection reset by peer)"
            },
        ),
        (
            "warning",
            {
                "message": "Falling back from WebSockets to HTTPS transport. stream disconnected before completion: connection reset by peer"
            },
        ),
        ("warning", {"message": LIMIT}),
    ]
    assert adapter.finish(1).message == LIMIT
    assert adapter.finish(0).message == LIMIT


def test_resumed_turn_transcript() -> None:
    """A resumed turn reports the same thread id; a zsh-wrapped test run is unwrapped."""
    adapter = CodexAdapter()
    events = replay(adapter, transcript("codex-resume.jsonl"))
    assert events == [
        ("session_started", {"session_id": THREAD}),
        ("test_run_started", {"command": "python -m pytest -q"}),
        ("command", {"command": "python -m pytest -q", "exit_code": 0, "status": "completed"}),
        ("test_run_completed", {"passed": 8, "failed": 0, "skipped": 0, "runner": "pytest"}),
        ("message", {"role": "assistant", "text": "All 8 tests pass.\nTASK COMPLETE"}),
        ("token_usage", {"input": 70311, "output": 412, "cached": 61440}),
    ]
    assert adapter.finish(0) is None


def test_unknown_session_on_stderr() -> None:
    """codex's error for a session it cannot find marks a failed resume; no session is reported."""
    adapter = CodexAdapter()
    parsed = [adapter.parse_stderr(text) for text in transcript("codex-unknown-session.stderr")]
    assert [p.resume_failed for p in parsed] == [True, True]
    assert all(p.session_id is None and not p.events and not p.consumed for p in parsed)
    assert adapter.finish(1) is None


@pytest.mark.parametrize(
    "message",
    [
        "Error: thread/session 0199f0a1-2b3c-7d4e-8f5a-6b7c8d9e0f1a not found",
        "ERROR: No saved session found with ID 0199f0a1. Run `codex resume` without an ID.",
        "\x1b[31mError:\x1b[0m thread not found: 0199f0a1",
        "Error: thread/resume failed: rollout not found",
    ],
)
def test_unknown_session_messages(message: str) -> None:
    """The forms of 'no such session' are recognised on stderr and in error events."""
    assert CodexAdapter().parse_stderr(message).resume_failed
    assert CodexAdapter().parse_stdout(line({"type": "error", "message": message})).resume_failed
    failed = line({"type": "turn.failed", "error": {"message": message}})
    assert CodexAdapter().parse_stdout(failed).resume_failed


def test_not_found_after_the_thread_started_is_no_resume_failure() -> None:
    """Once the thread started, a 'session not found' text is an ordinary error."""
    adapter = CodexAdapter()
    adapter.parse_stdout(line({"type": "thread.started", "thread_id": THREAD}))
    assert not adapter.parse_stderr("Error: session not found").resume_failed
    assert not adapter.parse_stdout(
        line({"type": "error", "message": "session not found"})
    ).resume_failed


def test_other_stderr_is_plain_output() -> None:
    """Ordinary stderr lines are output, unrecognised."""
    parsed = CodexAdapter().parse_stderr("2025-11-21T10:00:00Z WARN codex_core: slow response")
    assert parsed == Parsed()


def test_session_id_line_on_stderr() -> None:
    """Human mode prints `session id: <uuid>` on stderr (key in ANSI bold)."""
    parsed = CodexAdapter().parse_stderr(f"\x1b[1msession id:\x1b[0m {THREAD}")
    assert parsed.session_id == THREAD
    assert not parsed.consumed


# -- tricky lines -----------------------------------------------------------------------------


def test_older_item_type_and_assistant_message_names() -> None:
    """Builds between #4525 and #4610 tag items with `item_type` and say `assistant_message`."""
    adapter = CodexAdapter()
    item = {"id": "itm_1", "item_type": "assistant_message", "text": "Done."}
    parsed = adapter.parse_stdout(line({"type": "item.completed", "item": item}))
    assert parsed.events == [("message", {"role": "assistant", "text": "Done."})]
    assert parsed.message_text == "Done."
    command = {"id": "itm_2", "item_type": "command_execution", "command": "bash -lc 'cat a.txt'"}
    parsed = adapter.parse_stdout(
        line({"type": "item.completed", "item": {**command, "exit_code": 0}})
    )
    assert parsed.events == [
        ("command", {"command": "cat a.txt", "exit_code": 0, "status": "completed"}),
        ("file_read", {"path": "a.txt"}),
    ]


@pytest.mark.parametrize(
    "value",
    [
        {"type": "turn.started"},
        {"type": "item.plan.delta", "item_id": "item_3", "delta": "x"},
        {"type": "request_user_input", "id": "r1", "call_id": "c1", "questions": []},
        {
            "type": "item.completed",
            "item": {"id": "item_0", "type": "reasoning", "text": "**Thinking**"},
        },
        {
            "type": "item.completed",
            "item": {"id": "item_1", "type": "collab_tool_call", "new": [1]},
        },
        {"type": "item.completed", "item": {"id": "item_2", "type": "todo_list", "items": []}},
        {
            "type": "item.started",
            "item": {
                "id": "item_4",
                "type": "file_change",
                "changes": [{"path": "a", "kind": "add"}],
            },
        },
        {"type": "some.future.event", "payload": {"x": 1}},
        {"id": "0", "msg": {"type": "agent_message", "message": "legacy stream"}},
        {"type": "thread.started"},
        {"type": "item.completed", "item": "not an item"},
        {},
    ],
)
def test_ignored_lines_are_consumed_without_events(value: dict[str, Any]) -> None:
    """Unknown or uninteresting events are structured data: consumed, no events."""
    parsed = CodexAdapter().parse_stdout(line(value))
    assert parsed == Parsed(consumed=True)


@pytest.mark.parametrize(
    "text", ["", "plain text", "[1, 2]", '"x"', "{broken", "Reading prompt from stdin..."]
)
def test_non_object_stdout_is_output(text: str) -> None:
    """A stdout line that is not a JSON object is left as output."""
    assert CodexAdapter().parse_stdout(text) == Parsed()


def test_command_start_with_null_exit_code_and_no_id_duplicates() -> None:
    """`exit_code: null` while running is fine; start, updates and a repeated completion count once."""
    adapter = CodexAdapter()
    item = {
        "id": "item_5",
        "type": "command_execution",
        "command": "/bin/bash -lc 'npm test'",
        "aggregated_output": "",
    }
    started = adapter.parse_stdout(
        line({"type": "item.started", "item": {**item, "exit_code": None, "status": "in_progress"}})
    )
    updated = adapter.parse_stdout(
        line({"type": "item.updated", "item": {**item, "exit_code": None, "status": "in_progress"}})
    )
    output = "Tests:       1 failed, 4 passed, 5 total\n"
    done = {**item, "aggregated_output": output, "exit_code": 1, "status": "failed"}
    completed = adapter.parse_stdout(line({"type": "item.completed", "item": done}))
    again = adapter.parse_stdout(line({"type": "item.completed", "item": done}))
    assert started.events == [("test_run_started", {"command": "npm test"})]
    assert updated.events == []
    assert completed.events == [
        ("command", {"command": "npm test", "exit_code": 1, "status": "failed"}),
        ("test_run_completed", {"passed": 4, "failed": 1, "skipped": 0, "runner": "jest"}),
    ]
    assert again.events == []


def test_test_command_completed_without_a_start() -> None:
    """A test run seen only at completion is announced then."""
    item = {
        "id": "item_1",
        "type": "command_execution",
        "command": "cargo test",
        "exit_code": 0,
        "status": "completed",
        "aggregated_output": "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n",
    }
    assert CodexAdapter().parse_stdout(line({"type": "item.completed", "item": item})).events == [
        ("test_run_started", {"command": "cargo test"}),
        ("command", {"command": "cargo test", "exit_code": 0, "status": "completed"}),
        ("test_run_completed", {"passed": 3, "failed": 0, "skipped": 1, "runner": "cargo"}),
    ]


def test_failed_and_declined_commands_read_nothing() -> None:
    """A read command that failed or was declined is not a file read."""
    adapter = CodexAdapter()
    failed = {
        "id": "a",
        "type": "command_execution",
        "command": "cat missing.txt",
        "exit_code": 1,
        "status": "failed",
    }
    declined = {
        "id": "b",
        "type": "command_execution",
        "command": "cat a.txt",
        "exit_code": None,
        "status": "declined",
    }
    assert adapter.parse_stdout(line({"type": "item.completed", "item": failed})).events == [
        ("command", {"command": "cat missing.txt", "exit_code": 1, "status": "failed"}),
    ]
    assert adapter.parse_stdout(line({"type": "item.completed", "item": declined})).events == [
        ("command", {"command": "cat a.txt", "exit_code": None, "status": "declined"}),
        (
            "permission_denied",
            {"tool": "shell", "path": None, "message": "codex declined to run: cat a.txt"},
        ),
    ]


def test_command_as_an_argv_list() -> None:
    """An argv list (older builds) is joined and unwrapped like a string."""
    item = {
        "id": "a",
        "type": "command_execution",
        "command": ["bash", "-lc", "head -5 notes.md"],
        "exit_code": 0,
    }
    assert CodexAdapter().parse_stdout(line({"type": "item.completed", "item": item})).events == [
        ("command", {"command": "head -5 notes.md", "exit_code": 0, "status": "completed"}),
        ("file_read", {"path": "notes.md"}),
    ]


def test_file_change_repeated_by_updates() -> None:
    """A patch counts once, at its completion; started/updated copies and repeats add nothing."""
    adapter = CodexAdapter()
    item = {
        "id": "item_7",
        "type": "file_change",
        "changes": [
            {"path": "/w/a.py", "kind": "update"},
            {"path": "/w/old.py", "kind": "delete"},
            {"path": "/w/new.py", "kind": "add"},
        ],
    }
    results = [
        adapter.parse_stdout(line({"type": kind, "item": {**item, "status": status}}))
        for kind, status in [
            ("item.started", "in_progress"),
            ("item.updated", "in_progress"),
            ("item.completed", "completed"),
            ("item.updated", "completed"),
            ("item.completed", "completed"),
        ]
    ]
    assert [r.events for r in results] == [
        [],
        [],
        [
            ("file_written", {"path": "/w/a.py"}),
            ("file_deleted", {"path": "/w/old.py"}),
            ("file_written", {"path": "/w/new.py"}),
        ],
        [],
        [],
    ]


def test_failed_file_change_writes_nothing() -> None:
    """A patch whose status is failed wrote nothing; a kind given as an object is understood."""
    adapter = CodexAdapter()
    failed = {
        "id": "p1",
        "type": "file_change",
        "status": "failed",
        "changes": [{"path": "a.py", "kind": "add"}],
    }
    assert adapter.parse_stdout(line({"type": "item.completed", "item": failed})).events == []
    moved = {
        "id": "p2",
        "type": "file_change",
        "status": "completed",
        "changes": [{"path": "b.py", "kind": {"type": "delete"}}, {"path": 3}, "junk"],
    }
    assert adapter.parse_stdout(line({"type": "item.completed", "item": moved})).events == [
        ("file_deleted", {"path": "b.py"})
    ]


def test_tool_items_and_error_items() -> None:
    """MCP calls and web searches are tool calls; `error` items are warnings."""
    adapter = CodexAdapter()
    mcp = {
        "id": "m",
        "type": "mcp_tool_call",
        "server": "docs",
        "tool": "search",
        "arguments": {"q": "trio"},
        "status": "completed",
    }
    web = {"id": "w", "type": "web_search", "query": "trio nursery"}
    error = {"id": "e", "type": "error", "message": "deprecated flag"}
    events = [
        adapter.parse_stdout(line({"type": "item.completed", "item": item})).events
        for item in (mcp, web, error)
    ]
    assert events == [
        [("tool_call", {"name": "mcp__docs__search", "input": {"q": "trio"}})],
        [("tool_call", {"name": "web_search", "input": {"query": "trio nursery"}})],
        [("warning", {"message": "deprecated flag"})],
    ]


def test_usage_tolerates_extra_and_odd_fields() -> None:
    """Unknown usage fields are ignored; a missing or invalid count is zero."""
    value = {
        "type": "turn.completed",
        "usage": {
            "input_tokens": 10,
            "output_tokens": "7",
            "cache_write_input_tokens": 3,
            "thread_id": "t",
        },
    }
    assert CodexAdapter().parse_stdout(line(value)).events == [
        ("token_usage", {"input": 10, "output": 0, "cached": 0})
    ]


def test_finish_without_turn_completed() -> None:
    """Exit 0 without turn.completed is an error; a non-zero exit already is one."""
    assert CodexAdapter().finish(0).message == NO_TURN_COMPLETED
    assert CodexAdapter().finish(1) is None
    assert CodexAdapter().finish(None) is None


def test_an_error_event_alone_is_no_failure() -> None:
    """A top-level `error` followed by turn.completed leaves the turn ok."""
    adapter = CodexAdapter()
    adapter.parse_stdout(line({"type": "error", "message": "Reconnecting... 2/5"}))
    adapter.parse_stdout(line({"type": "turn.completed", "usage": {}}))
    assert adapter.finish(0) is None


def test_turn_failed_without_a_message() -> None:
    """turn.failed without a message still fails the turn."""
    adapter = CodexAdapter()
    adapter.parse_stdout(line({"type": "turn.failed", "error": None}))
    assert adapter.finish(0).message == "turn failed"


# -- properties -------------------------------------------------------------------------------

SHAPES: dict[str, dict[str, tuple[type, ...]]] = {
    "message": {"role": (str,), "text": (str,)},
    "tool_call": {"name": (str,), "input": (object,)},
    "command": {"command": (str,), "exit_code": (int, type(None)), "status": (str,)},
    "file_read": {"path": (str,)},
    "file_written": {"path": (str,)},
    "file_deleted": {"path": (str,)},
    "test_run_started": {"command": (str,)},
    "test_run_completed": {"passed": (int,), "failed": (int,), "skipped": (int,), "runner": (str,)},
    "token_usage": {"input": (int,), "output": (int,), "cached": (int,)},
    "warning": {"message": (str,)},
    "permission_denied": {"tool": (str,), "path": (type(None),), "message": (str,)},
    "tool_failed": {"tool": (str,), "message": (str,)},
    "quota": {
        "status": (str,),
        "resets_at": (float, type(None)),
        "utilization": (type(None),),
        "kind": (type(None),),
    },
}

commands = st.sampled_from(
    ["bash -lc 'pytest -q'", "cat a.py b", "sed -n '1p' x.py", "bash -lc 'unclosed"]
)
items = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "agent_message",
                "assistant_message",
                "command_execution",
                "file_change",
                "mcp_tool_call",
                "web_search",
                "error",
                "todo_list",
            ]
        )
        | json_values
    },
    optional={
        "id": st.sampled_from(["item_0", "item_1"]) | json_values,
        "item_type": st.sampled_from(["assistant_message", "command_execution"]),
        "text": json_values,
        "message": json_values,
        "command": commands | json_values,
        "aggregated_output": st.sampled_from(["1 failed, 5 passed in 0.1s\n", "ok  \tpkg\t0.1s\n"])
        | json_values,
        "exit_code": json_values,
        "status": st.sampled_from(["completed", "failed", "in_progress"]) | json_values,
        "changes": st.lists(
            st.fixed_dictionaries({}, optional={"path": json_values, "kind": json_values})
        )
        | json_values,
        "server": json_values,
        "tool": json_values,
        "arguments": json_values,
        "query": json_values,
    },
)
events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "thread.started",
                "turn.started",
                "turn.completed",
                "turn.failed",
                "item.started",
                "item.updated",
                "item.completed",
                "error",
            ]
        )
        | json_values
    },
    optional={
        "thread_id": json_values,
        "item": items | json_values,
        "usage": st.fixed_dictionaries(
            {},
            optional={
                k: json_values for k in ("input_tokens", "cached_input_tokens", "output_tokens")
            },
        )
        | json_values,
        "error": st.fixed_dictionaries({}, optional={"message": json_values}) | json_values,
        "message": json_values,
    },
)
lines = st.lists(
    events.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=40), max_size=8
)


@given(lines, st.one_of(st.none(), st.integers(-255, 255)))
def test_random_lines_never_crash(texts: list[str], exit_code: int | None) -> None:
    """Any stdout/stderr lines give well-formed, msgpack-encodable results and a clean finish."""
    check_any_lines(CodexAdapter(), texts, exit_code, SHAPES)


# -- the fake codex CLI -----------------------------------------------------------------------


def test_fake_codex_replays_by_turn_and_logs_argv(tmp_path: Path) -> None:
    """The fake picks the transcript of CODYD_TURN (the last one repeating) and logs its argv."""
    log = tmp_path / "argv.jsonl"
    scripts = f"{DATA / 'codex-exec.jsonl'},{DATA / 'codex-resume.jsonl'}"
    outputs = [
        run_fake(
            FAKE_CODEX,
            ["exec", "--json", "-"],
            FAKE_AGENT_SCRIPT=scripts,
            FAKE_AGENT_ARGV_LOG=str(log),
            CODYD_TURN=str(turn),
        )
        for turn in (1, 2, 3)
    ]
    assert [out.stdout for out in outputs] == [
        (DATA / "codex-exec.jsonl").read_text(),
        (DATA / "codex-resume.jsonl").read_text(),
        (DATA / "codex-resume.jsonl").read_text(),
    ]
    assert [out.returncode for out in outputs] == [0, 0, 0]
    assert [json.loads(text) for text in log.read_text().splitlines()] == [
        ["exec", "--json", "-"]
    ] * 3


def test_fake_codex_unknown_session_and_exit_status(tmp_path: Path) -> None:
    """Resuming an id outside FAKE_AGENT_KNOWN_SESSIONS fails like codex; FAKE_AGENT_EXIT sets the status."""
    script = str(DATA / "codex-resume.jsonl")
    unknown = run_fake(
        FAKE_CODEX,
        ["exec", "--json", "resume", "nope", "-"],
        FAKE_AGENT_SCRIPT=script,
        FAKE_AGENT_KNOWN_SESSIONS=THREAD,
    )
    assert unknown.returncode == 1 and unknown.stdout == ""
    adapter = CodexAdapter()
    assert [adapter.parse_stderr(text).resume_failed for text in unknown.stderr.splitlines()] == [
        True
    ]
    known = run_fake(
        FAKE_CODEX,
        ["exec", "--json", "resume", THREAD, "-"],
        FAKE_AGENT_SCRIPT=script,
        FAKE_AGENT_KNOWN_SESSIONS=THREAD,
        FAKE_AGENT_EXIT="3",
    )
    assert known.returncode == 3
    assert replay(CodexAdapter(), known.stdout.splitlines())[0] == (
        "session_started",
        {"session_id": THREAD},
    )


def test_fake_codex_is_executable() -> None:
    """The fake runs as a binary (shebang and mode), as `agents.codex.bin` needs."""
    assert os.access(FAKE_CODEX, os.X_OK)
    assert FAKE_CODEX.read_text().startswith("#!/usr/bin/env python3\n")
