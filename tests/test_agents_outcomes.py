"""What stopped an agent, read from lines in the formats codex 0.171.0 and claude 2.1.332 print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from codyd.agents.base import AgentReport
from codyd.agents.claude import ClaudeAdapter
from codyd.agents.codex import CodexAdapter
from codyd.agents.reports import read_message, reset_time
from codyd.agents.usage import PER_TURN
from codyd.model.state import Outcome
from codyd.runs.pipeline import OutputSettings, Redactor, TurnOutput
from codyd.runs.turn import Turn, TurnHooks, TurnPlan, TurnResult, agent_environment

from adapter_checks import Notes

Event = tuple[str, dict[str, Any]]
SESSION = "329275ec-5665-468b-8bc4-ce826a3b1f15"
THREAD = "01a24245-ca1e-7591-b14a-4d03e6ad2f86"


def j(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def feed(adapter: ClaudeAdapter | CodexAdapter, lines: list[str]) -> list[Event]:
    events: list[Event] = []
    for text in lines:
        events += adapter.parse_stdout(text).events
    return events


# -- claude 2.1.332 ------------------------------------------------------------------------------


def api_retry(attempt: int, status: int | None, error: str) -> str:
    return j(
        {
            "type": "system",
            "subtype": "api_retry",
            "attempt": attempt,
            "max_retries": 10,
            "retry_delay_ms": 554 * attempt,
            "error_status": status,
            "error": error,
            "session_id": SESSION,
        }
    )


def synthetic(text: str, error: str, **extra: Any) -> str:
    """An assistant line claude makes up for an API error (model "<synthetic>")."""
    message = {
        "id": "186dc641-8ec7-409b-850b-b37db8e199a5",
        "model": "<synthetic>",
        "role": "assistant",
        "type": "message",
        "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return j(
        {
            "type": "assistant",
            "message": message,
            "parent_tool_use_id": None,
            "session_id": SESSION,
            "error": error,
            "is_api_error_message": True,
            **extra,
        }
    )


def result(text: str | None = None, *, is_error: bool = True, **extra: Any) -> str:
    value: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "session_id": SESSION,
        "total_cost_usd": 0,
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "modelUsage": {},
        "permission_denials": [],
        "terminal_reason": "api_error" if is_error else "completed",
        "api_error_status": None,
        **extra,
    }
    if text is not None:
        value["result"] = text
    return j(value)


def test_claude_not_logged_in() -> None:
    """claude332-new: the synthetic assistant error authentication_failed → auth_failed."""
    adapter = ClaudeAdapter()
    feed(
        adapter,
        [
            synthetic("Not logged in · Please run /login", "authentication_failed"),
            result("Not logged in · Please run /login"),
        ],
    )
    assert adapter.finish(1) == AgentReport(
        Outcome.AUTH_FAILED, "Not logged in · Please run /login", "authentication_failed"
    )


def test_claude_invalid_key_after_its_retries() -> None:
    """claude-401-long: ten api_retry lines (agent_retry, idle), then a 401 result → auth_failed."""
    adapter = ClaudeAdapter()
    retries = [adapter.parse_stdout(api_retry(n, 401, "authentication_failed")) for n in (1, 2)]
    assert all(parsed.idle and parsed.consumed for parsed in retries)
    assert retries[1].events == [
        (
            "agent_retry",
            {"attempt": 2, "delay_ms": 1108, "error_status": 401, "error": "authentication_failed"},
        )
    ]
    text = "Failed to authenticate. API Error: 401 Missing bearer or basic authentication in header"
    feed(
        adapter,
        [
            synthetic(text, "authentication_failed", api_error_status=401),
            result(text, api_error_status=401, api_error_type="invalid_request_error"),
        ],
    )
    assert adapter.finish(1) == AgentReport(Outcome.AUTH_FAILED, text, "401")


def test_claude_connection_refused_after_its_retries() -> None:
    """claude-refused-long: retries with no status, then connection_failed → unavailable."""
    adapter = ClaudeAdapter()
    text = "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"
    feed(
        adapter,
        [
            api_retry(1, None, "unknown"),
            synthetic(text, "server_error", api_error="connection_failed"),
            result(text, api_error="connection_failed"),
        ],
    )
    assert adapter.finish(1) == AgentReport(Outcome.UNAVAILABLE, text, "connection_failed")


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (401, "authentication_failed", Outcome.AUTH_FAILED),
        (429, "rate_limit", Outcome.RATE_LIMITED),
        (529, "overloaded", Outcome.UNAVAILABLE),
        (None, "unknown", Outcome.UNAVAILABLE),
    ],
)
def test_claude_stopped_while_retrying(status: int | None, error: str, outcome: Outcome) -> None:
    """A turn stopped while claude still retried its API ends with what it was retrying."""
    adapter = ClaudeAdapter()
    feed(adapter, [j({"type": "system", "subtype": "init", "session_id": SESSION})])
    feed(adapter, [api_retry(n, status, error) for n in (1, 2, 3)])
    report = adapter.finish(-15)
    assert report is not None and report.outcome == outcome
    assert "attempt 3" in report.message


def test_claude_rejected_rate_limit_event_and_usage_limit_text() -> None:
    """A rejected rate_limit_event → rate_limited at its resetsAt; an allowed one is a quota."""
    adapter = ClaudeAdapter()
    allowed = {
        "status": "allowed_warning",
        "resetsAt": 1763787600,
        "rateLimitType": "five_hour",
        "utilization": 0.91,
    }
    quota = adapter.parse_stdout(j({"type": "rate_limit_event", "rate_limit_info": allowed}))
    assert quota.events == [
        (
            "quota",
            {
                "status": "allowed_warning",
                "resets_at": 1763787600.0,
                "utilization": 0.91,
                "kind": "five_hour",
            },
        )
    ]
    rejected = {"status": "rejected", "resetsAt": 1763791200, "rateLimitType": "five_hour"}
    assert (
        adapter.parse_stdout(j({"type": "rate_limit_event", "rate_limit_info": rejected})).events
        == []
    )
    feed(adapter, [result("Claude AI usage limit reached|1763791200")])
    report = adapter.finish(1)
    assert report is not None
    assert (report.outcome, report.resets_at) == (Outcome.RATE_LIMITED, 1763791200.0)


def test_claude_rejected_but_successful_turn_is_ok() -> None:
    """A rejection the turn survived (a fallback) does not make it rate_limited."""
    adapter = ClaudeAdapter()
    rejected = {"status": "rejected", "resetsAt": 1763791200}
    feed(adapter, [j({"type": "rate_limit_event", "rate_limit_info": rejected})])
    feed(adapter, [result("done", is_error=False)])
    assert adapter.finish(0) is None


@pytest.mark.parametrize(
    ("text", "outcome", "code"),
    [
        ("You've hit your limit · resets 3pm (UTC)", Outcome.RATE_LIMITED, None),
        ("5-hour limit reached ∙ resets 11pm", Outcome.RATE_LIMITED, None),
        ("Invalid API key · Fix external API key", Outcome.AUTH_FAILED, None),
        ("OAuth token has expired. Please obtain a new token", Outcome.AUTH_FAILED, None),
        ("Prompt is too long", Outcome.CONTEXT_EXHAUSTED, None),
        ("API Error: 529 Overloaded", Outcome.UNAVAILABLE, None),
        ("something else went wrong", Outcome.ERROR, None),
    ],
)
def test_claude_result_text(text: str, outcome: Outcome, code: str | None) -> None:
    """Without a structured field, the result's words decide (docs/agents.md)."""
    adapter = ClaudeAdapter()
    feed(adapter, [result(text)])
    report = adapter.finish(1)
    assert report is not None and report.outcome == outcome and report.message == text
    if outcome == Outcome.RATE_LIMITED:
        assert report.resets_at is not None


def test_claude_error_subtypes_keep_their_code() -> None:
    """error_max_turns is an ordinary error whose code is the subtype."""
    adapter = ClaudeAdapter()
    feed(
        adapter,
        [
            j(
                {
                    "type": "result",
                    "subtype": "error_max_turns",
                    "is_error": True,
                    "session_id": SESSION,
                    "errors": ["Reached maximum number of turns (2)"],
                }
            )
        ],
    )
    assert adapter.finish(0) == AgentReport(
        Outcome.ERROR, "error_max_turns: Reached maximum number of turns (2)", "error_max_turns"
    )


def tool_use(tool_id: str, name: str, **tool_input: Any) -> str:
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}
    message = {"id": "msg_1", "role": "assistant", "content": [block]}
    return j({"type": "assistant", "message": message, "parent_tool_use_id": None})


def tool_result(tool_id: str, content: str, is_error: bool) -> str:
    block = {
        "type": "tool_result",
        "tool_use_id": tool_id,
        "content": content,
        "is_error": is_error,
    }
    return j({"type": "user", "message": {"role": "user", "content": [block]}})


def test_claude_denied_write_is_permission_denied_not_a_write() -> None:
    """claude -p without a permission mode: the Write is refused; no file_written, one denial."""
    adapter = ClaudeAdapter()
    denial = "Claude requested permissions to write to /w/a.py, but you haven't granted it yet."
    events = feed(
        adapter,
        [
            tool_use("toolu_1", "Write", file_path="/w/a.py", content="x"),
            tool_result("toolu_1", denial, True),
            result(
                "I could not write the file.",
                is_error=False,
                permission_denials=[
                    {
                        "tool_name": "Write",
                        "tool_use_id": "toolu_1",
                        "tool_input": {"file_path": "/w/a.py"},
                    },
                    {
                        "tool_name": "Edit",
                        "tool_use_id": "toolu_2",
                        "tool_input": {"file_path": "/w/b.py"},
                    },
                ],
            ),
        ],
    )
    kinds = [kind for kind, _ in events]
    assert "file_written" not in kinds
    denied = [data for kind, data in events if kind == "permission_denied"]
    assert denied == [
        {"tool": "Write", "path": "/w/a.py", "message": denial},
        {"tool": "Edit", "path": "/w/b.py", "message": "claude was not allowed to use Edit"},
    ]


def test_claude_failed_tool_and_system_reports() -> None:
    """A failing Read is tool_failed; compaction, lost writes and resets become their events."""
    adapter = ClaudeAdapter()
    events = feed(
        adapter,
        [
            tool_use("toolu_3", "Read", file_path="/w/gone.py"),
            tool_result("toolu_3", "File does not exist.", True),
            j(
                {
                    "type": "system",
                    "subtype": "compact_boundary",
                    "compact_metadata": {"trigger": "auto", "pre_tokens": 167000},
                }
            ),
            j({"type": "system", "subtype": "session_writes_lost", "message": "disk full"}),
        ],
    )
    assert events[1:] == [
        ("tool_failed", {"tool": "Read", "message": "File does not exist."}),
        ("context_compacted", {"trigger": "auto", "pre_tokens": 167000}),
        ("warning", {"message": "disk full", "code": "session_writes_lost"}),
    ]
    reset = adapter.parse_stdout(
        j({"type": "system", "subtype": "conversation_reset", "new_session_id": "new-id"})
    )
    assert reset.session_id == "new-id"
    denied = adapter.parse_stdout(
        j(
            {
                "type": "system",
                "subtype": "permission_denied",
                "tool_name": "Bash",
                "tool_use_id": "toolu_9",
                "message": "rm -rf is not allowed",
            }
        )
    )
    assert denied.events == [
        ("permission_denied", {"tool": "Bash", "path": None, "message": "rm -rf is not allowed"})
    ]


def test_claude_budget_flag_in_argv(tmp_path: Path) -> None:
    """The remaining budget goes before --resume, in plain decimals."""
    from codyd.spec import parse_run_spec

    spec = parse_run_spec({"workspace": str(tmp_path), "agent": "claude", "prompt": "go"})
    argv = ClaudeAdapter().argv(spec, None, "s1", max_budget_usd=0.99768)
    assert argv[-3:] == ["--max-budget-usd", "0.99768", "--resume=s1"]
    assert "--max-budget-usd" not in ClaudeAdapter().argv(spec, None, None)


# -- codex 0.171.0 -------------------------------------------------------------------------------


def codex_error(message: str) -> str:
    return j({"type": "error", "message": message})


RECONNECT_401 = (
    "Reconnecting... 2/5 (unexpected status 401 Unauthorized: Missing bearer or basic "
    "authentication in header, url: ws://127.0.0.1:18401/v1/responses)"
)
WAITING = "Reconnecting... waiting for network (Connection failed: error sending request)"


def test_codex_401_after_its_reconnects() -> None:
    """codex-401: Reconnecting... 401 errors (idle warnings), then turn.failed → auth_failed."""
    adapter = CodexAdapter()
    adapter.parse_stdout(j({"type": "thread.started", "thread_id": THREAD}))
    retry = adapter.parse_stdout(codex_error(RECONNECT_401))
    assert retry.idle and retry.events == [("warning", {"message": RECONNECT_401})]
    fallback = {
        "id": "item_0",
        "type": "error",
        "message": "Falling back from WebSockets to HTTPS transport. unexpected status 401",
    }
    assert adapter.parse_stdout(j({"type": "item.completed", "item": fallback})).idle
    final = "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header"
    assert not adapter.parse_stdout(codex_error(final)).idle
    adapter.parse_stdout(j({"type": "turn.failed", "error": {"message": final}}))
    assert adapter.finish(1) == AgentReport(Outcome.AUTH_FAILED, final, "401")


def test_codex_waiting_for_network_forever_is_unavailable() -> None:
    """codex-new-long: nothing but reconnect noise; stopped by the watchdog → unavailable."""
    adapter = CodexAdapter()
    assert not adapter.parse_stdout(j({"type": "thread.started", "thread_id": THREAD})).idle
    assert not adapter.parse_stdout(j({"type": "turn.started"})).idle
    assert all(adapter.parse_stdout(codex_error(WAITING)).idle for _ in range(3))
    stderr = (
        "2026-12-04T18:13:25.478664Z ERROR codex_api::endpoint::responses_websocket: "
        "failed to connect to Responses WebSocket stage=Unknown"
    )
    assert adapter.parse_stderr(stderr).idle
    report = adapter.finish(-15)
    assert report is not None and report.outcome == Outcome.UNAVAILABLE
    assert WAITING in report.message


def test_codex_work_after_reconnects_is_no_longer_noise() -> None:
    """An item after the retries means codex got through: its end is judged as usual."""
    adapter = CodexAdapter()
    adapter.parse_stdout(codex_error(WAITING))
    message = {"id": "item_1", "type": "agent_message", "text": "hi"}
    assert not adapter.parse_stdout(j({"type": "item.completed", "item": message})).idle
    assert adapter.finish(-15) is None


@pytest.mark.parametrize(
    ("message", "outcome", "code"),
    [
        (
            "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to "
            "purchase more credits or try again at 4:12 PM.",
            Outcome.RATE_LIMITED,
            None,
        ),
        (
            json.dumps(
                {
                    "error": {
                        "type": "usage_limit_reached",
                        "message": "The usage limit has been reached",
                        "resets_in_seconds": 3600,
                    }
                }
            ),
            Outcome.RATE_LIMITED,
            "usage_limit_reached",
        ),
        ("exceeded retry limit, last status: 429 Too Many Requests", Outcome.RATE_LIMITED, "429"),
        (
            "Your refresh token has already been used. Please run codex login",
            Outcome.AUTH_FAILED,
            None,
        ),
        (
            "Your input exceeds the context window of this model (context_length_exceeded)",
            Outcome.CONTEXT_EXHAUSTED,
            None,
        ),
        (
            "Codex ran out of room in the model's context window. Start a new thread or clear "
            "earlier history before retrying.",
            Outcome.CONTEXT_EXHAUSTED,
            None,
        ),
        ("unexpected status 503 Service Unavailable", Outcome.UNAVAILABLE, "503"),
        ("the model refused", Outcome.ERROR, None),
    ],
)
def test_codex_turn_failed(message: str, outcome: Outcome, code: str | None) -> None:
    """turn.failed: a code and reset from its JSON body first, then its words (docs/agents.md)."""
    adapter = CodexAdapter()
    adapter.parse_stdout(j({"type": "thread.started", "thread_id": THREAD}))
    adapter.parse_stdout(j({"type": "turn.failed", "error": {"message": message}}))
    report = adapter.finish(1)
    assert report is not None
    assert (report.outcome, report.code) == (outcome, code)
    if outcome == Outcome.RATE_LIMITED and code != "429":
        assert report.resets_at is not None


def test_codex_sandbox_rejection_and_failed_mcp_call() -> None:
    """A read-only sandbox's refusal on stderr → permission_denied; a failed MCP call → tool_failed."""
    adapter = CodexAdapter()
    line = (
        "2026-12-04T18:17:47.023441Z ERROR codex_core::tools::router: error=patch rejected: "
        "writing is blocked by read-only sandbox; rejected by user approval settings"
    )
    assert adapter.parse_stderr(line).events == [
        (
            "permission_denied",
            {
                "tool": "apply_patch",
                "path": None,
                "message": "error=patch rejected: writing is blocked by read-only sandbox; "
                "rejected by user approval settings",
            },
        )
    ]
    item = {
        "id": "item_4",
        "type": "mcp_tool_call",
        "server": "docs",
        "tool": "search",
        "arguments": {"q": "x"},
        "status": "failed",
        "error": {"message": "server exited"},
    }
    events = adapter.parse_stdout(j({"type": "item.completed", "item": item})).events
    assert events[-1] == ("tool_failed", {"tool": "mcp__docs__search", "message": "server exited"})


def test_reset_times_in_text() -> None:
    """Epochs, spans and clock times (the next one to come) are reset times."""
    now = 1_800_000_000.0  # 2027-01-15 08:00 UTC
    assert reset_time("limit reached|1800003600", now) == 1800003600.0
    assert reset_time("try again in 2 hours 5 minutes", now) == now + 7500
    at = reset_time("resets 9am (UTC)", now)
    assert at == now + 3600
    tomorrow = reset_time("resets 7am (UTC)", now)
    assert tomorrow == now + 23 * 3600
    assert read_message("line 512 of the log") is None


# -- the pipeline: idle lines and stalled turns ------------------------------------------------


def turn_output(adapter: ClaudeAdapter | CodexAdapter) -> TurnOutput:
    settings = OutputSettings(adapter.name, None, PER_TURN, 1 << 16)
    return TurnOutput(
        adapter,
        settings,
        Notes(),
        Redactor((), lambda t, d: None),
        lambda d: None,
        lambda: None,
        None,
    )


def test_feed_says_whether_output_was_activity() -> None:
    """Only complete idle lines are no activity; a line still open is."""
    output = turn_output(CodexAdapter())
    assert output.feed("stdout", (codex_error(WAITING) + "\n").encode()) is False
    assert output.feed("stdout", b'{"type":"turn.started"}\n') is True
    assert output.feed("stdout", b'{"type":"err') is True
    assert output.feed("stdout", b'or","message":"Reconnecting... 1/5"}\n') is False


def test_conclude_turns_a_stall_of_reconnects_into_unavailable() -> None:
    """A stalled turn whose agent only retried its service is unavailable; other stalls stay."""
    output = turn_output(CodexAdapter())
    output.feed("stdout", (codex_error(WAITING) + "\n").encode())
    stalled = TurnResult(Outcome.STALLED, -15, 1000)
    output.conclude(stalled)
    assert stalled.outcome == Outcome.UNAVAILABLE and stalled.error_code == "reconnecting"
    quiet = turn_output(ClaudeAdapter())
    still = TurnResult(Outcome.STALLED, -15, 1000)
    quiet.conclude(still)
    assert still.outcome == Outcome.STALLED


RECONNECTS = (
    "import json, sys, time\n"
    "print(json.dumps({'type': 'thread.started', 'thread_id': 't'}), flush=True)\n"
    "while True:\n"
    "    print(json.dumps({'type': 'error', 'message': 'Reconnecting... waiting for network'}),"
    " flush=True)\n"
    "    time.sleep(0.02)\n"
)


def test_reconnect_noise_is_no_activity_for_the_stall_watchdog(tmp_path: Path) -> None:
    """A real process printing only reconnect errors is stopped at stall_timeout_s: unavailable."""
    events: list[Event] = []
    output = turn_output(CodexAdapter())
    plan = TurnPlan(
        run_id="noise",
        n=1,
        argv=[sys.executable, "-c", RECONNECTS],
        cwd=str(tmp_path),
        env=agent_environment(dict(os.environ), {}, "noise", 1, str(tmp_path)),
        prompt=b"",
        turn_dir=tmp_path / "turn",
        max_log_bytes=1 << 20,
        max_line_bytes=1 << 16,
        turn_timeout_s=30,
        stall_timeout_s=0.5,
        sigkill_delay_s=1.0,
    )
    turn = Turn(
        plan,
        TurnHooks(
            on_started=lambda pid, ticks: None,
            on_output=output.feed,
            on_activity=lambda: None,
            on_event=lambda type_, data: events.append((type_, data)),
        ),
    )

    async def main() -> TurnResult:
        with trio.fail_after(20):
            return await turn.run()

    result = trio.run(main)
    assert result.outcome == Outcome.STALLED
    assert "stall_detected" in [type_ for type_, _ in events]
    output.conclude(result)
    assert result.outcome == Outcome.UNAVAILABLE


@pytest.mark.parametrize(
    ("sentinel", "outcome", "resets_at"),
    [
        (
            {"type": "rate_limited", "resets_at": 1800000000, "message": "5-hour limit"},
            Outcome.RATE_LIMITED,
            1800000000,
        ),
        ({"type": "auth_failed", "message": "token expired"}, Outcome.AUTH_FAILED, None),
        ({"type": "context_exhausted"}, Outcome.CONTEXT_EXHAUSTED, None),
    ],
)
def test_command_agent_reports_its_outcome_by_sentinel(
    sentinel: dict[str, Any], outcome: Outcome, resets_at: float | None
) -> None:
    """A command agent's outcome sentinel decides its turn whatever the exit status; no event."""
    events: list[Event] = []
    from codyd.agents.command import CommandAdapter

    settings = OutputSettings("command", None, PER_TURN, 1 << 16)
    output = TurnOutput(
        CommandAdapter(),
        settings,
        Notes(),
        Redactor((), lambda t, d: events.append((t, d))),
        lambda d: None,
        lambda: None,
        None,
    )
    output.feed("stdout", (json.dumps({"__cody_event__": sentinel}) + "\n").encode())
    assert events == []
    result = TurnResult(Outcome.OK, 0, 10)
    output.conclude(result)
    assert (result.outcome, result.resets_at, result.error_code) == (
        outcome,
        resets_at,
        sentinel["type"],
    )


def test_a_bad_outcome_sentinel_is_custom() -> None:
    """A rate_limited sentinel with a reset that is no number stays a custom event."""
    events: list[Event] = []
    from codyd.agents.command import CommandAdapter

    output = TurnOutput(
        CommandAdapter(),
        OutputSettings("command", None, PER_TURN, 1 << 16),
        Notes(),
        Redactor((), lambda t, d: events.append((t, d))),
        lambda d: None,
        lambda: None,
        None,
    )
    bad = {"__cody_event__": {"type": "rate_limited", "resets_at": "soon"}}
    output.feed("stdout", (json.dumps(bad) + "\n").encode())
    assert [type_ for type_, _ in events] == ["custom"]
    result = TurnResult(Outcome.ERROR, 1, 10)
    output.conclude(result)
    assert result.outcome == Outcome.ERROR
