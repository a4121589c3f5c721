"""End to end: ``run.update`` changes a live or failed run's limits, against a real daemon."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from codyd.errors import InvalidParams, InvalidState

from conftest import Daemon, agent


def of_type(daemon: Daemon, run_id: str, type_: str) -> list[dict[str, Any]]:
    return [event for event in daemon.events(run_id) if event["type"] == type_]


def stored_spec(daemon: Daemon, run_id: str) -> dict[str, Any]:
    """The spec as the store committed it (read-only, beside the daemon)."""
    import json

    conn = sqlite3.connect(f"file:{daemon.state_dir / 'codyd.db'}?mode=ro", uri=True)
    try:
        (record,) = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    spec: dict[str, Any] = json.loads(record)["spec"]
    return spec


def test_raised_max_turns_lets_a_run_go_on(daemon_factory: Callable[..., Daemon]) -> None:
    """A run started for one turn and raised to three mid-turn completes after three turns."""
    daemon = daemon_factory()
    daemon.start_run(agent("waiter", "go"), run_id="more", max_turns=1)
    daemon.wait_event("more", "turn_started")
    updated = daemon.call("run.update", {"run_id": "more", "max_turns": 3, "name": "longer"})
    (daemon.workspace() / "go").touch()  # turn 1 ends; the next ones end at once
    assert updated["name"] == "longer"
    assert updated["last_update"]["changes"] == {
        "max_turns": {"from": 1, "to": 3},
        "name": {"from": "", "to": "longer"},
    }
    final = daemon.wait_state("more", "completed")
    assert final["completion"]["reason"] == "max_turns"
    assert final["stats"]["turns"] == 3
    (event,) = of_type(daemon, "more", "run_updated")
    assert event["data"] == {"changes": updated["last_update"]["changes"]}
    assert stored_spec(daemon, "more")["max_turns"] == 3

    # A restart keeps the updated spec.
    daemon.stop()
    daemon.start()
    snapshot = daemon.call("run.status", {"run_id": "more"})
    assert snapshot["name"] == "longer" and snapshot["last_update"] is not None


def test_lowered_turn_timeout_stops_the_turn_in_progress(daemon: Daemon) -> None:
    """A turn with an hour to go is timed out once turn_timeout_s drops below its age."""
    daemon.start_run(
        agent("sleeper"), run_id="slow", max_consecutive_failures=1, turn_timeout_s=3600
    )
    daemon.wait_event("slow", "turn_started")
    daemon.call("run.update", {"run_id": "slow", "turn_timeout_s": 0.2, "sigkill_delay_s": 0.5})
    final = daemon.wait_state("slow", "failed", timeout=10)
    (completed,) = of_type(daemon, "slow", "turn_completed")
    assert completed["data"]["outcome"] == "timed_out"
    assert final["error"]["code"] == "timed_out"


def test_lowered_stall_timeout_stops_a_silent_turn(daemon: Daemon) -> None:
    daemon.start_run(agent("sleeper"), run_id="quiet", max_consecutive_failures=1)
    daemon.wait_event("quiet", "turn_started")
    daemon.call("run.update", {"run_id": "quiet", "stall_timeout_s": 0.3})
    daemon.wait_state("quiet", "failed", timeout=10)
    (completed,) = of_type(daemon, "quiet", "turn_completed")
    assert completed["data"]["outcome"] == "stalled"


def test_budget_failed_run_completes_after_update_and_retry(daemon: Daemon) -> None:
    """budget.max_cost_usd raised (the other budget keys kept): run.retry drives it to the end."""
    daemon.start_run(
        agent("sentinels"),
        run_id="spent",
        max_turns=2,
        budget={"max_cost_usd": 0.2, "max_tokens": 10_000},
    )
    failed = daemon.wait_state("spent", "failed")
    assert failed["error"]["code"] == "budget_exceeded"
    with pytest.raises(InvalidParams) as refused:
        daemon.call("run.update", {"run_id": "spent", "budget": {"max_cost_usd": "1"}})
    assert refused.value.data == {"field": "budget.max_cost_usd"}
    daemon.call("run.update", {"run_id": "spent", "budget": {"max_cost_usd": 0.6}})
    spec = stored_spec(daemon, "spent")
    assert spec["budget"] == {
        "max_cost_usd": 0.6,
        "max_tokens": 10_000,
        "max_duration_s": None,
        "warn_fraction": 0.8,
    }
    daemon.call("run.retry", {"run_id": "spent"})
    final = daemon.wait_state("spent", "completed")
    assert final["completion"]["reason"] == "max_turns" and final["stats"]["turns"] == 2
    (event,) = of_type(daemon, "spent", "run_updated")
    assert event["data"]["changes"] == {"budget.max_cost_usd": {"from": 0.2, "to": 0.6}}
    # The raised limit warns again once its use reaches budget.warn_fraction of it.
    warnings = [e["data"] for e in of_type(daemon, "spent", "budget_warning")]
    assert [(w["kind"], w["limit"]) for w in warnings if w["kind"] == "cost"] == [
        ("cost", 0.2),
        ("cost", 0.6),
    ], warnings

    # Completed, it takes no more changes.
    with pytest.raises(InvalidState) as terminal:
        daemon.call("run.update", {"run_id": "spent", "budget": {"max_tokens": None}})
    assert terminal.value.data == {"state": "completed"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_turns": 0}, "max_turns"),
        ({"max_turns": "5"}, "max_turns"),
        ({"max_turns": True}, "max_turns"),
        ({"turn_timeout_s": 0}, "turn_timeout_s"),
        ({"stall_timeout_s": -1}, "stall_timeout_s"),
        ({"sigkill_delay_s": float("nan")}, "sigkill_delay_s"),
        ({"retry_backoff_s": "2"}, "retry_backoff_s"),
        ({"max_consecutive_failures": 0}, "max_consecutive_failures"),
        ({"budget": {"max_tokens": 1.5}}, "budget.max_tokens"),
        ({"budget": {"max_cost_usd": 0}}, "budget.max_cost_usd"),
        ({"budget": {"max_hours": 1}}, "budget.max_hours"),
        ({"budget": 5}, "budget"),
        ({"labels": {"k": 1}}, "labels.k"),
        ({"name": "x" * 201}, "name"),
        ({"prompt": "new"}, "prompt"),
        ({"workspace": "/tmp"}, "workspace"),
        ({"max_turns": 5, "turn_timeout_s": "soon"}, "turn_timeout_s"),
    ],
)
def test_bad_updates_change_nothing(daemon: Daemon, params: dict[str, Any], field: str) -> None:
    """Each field is checked as run.start checks it, under the same data.field; nothing changes."""
    daemon.start_run(agent("sleeper"), run_id="bad", max_turns=7)
    daemon.wait_event("bad", "turn_started")
    before = stored_spec(daemon, "bad")
    with pytest.raises(InvalidParams) as refused:
        daemon.call("run.update", {"run_id": "bad", **params})
    assert refused.value.data == {"field": field}
    after = daemon.call("run.status", {"run_id": "bad"})
    assert after["last_update"] is None and after["name"] == "" and after["labels"] == {}
    assert stored_spec(daemon, "bad") == before and before["max_turns"] == 7
    assert of_type(daemon, "bad", "run_updated") == []


def test_update_that_changes_nothing_emits_nothing(daemon: Daemon) -> None:
    daemon.start_run(agent("sleeper"), run_id="same", max_turns=7, labels={"team": "a"})
    daemon.wait_event("same", "turn_started")
    daemon.call("run.update", {"run_id": "same", "max_turns": 7, "labels": {"team": "a"}})
    daemon.call("run.update", {"run_id": "same"})
    assert of_type(daemon, "same", "run_updated") == []
    changed = daemon.call("run.update", {"run_id": "same", "labels": {"team": "b"}})
    assert changed["labels"] == {"team": "b"}
    assert daemon.call("run.list", {"labels": {"team": "b"}})["runs"][0]["run_id"] == "same"


def test_update_refuses_completed_and_cancelled_runs(daemon: Daemon) -> None:
    daemon.start_run(agent("printer", 1), run_id="done", max_turns=1)
    daemon.wait_state("done", "completed")
    with pytest.raises(InvalidState) as refused:
        daemon.call("run.update", {"run_id": "done", "max_turns": 5})
    assert refused.value.data == {"state": "completed"}
    assert "completed" in refused.value.message
    daemon.start_run(agent("sleeper"), run_id="gone", workspace=str(daemon.workspace("g")))
    daemon.call("run.cancel", {"run_id": "gone"})
    daemon.wait_state("gone", "cancelled")
    with pytest.raises(InvalidState) as cancelled:
        daemon.call("run.update", {"run_id": "gone", "max_turns": 5})
    assert cancelled.value.data == {"state": "cancelled"}


def test_http_update_and_say(daemon_factory: Callable[..., Daemon]) -> None:
    """POST /api/v1/runs/{id}/update and /say take the method's params as JSON."""
    import json
    import urllib.error
    import urllib.request

    from redis_server import free_port

    port = free_port()
    daemon = daemon_factory(
        env={"CODYD_HTTP_LISTEN": f"127.0.0.1:{port}", "CODYD_HTTP__CONTROL_TOKEN": "ctl"}
    )
    daemon.start_run(agent("sleeper"), run_id="web")
    daemon.wait_event("web", "turn_started")

    def post(action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/runs/web/{action}",
            data=json.dumps(body).encode(),
            headers={"Authorization": "Bearer ctl", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, snapshot = post("update", {"max_turns": 9})
    assert status == 200 and snapshot["last_update"]["changes"]["max_turns"]["to"] == 9
    status, error = post("update", {"max_turns": -1})
    assert status == 400 and error["error"]["data"] == {"field": "max_turns"}
    assert post("say", {"text": "hello"}) == (200, {"queued": 1})
    status, error = post("say", {"text": ""})
    assert status == 400 and error["error"]["data"] == {"field": "text"}
