"""End to end: ``run.retry`` takes a failed run back, over the socket and through codyctl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_agents_daemon import argv_log, fake_daemon, start
from test_e2e_codyctl import codyctl, ok

from codyd.errors import InvalidParams, InvalidState

from conftest import Daemon, agent


def start_gated(daemon: Daemon, run_id: str) -> dict[str, Any]:
    """A run that fails its first turn (and so the run) until ``gate`` is in its workspace."""
    return daemon.start_run(
        agent("gated", "gate"),
        run_id=run_id,
        max_consecutive_failures=1,
        retry_backoff_s=0,
        completion={"pattern": r"^GATE OPEN", "stop_file": None},
    )


def types(daemon: Daemon, run_id: str) -> list[str]:
    return [event["type"] for event in daemon.events(run_id)]


def test_retry_drives_a_failed_run_again_until_it_completes(daemon: Daemon) -> None:
    """Retried, a failed run is running with its error and failure count cleared."""
    start_gated(daemon, "gated")
    failed = daemon.wait_state("gated", "failed")
    assert failed["error"] is not None

    retried = daemon.call("run.retry", {"run_id": "gated"})
    assert retried["state"] == "running" and retried["error"] is None
    # The count was reset: one more failed turn (not none) fails the run again.
    daemon.wait_state("gated", "failed")
    assert types(daemon, "gated").count("turn_started") == 2
    retried_events = [e for e in daemon.events("gated") if e["type"] == "run_retried"]
    assert [e["data"] for e in retried_events] == [{"reason": "retried"}]

    (daemon.workspace() / "gate").touch()
    daemon.call("run.retry", {"run_id": "gated", "reason": "gate opened"})
    final = daemon.wait_state("gated", "completed")
    assert final["error"] is None and final["completion"]["line"] == "GATE OPEN"
    events = daemon.events("gated")
    started = [e for e in events if e["type"] == "turn_started"]
    assert len(started) == 3
    assert events[-1]["type"] == "run_completed"
    assert [e["data"]["reason"] for e in events if e["type"] == "run_retried"] == [
        "retried",
        "gate opened",
    ]

    with pytest.raises(InvalidState) as completed:
        daemon.call("run.retry", {"run_id": "gated"})
    assert completed.value.data == {"state": "completed"}


def test_retried_run_resumes_its_session(daemon_factory: Any, tmp_path: Path) -> None:
    """A claude run failed on its budget, raised and retried: its next turn resumes the session."""
    daemon = fake_daemon(daemon_factory, tmp_path, "claude")
    start(daemon, "claude", "spent", max_turns=2, budget={"max_cost_usd": 0.002})
    failed = daemon.wait_state("spent", "failed")
    assert failed["error"]["code"] == "budget_exceeded" and failed["session_id"]
    daemon.call("run.update", {"run_id": "spent", "budget": {"max_cost_usd": 1}})
    daemon.call("run.retry", {"run_id": "spent"})
    daemon.wait_state("spent", "completed")
    first, second = argv_log(tmp_path)
    assert not any(arg.startswith("--resume") for arg in first)
    assert f"--resume={failed['session_id']}" in second
    started = [e["data"] for e in daemon.events("spent") if e["type"] == "turn_started"]
    assert [data["session_id"] for data in started] == [None, failed["session_id"]]


def test_retry_refuses_a_live_run_and_unknown_params(daemon: Daemon) -> None:
    daemon.call(
        "run.start",
        {
            "workspace": str(daemon.workspace("busy")),
            "prompt": "p",
            "command": agent("sleeper"),
            "run_id": "busy",
        },
    )
    daemon.wait_event("busy", "turn_started")
    with pytest.raises(InvalidState) as running:
        daemon.call("run.retry", {"run_id": "busy"})
    assert running.value.data == {"state": "running"}
    with pytest.raises(InvalidParams) as unknown:
        daemon.call("run.retry", {"run_id": "busy", "now": True})
    assert unknown.value.data == {"field": "now"}
    assert "run_retried" not in types(daemon, "busy")


def test_codyctl_retry(daemon: Daemon) -> None:
    """``codyctl retry`` prints ``<run_id> <state>``, or the snapshot with --json; exit 0."""
    start_gated(daemon, "ctl")
    daemon.wait_state("ctl", "failed")
    assert ok(codyctl(daemon, "retry", "ctl")).split() == ["ctl", "running"]
    daemon.wait_state("ctl", "failed")
    (daemon.workspace() / "gate").touch()
    snapshot = json.loads(ok(codyctl(daemon, "--json", "retry", "ctl", "--reason", "by hand")))
    assert snapshot["run_id"] == "ctl" and snapshot["state"] == "running"
    assert snapshot["error"] is None
    daemon.wait_state("ctl", "completed")
    refused = codyctl(daemon, "retry", "ctl")
    assert refused.returncode == 1
    assert refused.stderr.decode().startswith("codyctl: invalid_state: ")
