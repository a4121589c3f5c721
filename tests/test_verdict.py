"""How a run goes on after a turn or before the next: the pure verdict (docs/events.md §4.2)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from codyd.model.record import RunRecord
from codyd.model.state import Outcome, State
from codyd.runs.turn import TurnResult
from codyd.runs.verdict import (
    MAX_BACKOFF_S,
    Action,
    RunError,
    RunView,
    Verdict,
    after_turn,
    before_turn,
    budget_warnings,
)
from codyd.spec import RunSpec, parse_run_spec


@pytest.fixture
def spec(tmp_path: Path) -> RunSpec:
    return parse_run_spec(
        {
            "workspace": str(tmp_path),
            "agent": "claude",
            "prompt": "go",
            "max_turns": 3,
            "max_consecutive_failures": 2,
            "retry_backoff_s": 4,
            "budget": {"max_cost_usd": 1.0, "max_tokens": 1000, "max_duration_s": 60},
        }
    )


def view(**changes: Any) -> RunView:
    base = RunView(
        state=State.RUNNING,
        current_turn=1,
        uncounted_turns=0,
        consecutive_failures=0,
        completion_detected=False,
        completion_reason=None,
        cost_usd=0.0,
        tokens=0,
        run_seconds=1.0,
        stop_file=False,
    )
    return dataclasses.replace(base, **changes)


def after(run: RunView, spec: RunSpec, outcome: str = "ok", **result: Any) -> Verdict:
    flags = {k: result.pop(k) for k in ("interrupted", "lease_lost") if k in result}
    turn = TurnResult(Outcome(outcome), result.pop("exit_code", 0), 5, **result)
    return after_turn(
        run,
        spec,
        turn,
        interrupted=flags.get("interrupted", False),
        lease_lost=flags.get("lease_lost", False),
    )


def test_a_good_turn_goes_on(spec: RunSpec) -> None:
    """An ok turn under every limit: the next turn starts now."""
    assert after(view(), spec) == Verdict(Action.GO_ON)
    assert before_turn(view(current_turn=0), spec) == Verdict(Action.GO_ON)


def test_interrupted_and_lost_runs_decide_nothing(spec: RunSpec) -> None:
    """A stopping daemon records an interruption; a lost lease or a left state just stops."""
    assert after(view(), spec, "interrupted").action is Action.INTERRUPTED
    assert after(view(completion_detected=True), spec, interrupted=True).action is (
        Action.INTERRUPTED
    )
    assert after(view(stop_file=True), spec, lease_lost=True) == Verdict(Action.STOP)
    assert after(view(state=State.PAUSING, stop_file=True), spec) == Verdict(Action.STOP)
    assert Verdict(Action.STOP).stops and not Verdict(Action.BACK_OFF).stops


def test_a_binary_that_cannot_run_fails_whatever_else_holds(spec: RunSpec) -> None:
    """fatal spawn_failed beats a completion: no retry can fix it."""
    verdict = after(
        view(completion_detected=True, completion_reason="pattern"),
        spec,
        "spawn_failed",
        exit_code=None,
        error_message="no such file: claude",
        fatal=True,
    )
    assert verdict == Verdict(
        Action.FAIL, error=RunError("spawn_failed", "no such file: claude", retryable=False)
    )


def test_the_agents_done_beats_a_failure_count(spec: RunSpec) -> None:
    """Stop file or pattern completes the run even on its last allowed failure."""
    stopped = view(consecutive_failures=2, stop_file=True)
    assert after(stopped, spec, "error", exit_code=1) == Verdict(
        Action.COMPLETE, reason="stop_file"
    )
    detected = view(consecutive_failures=2, completion_detected=True)
    assert after(detected, spec, "error").reason == "pattern"  # no reason recorded: a pattern
    named = view(completion_detected=True, completion_reason="stop_file", stop_file=False)
    assert after(named, spec).reason == "stop_file"


def test_too_many_failures_beat_max_turns(spec: RunSpec) -> None:
    """The last allowed failure fails the run with the turn's outcome, even at max_turns."""
    verdict = after(view(current_turn=3, consecutive_failures=2), spec, "timed_out", exit_code=None)
    assert verdict == Verdict(
        Action.FAIL, error=RunError("timed_out", "turn 3 ended timed_out", retryable=True)
    )
    with_code = after(view(consecutive_failures=2), spec, "error", exit_code=3)
    assert with_code.error is not None
    assert with_code.error.message == "turn 1 ended error (exit code 3)"
    told = after(view(consecutive_failures=2), spec, "error", exit_code=3, error_message="boom")
    assert told.error == RunError("error", "boom", retryable=True)


def test_max_turns_counts_only_counted_turns(spec: RunSpec) -> None:
    """Turns the daemon ended or that never ran do not count toward max_turns."""
    assert after(view(current_turn=3), spec) == Verdict(Action.COMPLETE, reason="max_turns")
    assert after(view(current_turn=3, uncounted_turns=1), spec) == Verdict(Action.GO_ON)
    assert before_turn(view(current_turn=3), spec).reason == "max_turns"


def test_budgets_fail_the_run(spec: RunSpec) -> None:
    """Cost, tokens and running time each fail the run with budget_exceeded, not retryable."""
    cost = before_turn(view(cost_usd=1.0), spec)
    assert cost.action is Action.FAIL and cost.error is not None
    assert cost.error.code == "budget_exceeded" and not cost.error.retryable
    assert cost.error.message == "cost 1.0000 USD reached budget.max_cost_usd=1.0"
    tokens = after(view(tokens=1000), spec)
    assert tokens.error is not None
    assert tokens.error.message == "1000 tokens reached budget.max_tokens=1000"
    duration = after(view(run_seconds=60.0), spec)
    assert duration.error is not None
    assert duration.error.message == "run time reached budget.max_duration_s=60.0"
    assert after(view(current_turn=3, cost_usd=5.0), spec).action is Action.COMPLETE


def test_a_failure_below_the_limit_backs_off_doubling(spec: RunSpec) -> None:
    """Each consecutive failure doubles the wait, up to MAX_BACKOFF_S."""
    assert after(view(consecutive_failures=1), spec, "error") == Verdict(
        Action.BACK_OFF, delay_s=4.0
    )
    # An aborted turn is no failure, yet earlier failures still hold the next turn back.
    assert after(view(consecutive_failures=1), spec, "aborted").delay_s == 4.0
    many = dataclasses.replace(spec, max_consecutive_failures=50)
    assert after(view(consecutive_failures=3), many, "error").delay_s == 16.0
    assert after(view(consecutive_failures=20), many, "error").delay_s == MAX_BACKOFF_S


def test_view_of_a_record(spec: RunSpec) -> None:
    """The view reads the record's counts and the facts the driver gathered."""
    record = RunRecord(spec=spec, node="n", created_at=time.time(), state=State.RUNNING)
    record.current_turn, record.consecutive_failures = 2, 1
    record.stats.cost_usd = 0.5
    seen = RunView.of(record, run_seconds=7.0, stop_file=True)
    assert (seen.current_turn, seen.consecutive_failures, seen.cost_usd) == (2, 1, 0.5)
    assert seen.run_seconds == 7.0 and seen.stop_file
    assert RunError("c", "m", True).to_wire() == {"code": "c", "message": "m", "retryable": True}


def test_max_turns_on_a_failed_turn_fails_with_that_turns_error(spec: RunSpec) -> None:
    """The last allowed turn failed: the run fails with its error instead of completing."""
    decision = after(
        view(current_turn=3, consecutive_failures=1), spec, "error", error_message="boom"
    )
    assert decision == Verdict(Action.FAIL, error=RunError("error", "boom", retryable=True))
    # Every turn failed, fewer turns than max_consecutive_failures: never completed.
    one = dataclasses.replace(spec, max_turns=1, max_consecutive_failures=3)
    decision = after(view(consecutive_failures=1), one, "stalled")
    assert decision.action is Action.FAIL and decision.error is not None
    assert decision.error.code == "stalled"
    # The agent's own "done" still wins over the failure.
    done = after(view(current_turn=3, consecutive_failures=1, stop_file=True), spec, "error")
    assert done == Verdict(Action.COMPLETE, reason="stop_file")


def test_a_refused_login_pauses_and_a_limit_waits(spec: RunSpec) -> None:
    """auth_failed pauses with needs_auth (not retryable); rate_limited and unavailable wait."""
    paused = after(view(), spec, "auth_failed", error_message="Invalid API key")
    assert paused.action is Action.PAUSE and paused.reason == "needs_auth" and paused.stops
    assert paused.error == RunError("auth_failed", "Invalid API key", retryable=False)
    for outcome in ("rate_limited", "unavailable"):
        waits = after(view(), spec, outcome)
        assert waits == Verdict(Action.WAIT, reason=outcome) and not waits.stops
    # A limit after failures: the failure count does not fail the run while it waits.
    assert after(view(consecutive_failures=2), spec, "rate_limited").action is Action.WAIT


def test_context_exhausted_is_counted_but_not_failed(spec: RunSpec) -> None:
    """context_exhausted goes on (the driver rotates the session); it counts toward max_turns."""
    assert after(view(), spec, "context_exhausted") == Verdict(Action.GO_ON)
    final = after(view(current_turn=3), spec, "context_exhausted")
    assert final == Verdict(Action.COMPLETE, reason="max_turns")


def test_budget_warnings_once_per_kind(spec: RunSpec) -> None:
    """Each budget warns when its use first reaches warn_fraction, and only if not yet warned."""
    run = view(cost_usd=0.8, tokens=799, run_seconds=50.0)
    found = budget_warnings(run, spec, [])
    assert found == [
        {"kind": "cost", "used": 0.8, "limit": 1.0},
        {"kind": "duration", "used": 50.0, "limit": 60.0},
    ]
    assert budget_warnings(run, spec, ["cost", "duration"]) == []
    assert budget_warnings(view(tokens=800), spec, ["cost"])[0]["kind"] == "tokens"
