"""Agent adapters: how each agent CLI is started and how its output is read."""

from __future__ import annotations

from codyd.agents.base import Adapter, Parsed
from codyd.agents.command import CommandAdapter

__all__ = ["Adapter", "CommandAdapter", "Parsed", "adapter_for"]


def adapter_for(agent: str) -> Adapter:
    if agent == "command":
        return CommandAdapter()
    raise ValueError(f"agent {agent!r} is not supported by this codyd yet")
