"""Account gates and wait times (codyd/runs/gates.py), on trio's clock."""

from __future__ import annotations

import time

import trio
import trio.testing

from codyd.runs.gates import (
    MAX_RATE_LIMIT_BACKOFF_S,
    RESET_JITTER_S,
    AccountGates,
    rate_limit_until,
    unavailable_until,
)


def test_a_reported_reset_gets_jitter_of_at_most_30_s() -> None:
    """until = the reported reset plus 0–30 s; a reset in the past counts from now."""
    for _ in range(100):
        until = rate_limit_until(1000.0, 1, 300, now=500.0)
        assert 1000.0 <= until <= 1000.0 + RESET_JITTER_S
    assert rate_limit_until(100.0, 1, 300, now=500.0, jitter=0) == 500.0


def test_without_a_reset_the_backoff_doubles_to_an_hour() -> None:
    """rate_limit_backoff_s, doubling per limited turn in a row, capped at 3600 s."""
    waits = [rate_limit_until(None, k, 300, now=0.0) for k in range(1, 7)]
    assert waits == [300, 600, 1200, 2400, MAX_RATE_LIMIT_BACKOFF_S, MAX_RATE_LIMIT_BACKOFF_S]


def test_unavailable_waits_30_s_doubling_to_30_min() -> None:
    """An unreachable service: 30 s, 60 s, 120 s ... never more than 30 minutes."""
    waits = [unavailable_until(k, now=0.0) for k in (1, 2, 3, 6, 7, 20)]
    assert waits == [30, 60, 120, 960, 1800, 1800]


def test_an_account_is_limited_until_its_latest_limit_passes() -> None:
    """A later limit replaces an earlier one, never the reverse; the gate opens on trio's clock."""

    async def main() -> None:
        gates = AccountGates()
        now = time.time()
        gates.limit("claude", now + 100)
        gates.limit("claude", now + 50)  # an earlier end does not shorten the wait
        assert gates.limited_until("claude") == now + 100
        assert gates.limited("codex") is None
        assert gates.accounts() == ["claude"]
        await trio.sleep(99)
        assert gates.limited("claude") is not None
        await trio.sleep(2)
        assert gates.limited("claude") is None and gates.accounts() == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
