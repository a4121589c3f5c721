"""The generic ``command`` adapter: any program, prompt on stdin, plain text out."""

from __future__ import annotations

from codyd.agents.base import AgentReport, Parsed
from codyd.config import AgentConfig
from codyd.spec import RunSpec
from codyd.telemetry.session import find_session_id


class CommandAdapter:
    name = "command"
    resumes_sessions = False

    def argv(
        self,
        spec: RunSpec,
        agent: AgentConfig | None,
        session_id: str | None,
        *,
        max_budget_usd: float | None = None,
    ) -> list[str]:
        assert spec.command is not None, "the run spec guarantees a command for agent=command"
        return list(spec.command)

    def parse_stdout(self, line: str) -> Parsed:
        return self._parse(line)

    def parse_stderr(self, line: str) -> Parsed:
        return self._parse(line)

    def _parse(self, line: str) -> Parsed:
        # Every line of a command agent is output; a session line is also remembered.
        return Parsed(session_id=find_session_id(line))

    def finish(self, exit_code: int | None) -> AgentReport | None:
        return None
