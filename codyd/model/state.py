"""The run state machine (docs/protocol.md §5.6): which state may follow which; turn outcomes."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"


class Phase(StrEnum):
    IDLE = "idle"
    IN_TURN = "in_turn"
    BETWEEN_TURNS = "between_turns"
    BACKOFF = "backoff"
    WAITING = "waiting"  # a limit, a login or the disk holds the next turn (record.wait says why)


class Outcome(StrEnum):
    """How a turn ended (docs/events.md §4.1); the value is what the wire and the store carry."""

    OK = "ok"
    ERROR = "error"
    STALLED = "stalled"
    TIMED_OUT = "timed_out"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"
    SPAWN_FAILED = "spawn_failed"
    LOST = "lost"
    # What the agent itself reported stopped it (docs/agents.md); none is a failed turn.
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    CONTEXT_EXHAUSTED = "context_exhausted"
    UNAVAILABLE = "unavailable"


# Turn outcomes that count as failures (toward max_consecutive_failures, with backoff).
FAILED_OUTCOMES = frozenset(
    {Outcome.ERROR, Outcome.STALLED, Outcome.TIMED_OUT, Outcome.SPAWN_FAILED}
)
# Not counted toward max_turns: the daemon ended the turn, or no agent ran (docs/events.md §4.1).
# A limit, a refused login or an unreachable service did no work either.
UNCOUNTED_OUTCOMES = frozenset(
    {
        Outcome.INTERRUPTED,
        Outcome.LOST,
        Outcome.SPAWN_FAILED,
        Outcome.RATE_LIMITED,
        Outcome.AUTH_FAILED,
        Outcome.UNAVAILABLE,
    }
)

TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})
# The last event of every run that ends, one per terminal state.
TERMINAL_EVENTS = ("run_completed", "run_failed", "run_cancelled")

# Every transition codyd ever makes. Anything else is a bug, refused by the store's
# compare-and-set. "paused -> queued" is codyd's choice for a resume that finds every
# slot of max_active_runs taken: the run waits its turn like a new one.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.PAUSED, State.CANCELLING, State.CANCELLED}),
    State.RUNNING: frozenset(
        {State.PAUSING, State.PAUSED, State.CANCELLING, State.COMPLETED, State.FAILED}
    ),
    State.PAUSING: frozenset({State.RUNNING, State.PAUSED, State.CANCELLING, State.FAILED}),
    State.PAUSED: frozenset({State.RUNNING, State.QUEUED, State.CANCELLING, State.CANCELLED}),
    State.CANCELLING: frozenset({State.CANCELLED}),
    State.CANCELLED: frozenset(),
    State.COMPLETED: frozenset(),
    # run.retry: a failed run drives again (or waits for a slot, like a new run).
    State.FAILED: frozenset({State.RUNNING, State.QUEUED}),
}


def can_transition(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]
