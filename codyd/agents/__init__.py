"""Agent adapters: how each agent CLI is started and how its output is read."""

from __future__ import annotations

from codyd.agents.base import Adapter, Parsed
from codyd.agents.claude import ClaudeAdapter
from codyd.agents.codex import CodexAdapter
from codyd.agents.command import CommandAdapter

__all__ = ["Adapter", "ClaudeAdapter", "CodexAdapter", "CommandAdapter", "Parsed", "adapter_for"]


def adapter_for(agent: str) -> Adapter:
    """A new adapter for one turn of ``agent`` (``codex``, ``claude`` or ``command``)."""
    if agent == "codex":
        return CodexAdapter()
    if agent == "claude":
        return ClaudeAdapter()
    if agent == "command":
        return CommandAdapter()
    raise ValueError(f"agent {agent!r} is not supported by this codyd yet")
