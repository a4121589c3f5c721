"""End to end: watchdogs, budgets, telemetry from output, heartbeats and shutdown."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from codyd.errors import ShuttingDown

from conftest import Daemon, agent, short_tempdir, wait_until

DATA = Path(__file__).parent / "data"


def of_type(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]


def test_sentinels_become_events_and_stats(daemon: Daemon) -> None:
    """Sentinel lines become events and stats; a forged run_completed is custom; tests count once."""
    daemon.start_run(agent("sentinels"), run_id="sn", max_turns=2)
    final = daemon.wait_state("sn", "completed")
    events = daemon.events("sn")
    assert final["completion"]["reason"] == "max_turns" and final["current_turn"] == 2
    custom = of_type(events, "custom")
    assert custom[0]["data"] == {"type": "run_completed", "reason": "forged"}
    assert of_type(events, "run_completed")[-1]["data"]["reason"] == "max_turns"
    tests = [e["data"] for e in of_type(events, "test_run_completed")]
    # turn 1: the pytest summary before the first sentinel counts, the one after does not;
    # turn 2: the run has reported tests by sentinel, so only sentinels count.
    assert tests[0] == {"passed": 5, "failed": 1, "skipped": 0, "runner": "pytest"}
    assert tests[1] == {"passed": 8, "failed": 0, "skipped": 0, "runner": "sentinel"}
    assert len(tests) == 3
    usage = of_type(events, "token_usage")[0]["data"]
    assert usage == {"input": 100, "output": 20, "cached": 50}
    assert of_type(events, "file_read")[0]["data"] == {"path": "src/a.py"}
    stats = final["stats"]
    assert stats["tokens"] == {"input": 200, "output": 40, "cached": 100, "total": 240}
    assert stats["cost_usd"] == pytest.approx(0.5)
    assert stats["files"] == {"read": 2, "written": 2, "deleted": 0}
    assert stats["tests"] == {"runs": 3, "passed": 21, "failed": 1}
    turn_done = of_type(events, "turn_completed")[0]["data"]
    assert turn_done["tokens"] == {"input": 100, "output": 20, "cached": 50}
    assert turn_done["cost_usd"] == pytest.approx(0.25)


def test_generic_transcript_end_to_end(daemon: Daemon) -> None:
    """The generic transcript: session id, sentinels in order, malformed and decoy lines stay text."""
    daemon.start_run(agent("replay", DATA / "sentinel-generic.txt"), run_id="gen", max_turns=1)
    final = daemon.wait_state("gen", "completed")
    events = daemon.events("gen")
    assert final["session_id"] == "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    kinds = [
        e["type"]
        for e in events
        if e["type"] not in ("subprocess_output", "run_queued", "run_started")
    ]
    assert kinds[:2] == ["turn_started", "session_started"]
    telemetry = [k for k in kinds if k.startswith(("file_", "test_run", "log_", "token"))]
    assert telemetry.count("test_run_completed") == 3
    assert telemetry.count("file_read") == 2 and telemetry.count("file_written") == 2
    assert telemetry.count("file_deleted") == 1 and telemetry.count("log_updated") == 1
    output = "".join(e["data"]["text"] for e in of_type(events, "subprocess_output"))
    assert "__cody_event__" in output  # the decoy and the malformed sentinel remain text
    assert final["stats"]["tokens"]["input"] == 18234


def test_cost_budget_fails_the_run(daemon: Daemon) -> None:
    """Reaching budget.max_cost_usd fails the run with budget_exceeded, not retryable."""
    daemon.start_run(agent("sentinels"), run_id="cb", budget={"max_cost_usd": 0.2})
    final = daemon.wait_state("cb", "failed")
    assert final["error"]["code"] == "budget_exceeded" and final["error"]["retryable"] is False
    assert final["stats"]["turns"] == 1


def test_token_budget_fails_the_run(daemon: Daemon) -> None:
    """Reaching budget.max_tokens (input + output) fails the run with budget_exceeded."""
    daemon.start_run(agent("sentinels"), run_id="tb", budget={"max_tokens": 100})
    final = daemon.wait_state("tb", "failed")
    assert final["error"]["code"] == "budget_exceeded"
    assert "max_tokens" in final["error"]["message"]


def test_duration_budget_aborts_the_turn_and_ignores_paused_time(daemon: Daemon) -> None:
    """budget.max_duration_s stops a turn in progress (aborted); time spent paused is not counted."""
    daemon.start_run(agent("sleeper", 0.2), run_id="db", budget={"max_duration_s": 1.5})
    daemon.wait_event("db", "turn_started")
    daemon.call("run.pause", {"run_id": "db"})
    daemon.wait_state("db", "paused")
    paused_at = time.monotonic()
    time.sleep(2.0)  # the time under test: paused time must not count against the budget
    daemon.call("run.resume", {"run_id": "db"})
    final = daemon.wait_state("db", "failed", timeout=20)
    assert final["error"]["code"] == "budget_exceeded"
    paused_for = time.monotonic() - paused_at
    # Wall time from start to failure covers the 1.5 s budget plus the time spent paused.
    assert final["finished_at"] - final["started_at"] >= 1.5 + min(paused_for, 2.0) - 0.2
    outcomes = [e["data"]["outcome"] for e in of_type(daemon.events("db"), "turn_completed")]
    assert outcomes[-1] == "aborted"


def test_watch_logs_reports_growth(daemon: Daemon) -> None:
    """Growth of a watched file emits log_updated with bytes_added and the appended tail."""
    ws = daemon.workspace()
    log = ws / "AGENT_LOG.md"
    log.write_text("old content\n")
    daemon.start_run(
        agent("ticker", 0.6, 3, log), run_id="wl", max_turns=1, watch_logs=["AGENT_LOG.md"]
    )
    daemon.wait_state("wl", "completed")
    updates = [e["data"] for e in of_type(daemon.events("wl"), "log_updated")]
    assert sum(u["bytes_added"] for u in updates) == len("log line 0\n") * 3
    assert all(u["path"] == "AGENT_LOG.md" for u in updates)
    assert "old content" not in "".join(u["tail"] for u in updates)
    assert len(updates) >= 2  # checked during the turn, not only after it


def test_last_activity_advances_while_output_flows(daemon: Daemon) -> None:
    """last_activity moves forward during a turn that keeps printing."""
    daemon.start_run(agent("ticker", 0.3, 20), run_id="la", max_turns=1)
    daemon.wait_event("la", "turn_started")
    first = wait_until(
        lambda: daemon.call("run.status", {"run_id": "la"})["last_activity"], what="activity"
    )
    later = wait_until(
        lambda: (v := daemon.call("run.status", {"run_id": "la"})["last_activity"]) > first and v,
        what="last_activity to advance",
    )
    assert later - first >= 1.5  # written at most every 2 s
    daemon.call("run.cancel", {"run_id": "la"})


def test_notify_socket_and_heartbeat(daemon_factory) -> None:
    """With NOTIFY_SOCKET codyd sends READY=1 once it accepts, WATCHDOG=1 each half period, STOPPING=1 on SIGTERM."""
    root = short_tempdir()
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(10)
    daemon = daemon_factory(
        env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}, start=False
    )
    daemon.start(wait=False)
    messages: list[tuple[float, str]] = []

    def receive() -> str:
        text = notify.recv(4096).decode()
        messages.append((time.monotonic(), text))
        return text

    first = receive()
    assert "READY=1" in first
    assert daemon.call("daemon.ping")["pong"]  # the socket accepts once READY is sent
    watchdogs = []
    while len(watchdogs) < 5:
        text = receive()
        if "WATCHDOG=1" in text:
            watchdogs.append(messages[-1][0])
            assert "STATUS=" in text
    gaps = [b - a for a, b in itertools.pairwise(watchdogs)]
    assert max(gaps) <= 0.3  # half of WATCHDOG_USEC is 0.2 s
    heartbeat = json.loads((daemon.state_dir / "heartbeat").read_text())
    assert heartbeat["pid"] == daemon.proc.pid and heartbeat["active_runs"] == 0
    assert abs(heartbeat["ts"] - time.time()) < 5
    daemon.signal(signal.SIGTERM)
    while "STOPPING=1" not in receive():
        pass
    assert daemon.wait_exit(15) == 0
    notify.close()


def test_shutdown_refuses_mutating_calls_and_is_bounded(daemon: Daemon, tmp_path: Path) -> None:
    """During shutdown new mutating calls get shutting_down; codyd exits 0 within sigkill_delay_s + 10 s."""
    pids = tmp_path / "pids"
    daemon.start_run(agent("ignorer", pids), run_id="sd", sigkill_delay_s=3)
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="pids")
    with daemon.client() as client:
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                client.call("run.pause", {"run_id": "sd"})
            except ShuttingDown as exc:
                assert exc.retryable
                return True
            return False

        wait_until(refused, what="shutting_down")
    assert daemon.wait_exit(15) == 0
    assert time.monotonic() - started < 3 + 10
    assert not any(
        os.path.exists(f"/proc/{p}") and _alive(int(p)) for p in pids.read_text().split()
    )


def _alive(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return b") Z" not in handle.read()
