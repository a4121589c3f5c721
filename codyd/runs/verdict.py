"""How a run goes on after a turn, or before the next one: a pure decision (docs/events.md §4.2).

The run driver reads the facts (the record, the stop file, the clock) and
applies the :class:`Verdict`; nothing here touches a file, the store or time.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from codyd.model.record import RunRecord
from codyd.model.state import FAILED_OUTCOMES, Outcome, State
from codyd.runs.turn import TurnResult
from codyd.spec import RunSpec

MAX_BACKOFF_S = 300.0
# Errors no retry of the same run can mend by itself (docs/protocol.md §4).
NOT_RETRYABLE = frozenset({Outcome.AUTH_FAILED, "budget_exceeded"})


class Action(enum.Enum):
    GO_ON = "go_on"  # start the next turn now
    BACK_OFF = "back_off"  # start the next turn after ``delay_s``
    COMPLETE = "complete"  # the run is completed, for ``reason``
    FAIL = "fail"  # the run fails with ``error``
    INTERRUPTED = "interrupted"  # the daemon is stopping: record it, leave the run running
    STOP = "stop"  # stop driving and change nothing (another daemon's now, or not running)
    WAIT = "wait"  # wait out a limit (``reason``: rate_limited, unavailable), then go on
    PAUSE = "pause"  # the run needs a person first (``reason``: needs_auth)


@dataclass(frozen=True, slots=True)
class RunError:
    code: str
    message: str
    retryable: bool

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str | None = None
    error: RunError | None = None
    delay_s: float = 0.0

    @property
    def stops(self) -> bool:
        return self.action not in (Action.GO_ON, Action.BACK_OFF, Action.WAIT)


GO_ON = Verdict(Action.GO_ON)


@dataclass(frozen=True, slots=True)
class RunView:
    """What the decision reads of a run, taken at the moment of deciding."""

    state: State
    current_turn: int
    uncounted_turns: int
    consecutive_failures: int
    completion_detected: bool
    completion_reason: str | None
    cost_usd: float
    tokens: int
    run_seconds: float  # running time so far, pauses left out
    stop_file: bool  # completion.stop_file exists (and is not older than the run)

    @classmethod
    def of(cls, record: RunRecord, *, run_seconds: float, stop_file: bool) -> RunView:
        return cls(
            state=record.state,
            current_turn=record.current_turn,
            uncounted_turns=record.uncounted_turns,
            consecutive_failures=record.consecutive_failures,
            completion_detected=record.completion_detected,
            completion_reason=record.completion_reason,
            cost_usd=record.stats.cost_usd,
            tokens=record.stats.tokens.total,
            run_seconds=run_seconds,
            stop_file=stop_file,
        )


def before_turn(run: RunView, spec: RunSpec) -> Verdict:
    """Whether the run is done before its next turn starts (completed or over budget)."""
    return _finished(run, spec, failed=False) or GO_ON


def after_turn(
    run: RunView, spec: RunSpec, result: TurnResult, *, interrupted: bool, lease_lost: bool
) -> Verdict:
    """What follows a turn whose end is recorded already (failure counts included).

    The order matters: a daemon that stops or lost the run decides nothing; a
    binary that cannot run fails the run whatever else holds; the agent's own
    "done" (stop file, pattern) beats a failure count; reaching
    max_consecutive_failures beats reaching max_turns, and a run whose last
    turn failed does not end ``completed`` at max_turns but ``failed`` with that
    turn's error. A refused login pauses the run; a limit makes it wait.
    """
    if result.outcome == Outcome.INTERRUPTED or interrupted:
        return Verdict(Action.INTERRUPTED)
    if lease_lost or run.state is not State.RUNNING:
        return Verdict(Action.STOP)
    message = result.error_message or f"turn {run.current_turn} ended {result.outcome}"
    if result.exit_code is not None and not result.error_message:
        message += f" (exit code {result.exit_code})"
    if result.fatal:
        return _fail(Outcome.SPAWN_FAILED, message, retryable=False)
    failed = result.outcome in FAILED_OUTCOMES
    finished = _finished(run, spec, failed=failed)
    if finished is not None:
        if failed and finished.reason == "max_turns":
            return _fail(result.outcome, message, retryable=retryable(result.outcome))
        return finished
    if result.outcome == Outcome.AUTH_FAILED:
        error = RunError(Outcome.AUTH_FAILED, message, retryable=False)
        return Verdict(Action.PAUSE, reason="needs_auth", error=error)
    if result.outcome in (Outcome.RATE_LIMITED, Outcome.UNAVAILABLE):
        return Verdict(Action.WAIT, reason=result.outcome)
    if failed and run.consecutive_failures >= spec.max_consecutive_failures:
        return _fail(result.outcome, message, retryable=retryable(result.outcome))
    if run.consecutive_failures:
        delay = spec.retry_backoff_s * 2 ** (run.consecutive_failures - 1)
        return Verdict(Action.BACK_OFF, delay_s=min(MAX_BACKOFF_S, delay))
    return GO_ON


def _finished(run: RunView, spec: RunSpec, *, failed: bool) -> Verdict | None:
    reason: str | None = None
    if run.completion_detected:
        reason = run.completion_reason or "pattern"
    elif run.stop_file:
        reason = "stop_file"
    if reason is None and failed and run.consecutive_failures >= spec.max_consecutive_failures:
        return None  # the turn's outcome fails the run
    if reason is None and run.current_turn - run.uncounted_turns >= spec.max_turns:
        reason = "max_turns"
    if reason is not None:
        return Verdict(Action.COMPLETE, reason=reason)
    exceeded = _budget_exceeded(run, spec)
    if exceeded is not None:
        return _fail("budget_exceeded", exceeded, retryable=False)
    return None


def _budget_exceeded(run: RunView, spec: RunSpec) -> str | None:
    budget = spec.budget
    if budget.max_cost_usd is not None and run.cost_usd >= budget.max_cost_usd:
        return f"cost {run.cost_usd:.4f} USD reached budget.max_cost_usd={budget.max_cost_usd}"
    if budget.max_tokens is not None and run.tokens >= budget.max_tokens:
        return f"{run.tokens} tokens reached budget.max_tokens={budget.max_tokens}"
    if budget.max_duration_s is not None and run.run_seconds >= budget.max_duration_s:
        return f"run time reached budget.max_duration_s={budget.max_duration_s}"
    return None


def retryable(code: str) -> bool:
    """Whether an error of this code may go away when the run is retried as it is."""
    return code not in NOT_RETRYABLE


def _fail(code: str, message: str, *, retryable: bool) -> Verdict:
    return Verdict(Action.FAIL, error=RunError(code, message, retryable))


def budget_warnings(run: RunView, spec: RunSpec, warned: Collection[str]) -> list[dict[str, Any]]:
    """``budget_warning`` data for each budget whose use first reached ``warn_fraction``."""
    budget = spec.budget
    uses: list[tuple[str, float, float | None]] = [
        ("cost", run.cost_usd, budget.max_cost_usd),
        ("tokens", run.tokens, budget.max_tokens),
        ("duration", run.run_seconds, budget.max_duration_s),
    ]
    return [
        {"kind": kind, "used": used, "limit": limit}
        for kind, used, limit in uses
        if limit is not None and kind not in warned and used >= budget.warn_fraction * limit
    ]
