"""In-process, on a MockClock: run.update moves the deadlines of the turn in progress."""

from __future__ import annotations

from pathlib import Path

from test_daemon_inprocess import events, of_type, run_daemon, start_run, wait_for, wait_state

from codyd.daemon import Daemon

from conftest import agent


async def timed_out_after(daemon: Daemon, workspace: Path, first: float, then: float) -> int:
    """How long (ms of trio's clock) a silent turn ran whose turn_timeout_s went first → then."""
    await start_run(
        daemon,
        workspace,
        agent("sleeper"),
        run_id="t",
        turn_timeout_s=first,
        stall_timeout_s=3600,
        max_consecutive_failures=1,
        sigkill_delay_s=1,
    )
    # In memory, not through the store's worker threads: while a test waits on a thread the
    # clock jumps from deadline to deadline, and could pass the first timeout meanwhile.
    await wait_for(daemon, "t", lambda snapshot: snapshot["pid"] is not None)
    await daemon.supervisor.update("t", {"turn_timeout_s": then})
    final = await wait_state(daemon, "t", "failed")
    assert final["error"]["code"] == "timed_out"
    completed = of_type(await events(daemon, "t"), "turn_completed")[0].data
    assert completed["outcome"] == "timed_out"
    duration_ms: int = completed["duration_ms"]
    return duration_ms


def test_lowered_turn_timeout_counts_from_the_turn_start() -> None:
    """Two hours lowered to five minutes: the turn ends five minutes after it began."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        duration_ms = await timed_out_after(daemon, workspace, 7200, 300)
        assert 300_000 <= duration_ms < 400_000

    run_daemon(test)


def test_raised_turn_timeout_lets_the_turn_run_longer() -> None:
    """Two minutes raised to fifteen: the turn is not stopped at two."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        duration_ms = await timed_out_after(daemon, workspace, 120, 900)
        assert 900_000 <= duration_ms < 1_000_000

    run_daemon(test)
