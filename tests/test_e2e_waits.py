"""End to end: a separately started codyd whose runs wait out limits and ask for a login,
as codyctl shows them (status, list, watch) and daemon.info counts them."""

from __future__ import annotations

import re
import time
from typing import Any

from test_e2e_codyctl import codyctl, ok

from conftest import Daemon, agent, wait_until


def start(daemon: Daemon, run_id: str, plan: str, workspace: str, **spec: Any) -> None:
    daemon.call(
        "run.start",
        {
            "workspace": str(daemon.workspace(workspace)),
            "prompt": "go",
            "command": agent("reporter", plan),
            "run_id": run_id,
            **spec,
        },
    )


def waiting(daemon: Daemon, run_id: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        snapshot = daemon.call("run.status", {"run_id": run_id})
        return snapshot if snapshot["phase"] == "waiting" else None

    return wait_until(reached, what=f"run {run_id} waiting")  # type: ignore[no-any-return]


def test_codyctl_shows_a_waiting_run_and_one_needing_a_login(daemon: Daemon) -> None:
    """status says who waits for what until when, and what a paused run needs; list and
    watch show the wait in the phase column; daemon.info counts the account's runs."""
    start(daemon, "lim", "limit+3600,ok", "a", account="team-claude")
    start(daemon, "auth", "auth,ok", "b")
    snapshot = waiting(daemon, "lim")
    until = snapshot["wait"]["until"]
    assert time.time() + 3600 <= until <= time.time() + 3630
    hhmm = time.strftime("%H:%M", time.localtime(until))
    day = time.strftime("%Y-%m-%d", time.localtime(until))
    shown = hhmm if day == time.strftime("%Y-%m-%d") else f"{day} {hhmm}"
    status = ok(codyctl(daemon, "status", "lim"))
    assert re.search(r"^state:\s+running \(waiting\)$", status, re.MULTILINE), status
    line = f"waiting for team-claude until {shown} (rate limited)"
    assert re.search(rf"^wait:\s+{re.escape(line)}$", status, re.MULTILINE), status
    paused = daemon.wait_state("auth", "paused")
    assert paused["attention"]["reason"] == "needs_auth"
    status = ok(codyctl(daemon, "status", "auth"))
    assert re.search(r"^attention:\s+needs_auth: Invalid API key", status, re.MULTILINE), status
    rows = {row.split()[0]: row for row in ok(codyctl(daemon, "list")).splitlines()[1:]}
    assert f"running  waiting until {shown}" in rows["lim"]
    watched = ok(codyctl(daemon, "watch", "--once"))
    assert f"waiting until {shown}" in watched
    accounts = daemon.call("daemon.info")["accounts"]
    assert accounts["team-claude"] == {"limited_until": until, "runs": 1}
    assert accounts["command"] == {"limited_until": None, "runs": 1}
    # Nothing more happens by itself: one turn each, one attention for the login.
    auth_events = daemon.events("auth")
    assert [e["data"]["reason"] for e in auth_events if e["type"] == "attention"] == ["needs_auth"]
    assert sum(e["type"] == "turn_started" for e in auth_events) == 1
    ok(codyctl(daemon, "cancel", "lim"))
    assert daemon.wait_state("lim", "cancelled")["wait"] is None
