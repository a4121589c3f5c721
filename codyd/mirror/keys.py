"""The names of codyd's Redis keys, all under one prefix (docs/redis.md "Keys")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one ``key_prefix``."""

    prefix: str

    @property
    def events(self) -> str:
        """The stream of every event of every run (entry ID ``<gid>-0``)."""
        return f"{self.prefix}events"

    @property
    def runs(self) -> str:
        """The sorted set of run ids scored by creation time (unix ms)."""
        return f"{self.prefix}runs"

    def run_events(self, run_id: str) -> str:
        """The stream of one run's events (entry ID ``<seq>-0``)."""
        return f"{self.prefix}run:{run_id}:events"

    def meta(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:meta"

    def ctl(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:ctl"

    def lock(self, run_id: str) -> str:
        """The run's lease (``SET … PX``), held by one daemon at a time."""
        return f"{self.prefix}run:{run_id}:lock"

    def daemon(self, node: str) -> str:
        return f"{self.prefix}daemon:{node}"

    def marker(self, node: str) -> str:
        """A key the mirror keeps while Redis holds its data: gone means Redis lost it."""
        return f"{self.prefix}mirror:{node}"
