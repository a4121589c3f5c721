"""What every agent adapter provides (docs/agents.md §9).

A new adapter object reads each turn: it may keep state across the lines of one
turn (items in progress, message ids already counted), never across turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from codyd.config import AgentConfig
from codyd.model.state import Outcome
from codyd.spec import RunSpec


@dataclass(frozen=True, slots=True)
class AgentReport:
    """The agent's own account of why its turn did not go well (docs/agents.md).

    ``outcome`` is ``error`` for an ordinary failure, or what the agent was
    stopped by: ``rate_limited``, ``auth_failed``, ``context_exhausted``,
    ``unavailable``.
    """

    outcome: Outcome
    message: str
    code: str | None = None  # the agent's own code: error_max_turns, 401, usage_limit_reached
    resets_at: float | None = None  # rate_limited: when the limit resets, unix seconds


@dataclass(slots=True)
class Parsed:
    """What an adapter made of one output line."""

    # Normalized events (docs/events.md §3) with their data; token_usage and cost data are the
    # agent's report for this turn as given (the run driver applies the usage mode).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    consumed: bool = False  # True: structured data, not shown as subprocess_output
    session_id: str | None = None  # the agent reported this session id
    message_text: str | None = None  # assistant text, matched by completion.pattern
    resume_failed: bool = False  # the agent could not resume the requested session
    # Noise of a CLI waiting for its service (codex "Reconnecting...", claude api_retry): not
    # activity for the stall watchdog (docs/agents.md §4.3).
    idle: bool = False


class Adapter(Protocol):
    name: str
    resumes_sessions: bool  # False: the agent cannot be handed a session to resume

    def argv(
        self,
        spec: RunSpec,
        agent: AgentConfig | None,
        session_id: str | None,
        *,
        max_budget_usd: float | None = None,
    ) -> list[str]:
        """The agent's argv for one turn; ``session_id`` is the session to resume, if any.

        ``max_budget_usd``: what is left of the run's cost budget, for a CLI that can be
        told (claude ``--max-budget-usd``); None to pass no budget.
        """

    def parse_stdout(self, line: str) -> Parsed:
        """Read one stdout line (ANSI codes still in it)."""

    def parse_stderr(self, line: str) -> Parsed:
        """Read one stderr line."""

    def finish(self, exit_code: int | None) -> AgentReport | None:
        """At the end of the turn: the error the agent reported (or its silence implies),
        which decides the turn's outcome even after exit 0; None if it went well.

        Also asked for a turn the stall watchdog stopped: a report of ``unavailable``,
        ``rate_limited`` or ``auth_failed`` (the agent was only retrying its service)
        replaces ``stalled``; any other is ignored there."""
