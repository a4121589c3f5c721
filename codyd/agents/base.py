"""What every agent adapter provides (SPEC 2.5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from codyd.config import AgentConfig
from codyd.spec import RunSpec


@dataclass(slots=True)
class Parsed:
    """What an adapter made of one stdout line."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    consumed: bool = False  # True: structured data, not shown as subprocess_output
    session_id: str | None = None
    message_text: str | None = None  # assistant text, for completion.pattern


class Adapter(Protocol):
    name: str

    def argv(self, spec: RunSpec, agent: AgentConfig | None, session_id: str | None) -> list[str]:
        """The agent's argv for one turn; ``session_id`` is the session to resume, if any."""

    def parse_stdout(self, line: str) -> Parsed:
        """Read one stdout line (ANSI codes still in it)."""

    def parse_stderr(self, line: str) -> Parsed:
        """Read one stderr line."""

    def turn_error(self) -> str | None:
        """The error the agent reported during the turn, if any."""
