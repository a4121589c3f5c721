"""What a turn's output means: the processors of the output pipeline, each alone and chained."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from codyd.agents import adapter_for
from codyd.agents.claude import ClaudeAdapter
from codyd.agents.usage import PER_TURN, UsageRules
from codyd.model.record import RunRecord
from codyd.model.state import Outcome
from codyd.runs.pipeline import (
    OutputPipeline,
    OutputSettings,
    Redactor,
    RunEvents,
    SessionTotals,
    TurnOutput,
    workspace_relative,
)
from codyd.runs.turn import TurnResult
from codyd.spec import parse_run_spec

from adapter_checks import Notes

Event = tuple[str, dict[str, Any]]
SESSION = "5e0c9a3b-7d21-4f68-b1e4-8a2f6c0d3e97"
OTHER = "0b6f1b8e-3a0c-4d1e-9f52-7c3e2a1d4b60"


class Harness:
    """A turn's pipeline whose events, output events and saves are kept for the test."""

    def __init__(
        self,
        agent: str = "command",
        pattern: str | None = None,
        totals: bool = False,
        requested: str | None = None,
        secrets: tuple[str, ...] = (),
        max_line_bytes: int = 1 << 16,
        session: str | None = None,
    ) -> None:
        self.events: list[Event] = []
        self.output: list[dict[str, Any]] = []
        self.saves = 0
        self.notes = Notes(session_id=session)
        usage = UsageRules("session_total", "session_total") if totals else PER_TURN
        settings = OutputSettings(agent, pattern, usage, max_line_bytes)
        self.turn = TurnOutput(
            adapter_for(agent),
            settings,
            self.notes,
            Redactor(secrets, lambda type_, data: self.events.append((type_, data))),
            self.output.append,
            self._save,
            requested_session=requested,
        )

    def _save(self) -> None:
        self.saves += 1

    def feed(self, *lines: str, stream: str = "stdout") -> None:
        for text in lines:
            self.turn.feed(stream, text.encode() + b"\n")

    def types(self) -> list[str]:
        return [type_ for type_, _ in self.events]

    def drain(self) -> None:
        async def main() -> None:
            with trio.fail_after(5):
                await self.turn.flush()

        trio.run(main)


def sentinel(type_: str, **data: Any) -> str:
    return json.dumps({"__cody_event__": {"type": type_, **data}})


def claude_init(session: str) -> str:
    return json.dumps({"type": "system", "subtype": "init", "session_id": session})


# -- bytes in, lines out, offsets --------------------------------------------------------------


def test_offset_counts_bytes_read_as_whole_lines() -> None:
    """The offset stops before an unfinished line and reaches the end once the stream ends."""
    seen: list[tuple[str, bytes, bool]] = []

    def keep(line: Any) -> None:
        seen.append((line.stream, line.raw, line.split))

    pipeline = OutputPipeline([keep], max_line_bytes=1024)
    pipeline.feed("stdout", b"one\ntw")
    assert pipeline.offset("stdout") == 4
    assert pipeline.offset("stderr") == 0
    pipeline.feed("stdout", b"o\r\nthr")
    assert pipeline.offset("stdout") == 9
    pipeline.feed("stderr", b"err\n")
    pipeline.feed("stdout", b"")
    assert pipeline.offset("stdout") == 12
    assert pipeline.offset("stderr") == 4
    assert seen == [
        ("stdout", b"one", False),
        ("stdout", b"two", False),
        ("stderr", b"err", False),
        ("stdout", b"thr", False),
    ]


def test_a_processor_returning_none_ends_the_line_there() -> None:
    """Processors run in order; one that uses a line up keeps it from those after it."""
    order: list[str] = []

    def first(line: Any) -> Any:
        order.append("first:" + line.text)
        return None if line.text == "stop" else line

    def second(line: Any) -> Any:
        order.append("second:" + line.text)
        return line

    pipeline = OutputPipeline([first, second], max_line_bytes=1024)
    pipeline.feed("stdout", b"go\nstop\n")
    assert order == ["first:go", "second:go", "first:stop"]


# -- processors ---------------------------------------------------------------------------------


def test_sentinel_is_its_event_and_never_output() -> None:
    """A sentinel line becomes its event; it is not shown as subprocess_output."""
    run = Harness()
    run.feed(sentinel("progress", message="half way"), "plain text")
    assert run.events[0][0] == "custom"  # a type outside SENTINEL_TYPES
    assert run.turn.pump.has_pending()
    run.drain()
    assert [o["text"] for o in run.output] == ["plain text\n"]


def test_a_split_line_warns_once_and_is_never_a_sentinel() -> None:
    """Lines cut at max_line_bytes warn once per turn; a cut sentinel stays text."""
    run = Harness(max_line_bytes=300)
    long_sentinel = sentinel("progress", message="x" * 400)
    run.feed(long_sentinel, "y" * 700)
    assert run.types() == ["warning"]
    assert "max_line_bytes=300" in run.events[0][1]["message"]
    run.drain()
    assert "".join(o["text"] for o in run.output).startswith(long_sentinel[:100])


def test_text_test_summaries_count_until_a_sentinel_reports_tests() -> None:
    """A pytest summary in plain output is a test run; after a test sentinel, it is not."""
    run = Harness()
    run.feed("============ 3 passed, 1 failed in 0.50s ============")
    run.turn.test_summaries.flush()
    summaries = [d for t, d in run.events if t == "test_run_completed"]
    assert [(d["passed"], d["failed"]) for d in summaries] == [(3, 1)]
    run.feed(sentinel("test_run_completed", passed=5, failed=0))
    assert run.notes.sentinel_tests
    run.feed("============ 9 passed in 0.50s ============")
    run.turn.test_summaries.flush()
    counts = [(d["passed"], d["failed"]) for t, d in run.events if t == "test_run_completed"]
    assert counts == [(3, 1), (5, 0)]


def test_completion_pattern_in_a_command_output_is_noted_once() -> None:
    """For agent=command the plain output is matched; the first match is kept and saved."""
    run = Harness(pattern=r"ALL DONE")
    run.feed("working", "\x1b[32mALL DONE\x1b[0m here", "ALL DONE again")
    assert run.notes.completion_detected
    assert run.notes.completion_reason == "pattern"
    assert run.notes.completion_line == "ALL DONE here"
    assert run.saves == 1


def test_completion_pattern_of_an_agent_is_matched_in_its_messages_only() -> None:
    """For a structured agent only its message text counts, not the JSON around it."""
    run = Harness(agent="claude", pattern=r"ALL DONE")
    run.feed(json.dumps({"type": "system", "subtype": "init", "note": "ALL DONE"}))
    assert not run.notes.completion_detected
    message = {"type": "assistant", "message": {"content": [{"type": "text", "text": "ALL DONE"}]}}
    run.feed(json.dumps(message))
    assert run.notes.completion_line == "ALL DONE"


def test_sessions_are_announced_once_and_a_resumed_one_must_match() -> None:
    """Each session id is announced once a turn; one not asked for is a resume_mismatch."""
    run = Harness(agent="claude", requested=OTHER)
    run.feed(claude_init(SESSION), claude_init(SESSION))
    assert run.events == [
        ("resume_mismatch", {"requested": OTHER, "observed": SESSION}),
        ("session_started", {"session_id": SESSION}),
    ]
    assert run.notes.session_id == SESSION


def test_session_totals_become_increments() -> None:
    """usage=session_total: each report adds what the session grew by, from zero per session."""
    notes = Notes(session_id=SESSION)
    totals = SessionTotals(notes)
    assert totals("token_usage", {"input": 10, "output": 5, "cached": 0}) == {
        "input": 10,
        "output": 5,
        "cached": 0,
    }
    assert totals("token_usage", {"input": 25, "output": 5, "cached": 2})["input"] == 15
    assert totals("cost", {"usd": 0.5}) == {"usd": 0.5}
    notes.session_id = OTHER
    assert totals("cost", {"usd": 0.2}) == {"usd": 0.2}
    assert notes.usage_baseline == {"session_id": OTHER, "usd": 0.2}


def test_conclude_takes_the_adapters_error_and_forgets_a_lost_session() -> None:
    """An error the agent reported fails an exit-0 turn; a session it could not resume is dropped."""
    run = Harness(agent="command", requested=SESSION, session=SESSION)
    run.turn.adapter_events.resume_failed = True
    result = TurnResult(Outcome.OK, 0, 10)
    run.turn.conclude(result)
    assert run.notes.session_id is None
    assert run.types() == ["warning"]
    assert SESSION in run.events[0][1]["message"]
    assert (result.outcome, result.error_message) == ("ok", None)
    failing = Harness(agent="claude")
    failing.feed(
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True}),
    )
    result = TurnResult(Outcome.OK, 0, 10)
    failing.turn.conclude(result)
    assert result.outcome == "error" and result.error_message


def test_output_is_paced_redacted_and_flushed() -> None:
    """Unconsumed lines become subprocess_output with secrets replaced; flush empties the queue."""
    run = Harness(secrets=("hunter2-secret",))
    run.feed("password is hunter2-secret", stream="stderr")
    run.feed("hello")
    run.drain()
    assert run.output == [
        {"stream": "stderr", "text": "password is ***\n"},
        {"stream": "stdout", "text": "hello\n"},
    ]
    assert not run.turn.pump.has_pending()


def test_redactor_spares_lifecycle_events() -> None:
    """Telemetry data is redacted; lifecycle events (the daemon's own) pass as they are."""
    seen: list[Event] = []
    emit = Redactor(("s3cr3t-value",), lambda type_, data: seen.append((type_, data)))
    emit("message", {"role": "assistant", "text": "key s3cr3t-value"})
    emit("run_failed", {"text": "s3cr3t-value"})
    assert seen == [
        ("message", {"role": "assistant", "text": "key ***"}),
        ("run_failed", {"text": "s3cr3t-value"}),
    ]
    assert emit.text("a s3cr3t-value b") == "a *** b"


def test_run_events_count_and_relativize(tmp_path: Path) -> None:
    """The sink makes paths workspace-relative and counts usage for the run and the turn."""
    spec = parse_run_spec({"workspace": str(tmp_path), "agent": "claude", "prompt": "go"})
    record = RunRecord(spec=spec, node="n", created_at=time.time())
    appended: list[Event] = []
    sink = RunEvents(record, lambda type_, data: appended.append((type_, data)))
    sink("file_written", {"path": f"{tmp_path}/src/a.py"})
    sink("token_usage", {"input": 3, "output": 4, "cached": 1})
    sink("cost", {"usd": 0.25})
    assert appended[0] == ("file_written", {"path": "src/a.py"})
    assert record.stats.files_written == 1
    assert record.stats.tokens.total == sink.turn_tokens.total > 0
    assert record.stats.cost_usd == sink.turn_cost == 0.25
    sink.new_turn()
    assert sink.turn_cost == 0.0 and sink.turn_tokens.total == 0
    assert workspace_relative("/elsewhere/x", str(tmp_path)) == "/elsewhere/x"
    assert workspace_relative("a/../b", str(tmp_path)) == "b"


def test_claude_adapter_lines_through_the_chain() -> None:
    """Structured lines are consumed: events out, nothing shown as output."""
    run = Harness(agent="claude")
    assert isinstance(run.turn.adapter_events._adapter, ClaudeAdapter)
    run.feed(claude_init(SESSION))
    run.drain()
    assert run.types() == ["session_started"]
    assert run.output == []


def sentinel_text(**event: Any) -> str:
    return json.dumps({"__cody_event__": event})


@pytest.mark.parametrize("exit_code", [0, 1])
def test_a_report_sentinel_decides_the_outcome_whatever_the_exit_status(exit_code: int) -> None:
    """rate_limited / auth_failed / context_exhausted sentinels are the turn's outcome, no event."""
    run = Harness(agent="command")
    run.feed(
        sentinel_text(type="auth_failed", message="first"),
        sentinel_text(type="rate_limited", resets_at=1800000000, message="usage limit"),
    )
    assert run.types() == [] and run.output == []
    outcome = Outcome.OK if exit_code == 0 else Outcome.ERROR
    result = TurnResult(outcome, exit_code, 10)
    run.turn.conclude(result)
    assert (result.outcome, result.error_message) == ("rate_limited", "usage limit")
    assert (result.error_code, result.resets_at) == ("rate_limited", 1800000000.0)


def test_a_report_sentinel_beats_the_adapters_error_but_not_the_daemons_stop() -> None:
    """The sentinel overrides what the adapter concluded; a turn the daemon aborted stays so."""
    run = Harness(agent="claude")
    run.feed(
        sentinel_text(type="context_exhausted"),
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True}),
    )
    result = TurnResult(Outcome.OK, 0, 10)
    run.turn.conclude(result)
    assert result.outcome == "context_exhausted" and result.error_message
    aborted = Harness(agent="command")
    aborted.feed(sentinel_text(type="auth_failed"))
    result = TurnResult(Outcome.ABORTED, None, 10)
    aborted.turn.conclude(result)
    assert result.outcome == "aborted"
