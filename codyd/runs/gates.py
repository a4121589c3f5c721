"""Account gates and wait times: how long a run waits out a limit (docs/protocol.md §5.10).

Runs share a limit when they share an account (the spec's ``account``). While
an account is limited until T, no turn of any of its runs starts before T.

A limit is known by its wall-clock end (``until``, what the wire and the store
carry) and waited out on trio's clock (``deadline``), so that ``MockClock``
drives every wait; the two are tied once, when the limit becomes known.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import trio

MAX_RATE_LIMIT_BACKOFF_S = 3600.0
RESET_JITTER_S = 30.0
UNAVAILABLE_BACKOFF_S = 30.0
MAX_UNAVAILABLE_BACKOFF_S = 1800.0
# A wait longer than this (at once or added up) asks a person to look (attention "waiting").
ATTENTION_AFTER_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Limit:
    until: float  # unix seconds
    deadline: float  # the same instant on trio's clock


def limit_at(until: float) -> Limit:
    """``until`` (unix seconds) as a limit, its deadline on trio's clock from now."""
    return Limit(until, trio.current_time() + max(0.0, until - time.time()))


def rate_limit_until(
    resets_at: float | None, streak: int, backoff_s: float, now: float, jitter: float | None = None
) -> float:
    """When a rate-limited run may try again.

    The agent's reset time plus 0–30 s of jitter (so that the runs of one
    account do not all start in the same second); without one, ``backoff_s``
    doubling with each limited turn in a row (``streak`` >= 1), capped at an hour.
    """
    if resets_at is not None:
        spread = random.uniform(0, RESET_JITTER_S) if jitter is None else jitter
        return max(now, resets_at) + spread
    return now + min(MAX_RATE_LIMIT_BACKOFF_S, backoff_s * 2.0 ** (max(streak, 1) - 1))


def unavailable_until(streak: int, now: float) -> float:
    """An unreachable service: 30 s, doubling for each such turn in a row, capped at 30 min."""
    return now + min(MAX_UNAVAILABLE_BACKOFF_S, UNAVAILABLE_BACKOFF_S * 2.0 ** (max(streak, 1) - 1))


class AccountGates:
    """The limits of the daemon's accounts: which is limited, until when."""

    def __init__(self) -> None:
        self._limits: dict[str, Limit] = {}

    def limit(self, account: str, until: float) -> Limit:
        """The account is limited until ``until``; a later limit already known stays."""
        current = self.limited(account)
        if current is not None and current.until >= until:
            return current
        limit = self._limits[account] = limit_at(until)
        return limit

    def limited(self, account: str) -> Limit | None:
        """The account's limit, while it lasts."""
        limit = self._limits.get(account)
        if limit is not None and limit.deadline <= trio.current_time():
            del self._limits[account]
            return None
        return limit

    def limited_until(self, account: str) -> float | None:
        limit = self.limited(account)
        return None if limit is None else limit.until

    def accounts(self) -> list[str]:
        return [account for account in list(self._limits) if self.limited(account) is not None]
