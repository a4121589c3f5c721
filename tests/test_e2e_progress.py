"""End to end: the progress guard pauses a run whose turns change nothing (stagnation_turns)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from codyd.errors import InvalidParams

from conftest import Daemon, agent


def git_repo(path: Path) -> Path:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (path / "README").write_text("a repository\n")
    git("add", "README")
    git("commit", "-q", "-m", "first")
    return path


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type_]


@pytest.mark.parametrize("kind", ["git", "plain"])
def test_a_run_that_changes_nothing_is_paused_no_progress(daemon: Daemon, kind: str) -> None:
    """Three ok turns that touch nothing: paused no_progress with turns 3 and attention."""
    workspace = daemon.workspace(kind)
    if kind == "git":
        git_repo(workspace)
    daemon.call(
        "run.start",
        {
            "workspace": str(workspace),
            "prompt": "p",
            "command": agent("printer", 0),
            "run_id": "idle",
            "stagnation_turns": 3,
            "max_turns": 10,
        },
    )
    paused = daemon.wait_state("idle", "paused")
    events = daemon.events("idle")
    assert [e["data"]["outcome"] for e in of_type(events, "turn_completed")] == ["ok"] * 3
    assert of_type(events, "run_paused")[-1]["data"] == {"reason": "no_progress"}
    [attention] = of_type(events, "attention")
    assert attention["data"]["reason"] == "no_progress" and attention["data"]["turns"] == 3
    assert "3 turns" in attention["data"]["message"]
    assert attention["seq"] > of_type(events, "run_paused")[-1]["seq"]
    assert paused["attention"]["reason"] == "no_progress"
    assert paused["current_turn"] == 3
    assert not of_type(events, "warning")

    # Resumed, it has three more turns before it pauses again.
    daemon.call("run.resume", {"run_id": "idle"})
    daemon.wait_event("idle", "run_resumed")
    daemon.wait_state("idle", "paused")
    assert daemon.call("run.status", {"run_id": "idle"})["current_turn"] == 6
    assert len(of_type(daemon.events("idle"), "attention")) == 2


def test_a_run_that_writes_a_file_each_turn_goes_on(daemon: Daemon) -> None:
    """A new file each turn is progress: the run reaches max_turns without a pause."""
    workspace = git_repo(daemon.workspace("writes"))
    daemon.call(
        "run.start",
        {
            "workspace": str(workspace),
            "prompt": "p",
            "command": agent("writer"),
            "run_id": "busy",
            "stagnation_turns": 1,
            "max_turns": 4,
        },
    )
    final = daemon.wait_state("busy", "completed", "paused")
    assert final["state"] == "completed" and final["completion"]["reason"] == "max_turns"
    events = daemon.events("busy")
    assert not of_type(events, "attention")
    assert len(of_type(events, "turn_completed")) == 4


def test_the_guard_is_off_for_commands_by_default(daemon: Daemon) -> None:
    daemon.call(
        "run.start",
        {
            "workspace": str(daemon.workspace("off")),
            "prompt": "p",
            "command": agent("printer", 0),
            "run_id": "off",
            "max_turns": 7,
        },
    )
    assert daemon.wait_state("off", "completed", "paused")["state"] == "completed"
    assert daemon.call("run.status", {"run_id": "off"})["current_turn"] == 7


def test_stagnation_turns_is_validated(daemon: Daemon) -> None:
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InvalidParams) as refused:
            daemon.start_run(agent("printer"), stagnation_turns=bad)
        assert refused.value.data == {"field": "stagnation_turns"}
        assert "an integer >= 0" in str(refused.value)


def test_stagnation_turns_set_by_update_takes_effect_in_the_running_driver(daemon: Daemon) -> None:
    """Turned on by run.update while the run drives, the guard counts from the next turn."""
    daemon.call(
        "run.start",
        {
            "workspace": str(daemon.workspace("later")),
            "prompt": "p",
            "command": agent("printer", 0),
            "run_id": "later",
            "max_turns": 1000,
        },
    )
    daemon.wait_event("later", "turn_completed")
    daemon.call("run.update", {"run_id": "later", "stagnation_turns": 2})
    paused = daemon.wait_state("later", "paused", "completed")
    assert paused["state"] == "paused" and paused["attention"]["reason"] == "no_progress"
    [attention] = of_type(daemon.events("later"), "attention")
    assert attention["data"]["turns"] == 2
