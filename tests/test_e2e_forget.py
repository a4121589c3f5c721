"""End to end: run.forget, ``codyctl forget`` and ``codyctl prune`` against a real daemon."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest
from test_e2e_codyctl import codyctl, ok

from codyd.errors import InvalidState, NotFound

from conftest import Daemon, agent


def finished_run(daemon: Daemon, run_id: str) -> None:
    daemon.start_run(agent("printer", 1), max_turns=1, run_id=run_id)
    daemon.wait_state(run_id, "completed")


def listed(daemon: Daemon) -> set[str]:
    return {run["run_id"] for run in daemon.call("run.list", {})["runs"]}


def rows_of(daemon: Daemon, run_id: str) -> dict[str, int]:
    """How many rows each table of the store holds for ``run_id`` (committed ones)."""
    conn = sqlite3.connect(f"file:{daemon.state_dir / 'codyd.db'}?mode=ro", uri=True)
    try:
        return {
            table: conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            for table in ("runs", "events", "turns")
        }
    finally:
        conn.close()


def assert_gone(daemon: Daemon, run_id: str) -> None:
    with pytest.raises(NotFound):
        daemon.call("run.status", {"run_id": run_id})
    with pytest.raises(NotFound):
        daemon.events(run_id)
    assert run_id not in listed(daemon)
    assert not (daemon.state_dir / "runs" / run_id).exists()


def test_forget_deletes_a_finished_run_for_good(daemon_factory: Callable[..., Daemon]) -> None:
    """Rows, files and indexes go; a restarted daemon does not bring the run back."""
    daemon = daemon_factory()
    finished_run(daemon, "gone")
    finished_run(daemon, "kept")
    assert (daemon.state_dir / "runs" / "gone").is_dir()
    assert rows_of(daemon, "gone")["events"] > 0
    assert daemon.call("run.forget", {"run_id": "gone"}) == {"ok": True}
    assert_gone(daemon, "gone")
    assert rows_of(daemon, "gone") == {"runs": 0, "events": 0, "turns": 0}
    assert daemon.call("run.status", {"run_id": "kept"})["state"] == "completed"
    with pytest.raises(NotFound):
        daemon.call("run.forget", {"run_id": "gone"})
    daemon.stop()
    daemon.start()
    assert_gone(daemon, "gone")
    assert listed(daemon) == {"kept"}
    assert daemon.events("kept")[-1]["type"] == "run_completed"


def test_forget_refuses_a_run_that_is_not_finished(daemon: Daemon) -> None:
    daemon.start_run(agent("sleeper"), run_id="busy", sigkill_delay_s=1)
    daemon.wait_state("busy", "running")
    with pytest.raises(InvalidState) as excinfo:
        daemon.call("run.forget", {"run_id": "busy"})
    assert excinfo.value.data["state"] == "running"
    assert daemon.call("run.status", {"run_id": "busy"})["state"] == "running"
    assert daemon.events("busy")[0]["type"] == "run_queued"
    assert (daemon.state_dir / "runs" / "busy").is_dir()
    daemon.call("run.cancel", {"run_id": "busy"})


def test_codyctl_forget_and_prune(daemon: Daemon) -> None:
    """prune --dry-run lists the finished runs only; prune then forgets exactly those."""
    finished_run(daemon, "old-a")
    finished_run(daemon, "old-b")
    live_ws = str(daemon.workspace("live-ws"))
    daemon.start_run(agent("sleeper"), run_id="live", sigkill_delay_s=1, workspace=live_ws)
    daemon.wait_state("live", "running")

    dry = json.loads(ok(codyctl(daemon, "--json", "prune", "--older-than", "0s", "--dry-run")))
    assert {run["run_id"] for run in dry} == {"old-a", "old-b"}
    assert not any(run["forgotten"] for run in dry)
    assert listed(daemon) == {"old-a", "old-b", "live"}

    out = ok(codyctl(daemon, "prune", "--older-than", "0s", "--state", "completed"))
    assert sorted(line.split()[1] for line in out.splitlines()) == ["old-a", "old-b"]
    assert listed(daemon) == {"live"}
    assert daemon.call("run.status", {"run_id": "live"})["state"] == "running"

    finished_run(daemon, "single")
    assert ok(codyctl(daemon, "forget", "single")).strip() == "single forgotten"
    assert_gone(daemon, "single")
    daemon.call("run.cancel", {"run_id": "live"})


@pytest.mark.parametrize("duration", ["7", "7w", "-1d", "1.5h", "d"])
def test_prune_rejects_a_bad_duration(daemon: Daemon, duration: str) -> None:
    result = codyctl(daemon, "prune", "--older-than", duration, "--dry-run")
    assert result.returncode == 2, result
    assert b"7d, 12h, 30m, 90s" in result.stderr
