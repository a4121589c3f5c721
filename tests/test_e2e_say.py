"""End to end: ``run.say`` puts an operator's message in the next turn's prompt, once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from codyd.errors import InvalidParams, InvalidState

from conftest import Daemon, agent, wait_until

HEADING = "## Message from the operator"


def prompt_of(daemon: Daemon, run_id: str, n: int) -> str:
    """What turn ``n``'s agent read on its stdin (the sleeper and the waiter print it)."""
    log = daemon.state_dir / "runs" / run_id / "turns" / str(n) / "stdout.log"
    line = wait_until(lambda: log.exists() and log.read_text(), what=f"turn {n}'s output")
    prompt: str = json.loads(line.splitlines()[0])["prompt"]
    return prompt


def test_say_reaches_the_next_turn_once_and_in_order(daemon: Daemon) -> None:
    """Said during turn 1: turn 2 has both messages, in order; turn 3 has none."""
    daemon.start_run(agent("waiter", "go"), run_id="told", max_turns=3)
    daemon.wait_event("told", "turn_started")
    assert daemon.call("run.say", {"run_id": "told", "text": "first"}) == {"queued": 1}
    assert daemon.call("run.say", {"run_id": "told", "text": "then\nsecond"}) == {"queued": 2}
    assert daemon.call("run.status", {"run_id": "told"})["operator_messages_queued"] == 2
    (daemon.workspace() / "go").touch()  # turn 1 ends; the next ones end at once
    final = daemon.wait_state("told", "completed")
    assert final["operator_messages_queued"] == 0
    assert prompt_of(daemon, "told", 1) == "do the work"
    assert prompt_of(daemon, "told", 2) == (
        f"do the work\n\n{HEADING}\n\nfirst\n\n{HEADING}\n\nthen\nsecond"
    )
    assert prompt_of(daemon, "told", 3) == "do the work"
    said = [e for e in daemon.events("told") if e["type"] == "operator_message"]
    assert [e["data"] for e in said] == [{"text": "first"}, {"text": "then\nsecond"}]


def test_say_to_a_paused_run_survives_a_restart(daemon_factory: Callable[..., Daemon]) -> None:
    """Kept in the record: a paused run, restarted, gives the message to its next turn."""
    daemon = daemon_factory()
    daemon.start_run(agent("sleeper"), run_id="later", sigkill_delay_s=0.5)
    daemon.wait_event("later", "turn_started")
    daemon.call("run.pause", {"run_id": "later", "now": True})
    daemon.wait_state("later", "paused")
    assert daemon.call("run.say", {"run_id": "later", "text": "after the break"}) == {"queued": 1}
    daemon.stop()
    daemon.start()
    assert daemon.call("run.status", {"run_id": "later"})["operator_messages_queued"] == 1
    daemon.call("run.resume", {"run_id": "later"})
    assert prompt_of(daemon, "later", 2) == f"do the work\n\n{HEADING}\n\nafter the break"
    wait_until(
        lambda: daemon.call("run.status", {"run_id": "later"})["operator_messages_queued"] == 0,
        what="the message to be dropped once its turn started",
    )
    daemon.call("run.cancel", {"run_id": "later"})
    daemon.wait_state("later", "cancelled")


@pytest.mark.parametrize(
    "text", ["", None, 5, ["a"], "x" * (64 * 1024 + 1)], ids=["empty", "null", "int", "list", "big"]
)
def test_say_refuses_bad_text(daemon: Daemon, text: Any) -> None:
    daemon.start_run(agent("sleeper"), run_id="bad")
    with pytest.raises(InvalidParams) as refused:
        daemon.call("run.say", {"run_id": "bad", "text": text})
    assert refused.value.data == {"field": "text"}
    assert daemon.call("run.status", {"run_id": "bad"})["operator_messages_queued"] == 0


def test_say_keeps_at_most_16_and_refuses_finished_runs(daemon: Daemon) -> None:
    daemon.start_run(agent("sleeper"), run_id="full")
    daemon.call("run.pause", {"run_id": "full"})
    for n in range(16):
        daemon.call("run.say", {"run_id": "full", "text": f"note {n}"})
    with pytest.raises(InvalidParams) as refused:
        daemon.call("run.say", {"run_id": "full", "text": "one too many"})
    assert refused.value.data == {"field": "text"} and "16" in refused.value.message
    with pytest.raises(InvalidParams) as unknown:
        daemon.call("run.say", {"run_id": "full", "text": "x", "urgent": True})
    assert unknown.value.data == {"field": "urgent"}
    daemon.call("run.cancel", {"run_id": "full"})
    daemon.wait_state("full", "cancelled")
    with pytest.raises(InvalidState) as terminal:
        daemon.call("run.say", {"run_id": "full", "text": "too late"})
    assert terminal.value.data == {"state": "cancelled"}
