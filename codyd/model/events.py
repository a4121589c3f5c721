"""Events: the one record of everything that happens to a run (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Lifecycle events only codyd itself may emit; agent output can never forge them.
LIFECYCLE_TYPES = frozenset(
    {
        "run_queued",
        "run_started",
        "run_resumed",
        "run_updated",
        "operator_message",
        "run_recovered",
        "run_pausing",
        "run_paused",
        "run_cancelling",
        "run_cancelled",
        "run_completed",
        "run_failed",
        "run_interrupted",
        "run_retried",
        "turn_started",
        "turn_completed",
    }
)

# The telemetry an agent may report itself through sentinel lines (docs/events.md §6).
SENTINEL_TYPES = frozenset(
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

# What a command agent reports about why its turn stopped: the turn's outcome, not events
# (docs/events.md §6); the run driver emits what follows from it.
REPORT_SENTINEL_TYPES = frozenset({"rate_limited", "auth_failed", "context_exhausted"})

# What the run driver emits about waits, sessions, spend and people (docs/events.md §9).
DRIVER_TYPES = frozenset({"rate_limited", "session_rotated", "budget_warning", "attention"})

EVENT_TYPES = (
    LIFECYCLE_TYPES
    | SENTINEL_TYPES
    | DRIVER_TYPES
    | frozenset(
        {
            "subprocess_output",
            "session_started",
            "resume_mismatch",
            "tool_call",
            "command",
            "completion_detected",
            "stall_detected",
            "signal_sent",
            "lease_lost",
            "control_received",
            "warning",
            "custom",
            "attention",
        }
    )
    | frozenset(
        {
            # What the agents' adapters read from their CLIs (docs/events.md §12).
            "quota",
            "permission_denied",
            "tool_failed",
            "agent_retry",
            "context_compacted",
        }
    )
)


@dataclass(frozen=True, slots=True)
class Event:
    gid: int
    run_id: str
    seq: int
    ts: float
    type: str
    turn: int | None
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "gid": self.gid,
            "run_id": self.run_id,
            "ts": self.ts,
            "type": self.type,
            "turn": self.turn,
            "data": self.data,
        }
