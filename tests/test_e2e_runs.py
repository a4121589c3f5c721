"""End to end: a real codyd process drives real agent subprocesses of agent="command"."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from codyd.errors import Conflict, InvalidParams, InvalidState, NotFound

from conftest import Daemon, agent, pid_alive, wait_until


def types_of(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_run_completes_after_max_turns_with_gapless_events(daemon: Daemon) -> None:
    """A run drives max_turns turns, then completes; seq runs 1, 2, 3 … with no gap."""
    snapshot = daemon.start_run(agent("printer", 3), max_turns=2, run_id="basic")
    assert snapshot["state"] == "queued" and snapshot["run_id"] == "basic"
    events = daemon.follow_until_end("basic")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    gids = [e["gid"] for e in events]
    assert gids == sorted(gids)
    kinds = types_of(events)
    assert kinds[:3] == ["run_queued", "run_started", "turn_started"]
    assert kinds[-2:] == ["completion_detected", "run_completed"]
    assert kinds.count("turn_completed") == 2
    final = daemon.call("run.status", {"run_id": "basic"})
    assert final["state"] == "completed" and final["phase"] == "idle"
    assert final["completion"] == {"detected": True, "reason": "max_turns", "line": None}
    assert final["stats"]["turns"] == 2 and final["current_turn"] == 2
    assert final["last_seq"] == events[-1]["seq"]
    turn_dir = daemon.state_dir / "runs" / "basic" / "turns" / "1"
    assert (turn_dir / "prompt.txt").read_text() == "do the work"
    assert "line 2" in (turn_dir / "stdout.log").read_text()
    assert not (turn_dir / "turn.pid").exists()


def test_start_is_idempotent_and_conflicts_on_a_different_spec(daemon: Daemon) -> None:
    """Starting an existing run_id with the same spec returns it; another spec is a conflict."""
    first = daemon.start_run(agent("sleeper"), run_id="same")
    again = daemon.start_run(agent("sleeper"), run_id="same")
    assert again["run_id"] == first["run_id"] and again["created_at"] == first["created_at"]
    with pytest.raises(Conflict):
        daemon.start_run(agent("sleeper", 1), run_id="same")
    daemon.call("run.cancel", {"run_id": "same"})


def test_busy_workspace_is_a_conflict_naming_the_holder(daemon: Daemon) -> None:
    """Only one non-terminal run per workspace; the conflict names the run holding it."""
    daemon.start_run(agent("sleeper"), run_id="holder")
    with pytest.raises(Conflict) as excinfo:
        daemon.start_run(agent("sleeper"), run_id="second")
    assert "holder" in excinfo.value.message
    daemon.call("run.cancel", {"run_id": "holder"})
    daemon.wait_state("holder", "cancelled")
    assert daemon.start_run(agent("printer"), run_id="second", max_turns=1)["state"] == "queued"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_turns": "3"}, "max_turns"),
        ({"completion": {"pattern": "("}}, "completion.pattern"),
        ({"budget": {"max_tokens": True}}, "budget.max_tokens"),
        ({"env": {"MY_KEY": 3}}, "env.MY_KEY"),
        ({"context_files": ["../outside.txt"]}, "context_files.0"),
        ({"prompt": None}, "prompt"),
        ({"prompt_file": "p.txt"}, "prompt"),
        ({"run_id": ""}, "run_id"),
        ({"watch_logs": ["/etc/passwd"]}, "watch_logs.0"),
        ({"completion": {"stop_file": "../../x"}}, "completion.stop_file"),
        ({"surprise": 1}, "surprise"),
        ({"workspace": "relative/path"}, "workspace"),
    ],
)
def test_invalid_spec_names_the_field_and_creates_nothing(
    daemon: Daemon, change: dict, field: str
) -> None:
    """An invalid run spec is refused with invalid_params naming the field; no run appears."""
    params = {"workspace": str(daemon.workspace()), "prompt": "p", "command": ["true"]}
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(InvalidParams) as excinfo:
        daemon.call("run.start", params)
    assert excinfo.value.data["field"] == field
    assert daemon.call("run.list")["runs"] == []


def test_pause_between_turns_and_resume_with_next_turn(daemon: Daemon) -> None:
    """Pause during a turn lets it finish (pausing → paused); resume starts the next turn."""
    daemon.start_run(agent("sleeper", 0.5), run_id="pz", max_turns=3)
    daemon.wait_event("pz", "turn_started")
    paused = daemon.call("run.pause", {"run_id": "pz", "reason": "lunch"})
    assert paused["state"] == "pausing"
    again = daemon.call("run.pause", {"run_id": "pz"})
    assert again["state"] in ("pausing", "paused")
    snapshot = daemon.wait_state("pz", "paused")
    assert snapshot["current_turn"] == 1 and snapshot["phase"] == "idle"
    events = daemon.events("pz")
    outcome = next(e for e in events if e["type"] == "turn_completed")["data"]["outcome"]
    assert outcome == "ok"
    control = [e["data"] for e in events if e["type"] == "control_received"]
    assert control == [{"action": "pause", "source": "rpc", "reason": "lunch"}]
    resumed = daemon.call("run.resume", {"run_id": "pz"})
    assert resumed["state"] == "running"
    wait_until(
        lambda: daemon.call("run.status", {"run_id": "pz"})["current_turn"] == 2, what="turn 2"
    )
    daemon.call("run.cancel", {"run_id": "pz"})
    final = daemon.wait_state("pz", "cancelled")
    assert final["current_turn"] == 2
    with pytest.raises(InvalidState) as excinfo:
        daemon.call("run.resume", {"run_id": "pz"})
    assert excinfo.value.data["state"] == "cancelled"


def test_pause_now_aborts_the_turn(daemon: Daemon) -> None:
    """pause now stops the live turn (outcome aborted) and the run ends up paused."""
    daemon.start_run(agent("sleeper"), run_id="pn", sigkill_delay_s=2)
    started = daemon.wait_event("pn", "turn_started")
    daemon.call("run.pause", {"run_id": "pn", "now": True})
    daemon.wait_state("pn", "paused")
    completed = next(e for e in daemon.events("pn") if e["type"] == "turn_completed")
    assert completed["data"]["outcome"] == "aborted"
    assert not pid_alive(started["data"]["pid"])


def test_cancel_kills_the_whole_group_even_sigterm_ignorers(daemon: Daemon, tmp_path: Path) -> None:
    """Cancel sends SIGTERM, then SIGKILL after sigkill_delay_s; no process of the group survives."""
    pids_file = tmp_path / "pids"
    daemon.start_run(agent("ignorer", pids_file), run_id="ig", sigkill_delay_s=0.5)
    pids = wait_until(
        lambda: [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else None,
        what="the agent and its child to start",
    )
    wait_until(lambda: len(pids_file.read_text().split()) == 2, what="both pids")
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(pid_alive(p) for p in pids)
    snapshot = daemon.call("run.cancel", {"run_id": "ig", "reason": "enough"})
    assert snapshot["state"] == "cancelling"
    final = daemon.wait_state("ig", "cancelled")
    assert final["pid"] is None
    assert not any(pid_alive(p) for p in pids)
    events = daemon.events("ig")
    signals = [e["data"]["signal"] for e in events if e["type"] == "signal_sent"]
    assert signals == ["SIGTERM", "SIGKILL"]
    kinds = types_of(events)
    assert kinds[-1] == "run_cancelled"
    assert kinds.index("turn_completed") < kinds.index("run_cancelled")
    assert events[-1]["data"]["reason"] == "enough"


def test_stop_file_completes_the_run(daemon: Daemon) -> None:
    """A stop file created during turn 2 completes the run after it with reason stop_file."""
    stop = ".cody-harness/current-epic/.stop"
    daemon.start_run(agent("stop_toucher", stop, 2), run_id="sf", max_turns=10)
    final = daemon.wait_state("sf", "completed")
    assert final["completion"]["reason"] == "stop_file"
    assert final["current_turn"] == 2


def test_pattern_completes_the_run_with_the_matching_line(daemon: Daemon) -> None:
    """completion.pattern matched on an output line completes the run after that turn."""
    daemon.start_run(
        agent("pattern_printer", 2, "ALL DONE: shipped"),
        run_id="pat",
        completion={"pattern": r"^ALL DONE", "stop_file": None},
    )
    final = daemon.wait_state("pat", "completed")
    assert final["completion"] == {
        "detected": True,
        "reason": "pattern",
        "line": "ALL DONE: shipped",
    }
    assert final["current_turn"] == 2
    detected = [e for e in daemon.events("pat") if e["type"] == "completion_detected"]
    assert detected[0]["data"] == {"reason": "pattern", "line": "ALL DONE: shipped"}


def test_max_active_runs_queues_further_runs(daemon_factory) -> None:
    """With max_active_runs = 1 a second run waits queued until the first ends."""
    daemon = daemon_factory(env={"CODYD_MAX_ACTIVE_RUNS": "1"})
    daemon.start_run(agent("sleeper"), run_id="a1")
    daemon.wait_event("a1", "turn_started")
    second = daemon.call(
        "run.start",
        {
            "workspace": str(daemon.workspace("ws2")),
            "prompt": "p",
            "command": agent("printer"),
            "max_turns": 1,
            "run_id": "a2",
        },
    )
    assert second["state"] == "queued"
    assert daemon.call("run.status", {"run_id": "a2"})["state"] == "queued"
    daemon.call("run.cancel", {"run_id": "a1"})
    daemon.wait_state("a2", "completed")


def test_agent_environment_and_prompt_with_context_files(daemon: Daemon) -> None:
    """The agent gets the spec's env and CODYD_* but not systemd's variables; prompt has context."""
    ws = daemon.workspace()
    (ws / "notes.md").write_text("remember the milk\n")
    daemon.start_run(
        agent("sleeper", 0),
        run_id="envy",
        max_turns=1,
        env={"EXTRA_TOKEN": "s3cret-value"},
        context_files=["notes.md", "missing.md"],
    )
    daemon.wait_state("envy", "completed")
    stdout = (daemon.state_dir / "runs/envy/turns/1/stdout.log").read_text()
    facts = json.loads(stdout.splitlines()[0])
    assert facts["env"]["CODYD_RUN_ID"] == "envy"
    assert facts["env"]["CODYD_TURN"] == "1"
    assert facts["env"]["CODYD_WORKSPACE"] == str(ws)
    assert facts["env"]["EXTRA_TOKEN"] == "s3cret-value"
    assert "NOTIFY_SOCKET" not in facts["env"]
    assert facts["pgid"] == facts["pid"] and facts["sid"] == facts["pid"]
    assert facts["prompt"] == "do the work\n\n## notes.md\n\nremember the milk\n"
    events = daemon.events("envy")
    warnings = [e["data"]["message"] for e in events if e["type"] == "warning"]
    assert any("missing.md" in w for w in warnings)
    queued = events[0]["data"]["spec"]
    assert queued["env"] == {"EXTRA_TOKEN": "***"}
    raw = json.dumps([e for e in events if e["type"] != "subprocess_output"])
    assert "s3cret-value" not in raw
    assert "s3cret-value" not in daemon.log()


def test_environment_of_the_daemon_supervisor_is_not_passed(daemon_factory) -> None:
    """NOTIFY_SOCKET, WATCHDOG_USEC and LISTEN_* of codyd's own supervisor never reach agents."""
    daemon = daemon_factory(env={"WATCHDOG_USEC": "99000000", "LISTEN_FDNAMES": "x"})
    daemon.start_run(agent("sleeper", 0), run_id="sv", max_turns=1)
    daemon.wait_state("sv", "completed")
    facts = json.loads(
        (daemon.state_dir / "runs/sv/turns/1/stdout.log").read_text().splitlines()[0]
    )
    assert not {"WATCHDOG_USEC", "LISTEN_FDNAMES"} & set(facts["env"])


def test_fast_output_is_paced_and_complete_in_the_log(daemon: Daemon) -> None:
    """20,000 lines: every byte is in stdout.log; output events are ≥ 100 ms apart and ≤ 2 KiB."""
    daemon.start_run(agent("printer", 20000), run_id="fast", max_turns=1)
    events = daemon.follow_until_end("fast")
    log = (daemon.state_dir / "runs/fast/turns/1/stdout.log").read_text()
    assert log.count("\n") == 20001 and "line 19999\n" in log
    output = [e for e in events if e["type"] == "subprocess_output"]
    assert output
    assert all(len(e["data"]["text"].encode()) <= 2048 for e in output)
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(output)]
    assert all(gap >= 0.099 for gap in gaps), gaps
    assert sum(e["data"].get("dropped_bytes", 0) for e in output) > 0


def test_log_files_are_capped_with_a_marker(daemon_factory) -> None:
    """Past max_turn_log_bytes the log holds one marker line with the count of bytes dropped."""
    daemon = daemon_factory(env={"CODYD_MAX_TURN_LOG_BYTES": "4096"})
    daemon.start_run(agent("printer", 2000), run_id="cap", max_turns=1)
    daemon.wait_state("cap", "completed")
    data = (daemon.state_dir / "runs/cap/turns/1/stdout.log").read_bytes()
    body, _, marker = data.rpartition(b"\n[codyd: ")
    assert len(body) == 4096
    assert b"bytes dropped]" in marker


def test_run_logs_streams_raw_output(daemon: Daemon) -> None:
    """run.logs sends the turn's bytes as chunks and ends caught_up (or turn_finished when following)."""
    daemon.start_run(agent("printer", 50), run_id="lg", max_turns=1)
    daemon.wait_state("lg", "completed")
    with daemon.client() as client:
        chunks = list(client.stream("run.logs", {"run_id": "lg", "turn": 1}))
        assert client.last_stream_result is not None
        assert client.last_stream_result["end"] == "caught_up"
        followed = list(client.stream("run.logs", {"run_id": "lg", "follow": True, "offset": 5}))
        assert client.last_stream_result["end"] == "turn_finished"
    data = b"".join(c["data"] for c in chunks)
    assert data == (daemon.state_dir / "runs/lg/turns/1/stdout.log").read_bytes()
    assert b"".join(c["data"] for c in followed) == data[5:]
    with pytest.raises(NotFound):
        daemon.call("run.logs", {"run_id": "lg", "turn": 7})


def test_missing_binary_fails_the_run_at_once(daemon: Daemon) -> None:
    """A spawn_failed for a missing binary fails the run with retryable false, no retry."""
    daemon.start_run(["/nonexistent/agent-binary"], run_id="nobin")
    final = daemon.wait_state("nobin", "failed")
    assert final["error"]["code"] == "spawn_failed"
    assert final["error"]["retryable"] is False
    assert "/nonexistent/agent-binary" in final["error"]["message"]
    assert final["stats"]["turns"] == 1


def test_failing_turns_back_off_then_fail_the_run(daemon: Daemon) -> None:
    """Failed turns back off, and max_consecutive_failures failures fail the run, retryable."""
    daemon.start_run(
        agent("failer", 7), run_id="fl", max_consecutive_failures=2, retry_backoff_s=0.2
    )
    final = daemon.wait_state("fl", "failed")
    assert final["error"]["code"] == "error" and final["error"]["retryable"] is True
    assert final["stats"]["failed_turns"] == 2
    completed = [e for e in daemon.events("fl") if e["type"] == "turn_completed"]
    assert [c["data"]["exit_code"] for c in completed] == [7, 7]
    assert "fatal: something broke" in completed[0]["data"]["stderr_tail"]
    gap = completed[1]["ts"] - completed[0]["ts"]
    assert gap >= 0.2


def test_sigterm_to_daemon_stops_live_turns(daemon: Daemon, tmp_path: Path) -> None:
    """SIGTERM to codyd stops every live turn's group, records interrupted, exits 0 and removes the socket."""
    pids_file = tmp_path / "pids"
    daemon.start_run(agent("ignorer", pids_file), run_id="shut", sigkill_delay_s=0.5)
    wait_until(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2, what="pids")
    pids = [int(p) for p in pids_file.read_text().split()]
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
    assert not any(pid_alive(p) for p in pids)
    assert not daemon.socket.exists()
    daemon.start()
    events = daemon.events("shut")
    kinds = types_of(events)
    assert "run_interrupted" in kinds
    completed = next(e for e in events if e["type"] == "turn_completed")
    assert completed["data"]["outcome"] == "interrupted"
    daemon.call("run.cancel", {"run_id": "shut"})


def test_state_dir_is_exclusive(daemon: Daemon, daemon_factory) -> None:
    """A second daemon on the same state dir exits 1 at once with a clear message."""
    import subprocess
    import sys

    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "codyd",
            "serve",
            "--state-dir",
            str(daemon.state_dir),
            "--socket",
            str(daemon.root / "other.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert other.returncode == 1
    assert "in use by another codyd" in other.stderr
    assert daemon.call("daemon.ping")["pong"] is True


def test_second_daemon_on_the_same_socket_refuses_before_touching_its_state_dir(
    daemon: Daemon,
) -> None:
    """A second codyd on a busy socket exits 1 naming the pid that listens, with no store made."""
    fresh = daemon.root / "other-state"
    other = subprocess.run(
        [sys.executable, "-m", "codyd", "serve", "--state-dir", str(fresh),
         "--socket", str(daemon.socket)],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert daemon.proc is not None
    assert other.returncode == 1
    assert f"codyd: another codyd (pid {daemon.proc.pid}) is listening on {daemon.socket}" in (
        other.stderr
    )
    assert not fresh.exists()
    assert daemon.call("daemon.ping")["pong"] is True


def test_start_up_log_gives_each_setting_its_own_key(daemon: Daemon) -> None:
    """The start-up summary is one structured event: a key per setting, secrets hidden."""
    starting = next(
        json.loads(line)
        for line in daemon.log().splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "starting"
    )
    assert starting["state_dir"] == str(daemon.state_dir)
    assert starting["socket"] == str(daemon.socket)
    assert starting["max_active_runs"] == 64
    assert "config" not in starting


def test_unknown_run_is_not_found(daemon: Daemon) -> None:
    """Status of a run that does not exist is not_found; a malformed id is invalid_params."""
    with pytest.raises(NotFound):
        daemon.call("run.status", {"run_id": "nope"})
    with pytest.raises(InvalidParams):
        daemon.call("run.status", {"run_id": "../etc"})
    assert os.path.exists(daemon.socket)


def test_list_shows_what_status_shows_however_often_it_is_asked(daemon: Daemon) -> None:
    """run.list serves each run's summary from a cache; it never lags behind run.status.

    The list is asked for over and over while runs change in every way a summary
    can (stats from sentinels, backoff after failures, pause, completion), so a
    change that failed to drop the cached summary would show at the end.
    """
    specs = {
        "ls-sent": (agent("sentinels"), {"max_turns": 2}),
        "ls-fail": (agent("failer", 5), {"max_consecutive_failures": 2, "retry_backoff_s": 0.3}),
        "ls-paus": (agent("sleeper", 0.3), {"max_turns": 5}),
    }
    for run_id, (command, spec) in specs.items():
        workspace = str(daemon.workspace(run_id))
        daemon.start_run(command, run_id=run_id, workspace=workspace, **spec)
    daemon.wait_event("ls-paus", "turn_started")
    daemon.call("run.pause", {"run_id": "ls-paus"})
    settled = {"ls-sent": ("completed",), "ls-fail": ("failed",), "ls-paus": ("paused",)}
    asked = 0

    def all_settled() -> bool:
        nonlocal asked
        summaries = daemon.call("run.list")["runs"]
        asked += 1
        return all(s["state"] in settled[s["run_id"]] for s in summaries)

    wait_until(all_settled, timeout=30, what="every run to settle")
    summaries = {s["run_id"]: s for s in daemon.call("run.list")["runs"]}
    for run_id in specs:
        status = daemon.call("run.status", {"run_id": run_id})
        assert status.pop("labels") == {}
        assert summaries[run_id] == status
    assert asked > 3
    assert summaries["ls-sent"]["stats"]["tests"]["runs"] == 3
    assert summaries["ls-fail"]["stats"]["failed_turns"] == 2
    assert summaries["ls-paus"]["phase"] == "idle"
