"""Reconnection delays: exponential from 0.1 s, doubling, capped at 5 s."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    first_s: float = 0.1
    cap_s: float = 5.0
    failures: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, counting one more failure."""
        delay: float = min(self.cap_s, self.first_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
