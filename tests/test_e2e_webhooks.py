"""Webhooks of a real daemon (docs/http.md, Webhooks) to a real receiver that checks signatures.

The receiver runs in the test process on loopback; it verifies every request with
the ``standardwebhooks`` reference library. Retries use a short backoff
(``backoff_s``) so that outages of a second cost a second; the default schedule is
tested on trio's MockClock in test_notify_inprocess.py.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from webhook_receiver import Receiver

from conftest import Daemon, agent, wait_until

DEFAULT_EVENTS = ("attention", "run_completed", "run_failed", "run_cancelled")
SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes.......").decode()


def hook(receiver: Receiver, name: str = "ops", **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": receiver.url,
        "secret": SECRET,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
        **options,
    }


def toml_value(value: Any) -> str:
    """A TOML inline value for CODYD_WEBHOOKS (JSON's strings and lists are TOML's)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def webhooks_env(*hooks: dict[str, Any]) -> dict[str, str]:
    return {"CODYD_WEBHOOKS": toml_value(list(hooks))}


@pytest.fixture
def receiver() -> Any:
    made = Receiver(SECRET).start()
    yield made
    made.stop()


def finish_runs(daemon: Daemon, count: int) -> list[str]:
    """Start ``count`` one-turn runs, one after another, and wait for each to complete."""
    command = agent("printer", 2)
    run_ids = [
        daemon.start_run(command, max_turns=1, workspace=str(daemon.workspace(f"ws{n}")))["run_id"]
        for n in range(count)
    ]
    for run_id in run_ids:
        daemon.wait_state(run_id, "completed")
    return run_ids


def info_of(daemon: Daemon, name: str = "ops") -> dict[str, Any]:
    return daemon.call("daemon.info")["webhooks"][name]  # type: ignore[no-any-return]


def test_events_arrive_signed_in_gid_order(
    daemon_factory: Callable[..., Daemon], receiver: Receiver
) -> None:
    """Each wanted event is POSTed once, in gid order, signed, with the run's summary."""
    every = Receiver(SECRET).start()
    try:
        daemon = daemon_factory(
            env=webhooks_env(hook(receiver), hook(every, name="all", events=["*"]))
        )
        run_ids = finish_runs(daemon, 3)
        got = receiver.wait_delivered(3)
        assert [r.body["type"] for r in got] == ["run_completed"] * 3
        assert sorted(r.body["data"]["event"]["run_id"] for r in got) == sorted(run_ids)
        assert [r.gid for r in got] == sorted(r.gid for r in got)
        node = daemon.call("daemon.info")["node"]
        first = got[0]
        assert first.webhook_id == f"{node}:{first.body['data']['event']['gid']}"
        assert first.headers["content-type"] == "application/json"
        assert first.headers["webhook-signature"].startswith("v1,")
        assert first.body["timestamp"].endswith("Z")
        assert first.body["data"]["run"]["run_id"] == first.body["data"]["event"]["run_id"]
        assert first.body["data"]["run"]["state"] == "completed"
        assert receiver.refused_signatures == []
        # The "*" webhook gets every event of every run, in gid order, each once.
        stored = [e for run_id in run_ids for e in daemon.events(run_id)]
        everything = every.wait_delivered(len(stored))
        assert [r.gid for r in everything] == sorted(e["gid"] for e in stored)
        assert [r.body["data"]["event"] for r in everything] == sorted(
            stored, key=lambda e: e["gid"]
        )
        wait_until(lambda: info_of(daemon, "all")["lag_events"] == 0, what="no lag")
        status = info_of(daemon)
        assert status["last_error"] is None and status["last_success_at"] is not None
        assert SECRET not in daemon.log()
    finally:
        every.stop()


def test_a_receiver_outage_loses_nothing(
    daemon_factory: Callable[..., Daemon], receiver: Receiver
) -> None:
    """Down for a while, back on the same port: every event afterwards, once each."""
    daemon = daemon_factory(env=webhooks_env(hook(receiver)))
    finish_runs(daemon, 1)
    receiver.wait_delivered(1)
    receiver.stop()
    down = finish_runs(daemon, 3)
    status = wait_until(
        lambda: (s := info_of(daemon))["last_error"] and s["lag_events"] > 0 and s,
        what="the outage in daemon.info",
    )
    assert "ConnectError" in status["last_error"]
    shown = subprocess.run(
        [sys.executable, "-m", "codyctl", "--socket", str(daemon.socket), "info"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    lines = shown[shown.index("webhooks:") :].splitlines()
    assert lines[1] == "  ops:"
    assert lines[2].startswith("    lag_events: ") and int(lines[2].split(": ")[1]) > 0
    assert lines[3].startswith('    last_error: "ConnectError: ')
    assert lines[4].startswith("    last_success: ")
    receiver.start()
    got = receiver.wait_delivered(4)
    ids = [r.webhook_id for r in got]
    assert len(ids) == len(set(ids)) == 4
    assert sorted(r.body["data"]["event"]["run_id"] for r in got[1:]) == sorted(down)
    assert [r.gid for r in got] == sorted(r.gid for r in got)
    wait_until(lambda: info_of(daemon)["lag_events"] == 0, what="the backlog to drain")


def test_a_daemon_restart_during_an_outage_loses_nothing(
    daemon_factory: Callable[..., Daemon], receiver: Receiver
) -> None:
    """Events left undelivered at shutdown are sent by the next start, from the cursor."""
    daemon = daemon_factory(env=webhooks_env(hook(receiver)))
    finish_runs(daemon, 1)
    receiver.wait_delivered(1)
    receiver.stop()
    down = finish_runs(daemon, 2)
    node = daemon.call("daemon.info")["node"]
    wanted = {
        f"{node}:{e['gid']}"
        for run_id in down
        for e in daemon.events(run_id)
        if e["type"] in DEFAULT_EVENTS
    }
    assert len(wanted) >= 2
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    receiver.start()
    daemon.start()
    got = receiver.wait_delivered(1 + len(wanted))
    assert {r.webhook_id for r in got[1:]} == wanted
    assert [r.gid for r in got] == sorted(r.gid for r in got)


def test_a_receiver_answering_500_is_retried(
    daemon_factory: Callable[..., Daemon], receiver: Receiver
) -> None:
    """A 500 is not a delivery: the same webhook-id comes again until a 2xx."""
    receiver.statuses = [500, 500, 503]
    daemon = daemon_factory(env=webhooks_env(hook(receiver)))
    finish_runs(daemon, 1)
    got = receiver.wait_delivered(1)
    attempts = receiver.requests
    assert [r.status for r in attempts] == [500, 500, 503, 200]
    assert len({r.webhook_id for r in attempts}) == 1
    status = wait_until(
        lambda: (s := info_of(daemon))["last_success_at"] and s, what="the success in info"
    )
    assert status["last_error"].startswith("HTTP 503")
    assert got[0].body["type"] == "run_completed"


def test_a_slow_receiver_blocks_no_run_and_no_other_webhook(
    daemon_factory: Callable[..., Daemon], receiver: Receiver
) -> None:
    """A receiver that never answers times out; runs and the other webhook go on."""
    slow = Receiver(SECRET).start()
    slow.hold()
    try:
        daemon = daemon_factory(
            env=webhooks_env(hook(slow, name="slow", timeout_s=0.3), hook(receiver))
        )
        run_ids = finish_runs(daemon, 3)
        assert len(receiver.wait_delivered(3)) == 3
        status = wait_until(
            lambda: (s := info_of(daemon, "slow"))["last_error"] and s, what="the timeout"
        )
        assert status["last_error"] == "no answer within 0.3 s"
        assert status["lag_events"] > 0 and status["last_success_at"] is None
        assert info_of(daemon)["last_error"] is None
        slow.release()
        got = slow.wait_delivered(3)
        assert {r.body["data"]["event"]["run_id"] for r in got} == set(run_ids)
    finally:
        slow.stop()


def test_a_new_webhook_starts_from_now(
    daemon_factory: Callable[..., Daemon], receiver: Receiver
) -> None:
    """A webhook added to a daemon with history gets what happens next, not the history."""
    daemon = daemon_factory()
    finish_runs(daemon, 1)
    daemon.stop()
    daemon.env.update(webhooks_env(hook(receiver)))
    daemon.start()
    wait_until(lambda: "webhook resumes" in daemon.log(), what="the webhook to load its cursor")
    run_id = daemon.start_run(agent("printer", 1), max_turns=1)["run_id"]
    got = receiver.wait_delivered(1)
    daemon.wait_state(run_id, "completed")
    assert [r.body["data"]["event"]["run_id"] for r in got] == [run_id]
    wait_until(lambda: info_of(daemon)["lag_events"] == 0, what="no lag")
    assert len(receiver.delivered()) == 1
