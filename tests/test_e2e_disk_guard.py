"""End to end: the disk guard holds new turns while the state dir's disk is low (as root)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from disk_faults import small_tmpfs

from conftest import Daemon, agent, wait_until

MIN_FREE = 8 * 1024 * 1024
GUARD = {"CODYD_MIN_FREE_BYTES": str(MIN_FREE), "CODYD_DISK_CHECK_S": "0.1"}


def leave_free(directory: Path, free: int) -> Path:
    """A file that leaves about ``free`` bytes free on ``directory``'s file system."""
    info = os.statvfs(directory)
    filler = directory / "filler"
    with filler.open("wb") as handle:
        handle.truncate(0)
        remaining = info.f_bavail * info.f_frsize - free
        while remaining > 0:
            remaining -= handle.write(b"\0" * min(remaining, 1024 * 1024))
    return filler


def status(daemon: Daemon) -> dict[str, Any]:
    return daemon.call("run.status", {"run_id": "loop"})  # type: ignore[no-any-return]


def attentions(daemon: Daemon) -> list[dict[str, Any]]:
    return [e["data"] for e in daemon.events("loop") if e["type"] == "attention"]


def wait_disk_full(daemon: Daemon) -> dict[str, Any]:
    def waiting() -> dict[str, Any] | None:
        snapshot = status(daemon)
        return snapshot if snapshot["phase"] == "waiting" else None

    snapshot = wait_until(waiting, 20, "the run to wait for disk space")
    assert snapshot["state"] == "running"
    assert snapshot["wait"] == {"reason": "disk_full", "until": None, "account": None}
    return snapshot  # type: ignore[no-any-return]


def test_low_disk_holds_new_turns_until_space_returns(daemon_factory) -> None:
    """Below min_free_bytes the run waits (one attention), pause works, and freed space
    lets it go on by itself, after a restart too; low again, cancel ends it while it waits."""
    daemon = daemon_factory(start=False, env=GUARD)
    with small_tmpfs(daemon.state_dir, "32m"):
        daemon.start()
        info = daemon.call("daemon.info")["disk"]
        assert info["free_bytes"] > MIN_FREE and info["min_free_bytes"] == MIN_FREE
        daemon.start_run(agent("printer", 0), run_id="loop", max_turns=100_000)
        daemon.wait_event("loop", "turn_completed")

        filler = leave_free(daemon.state_dir, MIN_FREE // 2)
        snapshot = wait_disk_full(daemon)
        assert snapshot["attention"]["reason"] == "disk_full"
        [attention] = attentions(daemon)
        assert attention["reason"] == "disk_full" and "min_free_bytes" in attention["message"]
        disk = daemon.call("daemon.info")["disk"]
        assert disk["low"] and disk["free_bytes"] < MIN_FREE
        assert disk["state_dir_bytes"] > filler.stat().st_size
        # Reads work; no turn starts while it waits.
        held = status(daemon)["current_turn"]
        assert daemon.call("run.list")["runs"]

        # Paused and resumed while the disk is still low: it waits again, told once only.
        paused = daemon.call("run.pause", {"run_id": "loop"})
        assert paused["state"] == "paused"
        daemon.call("run.resume", {"run_id": "loop"})
        wait_disk_full(daemon)
        assert len(attentions(daemon)) == 1
        assert status(daemon)["current_turn"] == held

        filler.unlink()
        going = wait_until(
            lambda: (s := status(daemon))["current_turn"] > held + 2 and s, 20, "turns again"
        )
        assert going["wait"] is None and going["attention"] is None
        assert not daemon.call("daemon.info")["disk"]["low"]

        # A second episode, told again; the daemon dies while the run waits (its wait is
        # stored), and the space comes back meanwhile: restarted, the run goes on by itself.
        filler = leave_free(daemon.state_dir, MIN_FREE // 2)
        wait_disk_full(daemon)
        assert len(attentions(daemon)) == 2
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()
        filler.unlink()
        daemon.start()
        held = status(daemon)["current_turn"]
        going = wait_until(
            lambda: (s := status(daemon))["current_turn"] > held + 2 and s, 20, "turns again"
        )
        assert going["wait"] is None and going["attention"] is None

        # A third one: cancel ends the waiting run.
        filler = leave_free(daemon.state_dir, MIN_FREE // 2)
        wait_disk_full(daemon)
        assert len(attentions(daemon)) == 3
        cancelled = daemon.call("run.cancel", {"run_id": "loop"})
        assert cancelled["state"] in ("cancelling", "cancelled")
        final = daemon.wait_state("loop", "cancelled")
        assert final["phase"] == "idle" and final["wait"] is None
        filler.unlink()
        daemon.stop()
