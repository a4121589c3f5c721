"""End to end: event retention (``event_retention.max_runs``) deletes old runs' turn files."""

from __future__ import annotations

from collections.abc import Callable

from conftest import Daemon, agent, wait_until


def test_runs_beyond_max_runs_lose_their_turn_files(daemon_factory: Callable[..., Daemon]) -> None:
    """Of three finished runs with max_runs = 2, the oldest loses its events and turn files."""
    daemon = daemon_factory(env={"CODYD_EVENT_RETENTION__MAX_RUNS": "2"})
    runs = daemon.state_dir / "runs"
    for n in range(3):
        daemon.start_run(
            agent("printer", 1),
            run_id=f"r{n}",
            max_turns=1,
            workspace=str(daemon.workspace(f"ws{n}")),
        )
        daemon.wait_state(f"r{n}", "completed")
        assert (runs / f"r{n}" / "turns" / "1" / "stdout.log").exists()
    wait_until(lambda: not (runs / "r0").exists(), what="r0's turn files to be deleted")
    assert daemon.events("r0") == []
    snapshot = daemon.call("run.status", {"run_id": "r0"})
    assert snapshot["state"] == "completed"  # the run itself is kept
    assert (runs / "r1" / "turns" / "1").is_dir() and (runs / "r2" / "turns" / "1").is_dir()
    assert daemon.events("r1") and daemon.events("r2")
