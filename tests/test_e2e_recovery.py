"""End to end: crashes, recovery, orphans and escapees, with real processes and signals."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from conftest import Daemon, agent, pid_alive, wait_until


def kill9(daemon: Daemon) -> None:
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(10)


def test_kill9_mid_turn_then_restart_kills_orphan_and_continues(daemon: Daemon) -> None:
    """After kill -9 of codyd the surviving agent is killed at restart, its turn is lost, and the run goes on."""
    daemon.start_run(agent("sleeper"), run_id="crash", max_turns=2)
    pid = daemon.wait_event("crash", "turn_started")["data"]["pid"]
    told = daemon.events("crash")
    kill9(daemon)
    assert pid_alive(pid)  # the agent outlived the daemon
    daemon.start()
    assert not pid_alive(pid)
    events = daemon.events("crash")
    assert events[: len(told)] == told  # nothing a client was told about is lost
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    after = [e["type"] for e in events[len(told) :]]
    assert after[:2] == ["turn_completed", "run_recovered"]
    lost = events[len(told)]
    assert lost["data"]["outcome"] == "lost" and lost["turn"] == 1
    wait_until(
        lambda: daemon.call("run.status", {"run_id": "crash"})["current_turn"] == 2,
        what="a new turn after recovery",
    )
    assert not (daemon.state_dir / "runs/crash/turns/1/turn.pid").exists()
    daemon.call("run.cancel", {"run_id": "crash"})


def test_reused_pid_is_left_alone(daemon: Daemon) -> None:
    """A turn.pid naming a live process that is not the agent (different start time) is never killed."""
    daemon.start_run(agent("sleeper"), run_id="reuse")
    pid = daemon.wait_event("reuse", "turn_started")["data"]["pid"]
    kill9(daemon)
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="the agent to die")
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pid_file = daemon.state_dir / "runs/reuse/turns/1/turn.pid"
        ticks = pid_file.read_text().split()[1]
        pid_file.write_text(f"{stranger.pid}\n{ticks}\n")
        with sqlite3.connect(daemon.state_dir / "codyd.db") as conn:
            conn.execute("UPDATE turns SET pid = ? WHERE run_id = 'reuse'", (stranger.pid,))
        daemon.start()
        lost = [e for e in daemon.events("reuse") if e["type"] == "turn_completed"]
        assert lost[0]["data"]["outcome"] == "lost"
        assert stranger.poll() is None and pid_alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()
    daemon.call("run.cancel", {"run_id": "reuse"})


def test_pausing_run_recovers_as_paused(daemon: Daemon) -> None:
    """A run caught pausing by a crash is paused after restart, its agent stopped."""
    daemon.start_run(agent("sleeper"), run_id="pz")
    pid = daemon.wait_event("pz", "turn_started")["data"]["pid"]
    assert daemon.call("run.pause", {"run_id": "pz"})["state"] == "pausing"
    kill9(daemon)
    daemon.start()
    snapshot = daemon.call("run.status", {"run_id": "pz"})
    assert snapshot["state"] == "paused" and snapshot["pid"] is None
    assert not pid_alive(pid)


def test_cancelling_run_recovers_as_cancelled(daemon: Daemon, tmp_path: Path) -> None:
    """A run caught cancelling by a crash is cancelled after restart; its SIGTERM-ignoring agent is killed."""
    pids = tmp_path / "pids"
    daemon.start_run(agent("ignorer", pids), run_id="cx", sigkill_delay_s=60)
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="pids")
    assert daemon.call("run.cancel", {"run_id": "cx"})["state"] == "cancelling"
    kill9(daemon)
    daemon.start()
    final = daemon.call("run.status", {"run_id": "cx"})
    assert final["state"] == "cancelled"
    assert not any(pid_alive(int(p)) for p in pids.read_text().split())
    assert daemon.events("cx")[-1]["type"] == "run_cancelled"


def test_escapee_is_stopped_when_its_turn_ends(daemon: Daemon, tmp_path: Path) -> None:
    """A grandchild that left the group with setsid and ignores SIGTERM dies with its turn."""
    pid_file = tmp_path / "escapee"
    daemon.start_run(
        agent("daemonizer", pid_file, "exit"), run_id="esc", max_turns=1, sigkill_delay_s=0.3
    )
    final = daemon.wait_state("esc", "completed")
    escapee = int(pid_file.read_text())
    assert not pid_alive(escapee)
    assert final["stats"]["turns"] == 1
    completed = next(e for e in daemon.events("esc") if e["type"] == "turn_completed")
    assert completed["data"]["outcome"] == "ok"


def test_escapee_is_stopped_on_cancel(daemon: Daemon, tmp_path: Path) -> None:
    """Cancel stops the turn's escaped descendants too."""
    pid_file = tmp_path / "escapee"
    daemon.start_run(agent("daemonizer", pid_file, "stay"), run_id="esc2", sigkill_delay_s=0.3)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the escapee")
    escapee = int(pid_file.read_text())
    assert pid_alive(escapee) and os.getsid(escapee) == escapee
    daemon.call("run.cancel", {"run_id": "esc2"})
    daemon.wait_state("esc2", "cancelled")
    assert not pid_alive(escapee)


def test_escapee_of_a_crashed_daemon_is_stopped_at_recovery(daemon: Daemon, tmp_path: Path) -> None:
    """After kill -9, the restarted codyd finds escapees by their CODYD_RUN_ID/CODYD_TURN and stops them."""
    pid_file = tmp_path / "escapee"
    daemon.start_run(agent("daemonizer", pid_file, "stay"), run_id="esc3")
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the escapee")
    escapee = int(pid_file.read_text())
    kill9(daemon)
    daemon.start()
    assert not pid_alive(escapee)
    daemon.call("run.cancel", {"run_id": "esc3"})


def test_orphans_reparented_to_codyd_are_reaped(daemon: Daemon, tmp_path: Path) -> None:
    """codyd is a subreaper: escapees re-parented to it are reaped, not left as zombies."""
    pid_file = tmp_path / "escapee"
    daemon.start_run(agent("daemonizer", pid_file, "stay"), run_id="reap", sigkill_delay_s=0.2)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the escapee")
    escapee = int(pid_file.read_text())
    assert daemon.proc is not None
    with open(f"/proc/{escapee}/stat") as handle:
        ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
    assert ppid == daemon.proc.pid  # re-parented to codyd, the subreaper
    daemon.call("run.cancel", {"run_id": "reap"})
    daemon.wait_state("reap", "cancelled")
    wait_until(lambda: not os.path.exists(f"/proc/{escapee}"), what="the zombie to be reaped")


# The first turn sleeps (to be interrupted or lost), every later one ends at once.
SLEEPS_ONCE = ["sh", "-c", "cat >/dev/null; [ -e slept ] && exit 0; touch slept; exec sleep 60"]


def test_interrupted_last_turn_is_not_counted(daemon: Daemon) -> None:
    """max_turns=1 and its only turn interrupted by SIGTERM: after restart a new turn runs, then it completes."""
    daemon.start_run(SLEEPS_ONCE, run_id="int1", max_turns=1)
    # Stopped only once it has marked its first turn: else the next turn sleeps too.
    wait_until((daemon.workspace() / "slept").exists, what="the first turn to be under way")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    daemon.start()
    final = daemon.wait_state("int1", "completed", "failed")
    assert final["state"] == "completed" and final["completion"]["reason"] == "max_turns"
    ended = [e for e in daemon.events("int1") if e["type"] == "turn_completed"]
    assert [(e["turn"], e["data"]["outcome"]) for e in ended] == [(1, "interrupted"), (2, "ok")]


def test_lost_last_turn_is_not_counted(daemon: Daemon) -> None:
    """max_turns=1 and its only turn lost to kill -9: after restart a new turn runs, then it completes."""
    daemon.start_run(SLEEPS_ONCE, run_id="lost1", max_turns=1)
    wait_until((daemon.workspace() / "slept").exists, what="the first turn to be under way")
    kill9(daemon)
    daemon.start()
    final = daemon.wait_state("lost1", "completed", "failed")
    assert final["state"] == "completed" and final["completion"]["reason"] == "max_turns"
    ended = [e for e in daemon.events("lost1") if e["type"] == "turn_completed"]
    assert [(e["turn"], e["data"]["outcome"]) for e in ended] == [(1, "lost"), (2, "ok")]


def test_escapee_without_marks_is_stopped(daemon: Daemon, tmp_path: Path) -> None:
    """A `setsid env -i` grandchild (no CODYD_RUN_ID) re-parented to codyd is stopped; live agents are not."""
    daemon.start_run(agent("sleeper"), run_id="keeper", workspace=str(daemon.workspace("keep")))
    keeper = daemon.wait_event("keeper", "turn_started")["data"]["pid"]
    pid_file = tmp_path / "escapee"
    daemon.start_run(agent("env_escaper", pid_file, "exit"), run_id="envi", max_turns=1)
    daemon.wait_state("envi", "completed")
    escapee = int(pid_file.read_text())
    try:
        with open(f"/proc/{escapee}/environ", "rb") as handle:
            assert b"CODYD_RUN_ID" not in handle.read()  # nothing marks it as the turn's
        wait_until(lambda: not pid_alive(escapee), 15, "the unmarked escapee to be stopped")
    finally:
        kill_if_alive(escapee)
    assert pid_alive(keeper)
    assert daemon.call("run.status", {"run_id": "keeper"})["state"] == "running"
    daemon.call("run.cancel", {"run_id": "keeper"})


def test_escapee_without_marks_goes_with_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    """An unmarked escapee of a live turn does not outlive the daemon's shutdown."""
    pid_file = tmp_path / "escapee"
    daemon.start_run(agent("env_escaper", pid_file, "stay"), run_id="envs")
    wait_until(pid_file.exists, what="the escapee")
    escapee = int(pid_file.read_text())
    try:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
        assert not pid_alive(escapee)
    finally:
        kill_if_alive(escapee)


def kill_if_alive(pid: int) -> None:
    """A test that failed leaves no escapee behind."""
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_dead_lost_agent_is_logged_as_dead(daemon: Daemon) -> None:
    """Recovery says a lost turn's agent is dead, not that its pid names another process."""
    daemon.start_run(agent("sleeper"), run_id="dead")
    pid = daemon.wait_event("dead", "turn_started")["data"]["pid"]
    kill9(daemon)
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="the agent to die")
    daemon.start()
    log = daemon.log()
    assert "lost turn's agent is dead" in log
    assert "names another process" not in log
    daemon.call("run.cancel", {"run_id": "dead"})
