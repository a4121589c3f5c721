"""End to end: ``codyctl update``, ``codyctl say`` and ``codyctl start --prompt -``."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from test_e2e_codyctl import codyctl, codyctl_argv, ok
from test_e2e_say import HEADING, prompt_of

from conftest import Daemon, agent


def piped(daemon: Daemon, stdin: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``codyctl`` with ``stdin`` piped in."""
    return subprocess.run(
        codyctl_argv(daemon, *args),
        input=stdin.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )


def json_error(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(result.stdout)["error"]
    return error


def test_start_reads_the_prompt_from_stdin_with_dash(daemon: Daemon) -> None:
    ws = str(daemon.workspace())
    started = piped(
        daemon,
        "piped prompt\n",
        "--json",
        "start",
        ws,
        "--prompt",
        "-",
        "--run-id",
        "piped",
        "--max-turns",
        "1",
        "--",
        *agent("sleeper", 0.1),
    )
    assert json.loads(ok(started))["run_id"] == "piped"
    daemon.wait_state("piped", "completed")
    assert prompt_of(daemon, "piped", 1) == "piped prompt\n"


def test_codyctl_update(daemon: Daemon) -> None:
    daemon.start_run(agent("sleeper"), run_id="ctl", labels={"team": "a"}, max_turns=5)
    daemon.wait_event("ctl", "turn_started")
    human = ok(
        codyctl(
            daemon, "update", "ctl", "--max-turns", "9", "--budget-usd", "2.5", "--label", "k=v"
        )
    )
    lines = human.splitlines()
    assert lines[0] == "ctl running"
    assert "  max_turns: 5 -> 9" in lines and "  budget.max_cost_usd: none -> 2.5" in lines
    assert "  labels: team=a -> team=a,k=v" in lines
    snapshot = json.loads(
        ok(codyctl(daemon, "--json", "update", "ctl", "--budget-usd", "none", "--name", "n"))
    )
    assert snapshot["name"] == "n" and snapshot["labels"] == {"team": "a", "k": "v"}
    assert snapshot["last_update"]["changes"]["budget.max_cost_usd"] == {"from": 2.5, "to": None}
    assert ok(codyctl(daemon, "update", "ctl", "--name", "n")).splitlines()[1] == "nothing changed"

    status = ok(codyctl(daemon, "status", "ctl"))
    assert "max 9 turns" in status
    assert "budget.max_cost_usd: 2.5 -> none" in status

    # A value the daemon refuses names the flag, exit 2; click's own checks too.
    refused = codyctl(daemon, "--json", "update", "ctl", "--max-turns", "0")
    assert refused.returncode == 2
    assert json_error(refused)["data"] == {"field": "max_turns", "flag": "--max-turns"}
    assert "--max-turns" in refused.stderr.decode()
    refused = codyctl(daemon, "update", "ctl", "--turn-timeout", "-1")
    assert refused.returncode == 2 and "--turn-timeout" in refused.stderr.decode()
    refused = codyctl(daemon, "update", "ctl", "--budget-tokens", "lots")
    assert refused.returncode == 2 and "--budget-tokens" in refused.stderr.decode()
    nothing = codyctl(daemon, "update", "ctl")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr.decode()

    daemon.call("run.cancel", {"run_id": "ctl"})
    daemon.wait_state("ctl", "cancelled")
    terminal = codyctl(daemon, "--json", "update", "ctl", "--max-turns", "10")
    assert terminal.returncode == 1 and json_error(terminal)["code"] == "invalid_state"


def test_codyctl_say(daemon: Daemon) -> None:
    daemon.start_run(agent("waiter", "go"), run_id="talk", max_turns=2)
    daemon.wait_event("talk", "turn_started")
    assert ok(codyctl(daemon, "say", "talk", "look at tests/")) == (
        "talk: 1 message(s) for the next turn\n"
    )
    answer = json.loads(ok(piped(daemon, "from stdin\n", "--json", "say", "talk", "-")))
    assert answer == {"run_id": "talk", "queued": 2}
    assert "2 operator messages for the next turn" in ok(codyctl(daemon, "status", "talk"))
    (daemon.workspace() / "go").touch()
    daemon.wait_state("talk", "completed")
    assert prompt_of(daemon, "talk", 2) == (
        f"do the work\n\n{HEADING}\n\nlook at tests/\n\n{HEADING}\n\nfrom stdin"
    )
    empty = codyctl(daemon, "--json", "say", "talk", "")
    assert empty.returncode == 2 and "TEXT" in empty.stderr.decode()
    terminal = codyctl(daemon, "say", "talk", "too late")
    assert terminal.returncode == 1
    assert terminal.stderr.decode().startswith("codyctl: invalid_state: ")
