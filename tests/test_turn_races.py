"""A turn against the stops and cancellations that arrive at its worst moments.

Real agents (``sleep`` and a shell ignoring SIGTERM) under :class:`Turn`, driven
directly. The moment "while the agent is being started" is held open by wrapping
the turn's real start call with a gate the test opens.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from codyd.model.state import Outcome
from codyd.runs import procs, turn
from codyd.runs.turn import Turn, TurnHooks, TurnPlan, agent_environment

from conftest import pid_alive

SLEEP = shutil.which("sleep") or "/bin/sleep"


def make_turn(tmp_path: Path, argv: list[str], sigkill_delay_s: float = 1.0) -> tuple[Turn, dict]:
    seen: dict[str, Any] = {"pids": [], "events": []}
    env = agent_environment(dict(os.environ), {}, "race", 1, str(tmp_path))
    plan = TurnPlan(
        run_id="race", n=1, argv=argv, cwd=str(tmp_path), env=env, prompt=b"",
        turn_dir=tmp_path / "turn", max_log_bytes=1 << 20, max_line_bytes=1 << 16,
        turn_timeout_s=60, stall_timeout_s=60, sigkill_delay_s=sigkill_delay_s,
    )  # fmt: skip
    hooks = TurnHooks(
        on_started=lambda pid, ticks: seen["pids"].append(pid),
        on_output=lambda *args: None,
        on_activity=lambda: None,
        on_event=lambda type_, data: seen["events"].append((type_, data)),
    )
    return Turn(plan, hooks), seen


@pytest.fixture
def gated_start(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The turn's start call waits, once entered, until the test opens the gate."""
    entered, gate = threading.Event(), threading.Event()
    real_start = turn._start

    def start(plan: TurnPlan) -> Any:
        entered.set()
        gate.wait(30)
        return real_start(plan)

    monkeypatch.setattr(turn, "_start", start)
    yield entered, gate
    gate.set()


async def wait_for(event: threading.Event) -> None:
    with trio.fail_after(10):
        while not event.is_set():
            await trio.sleep(0.005)


async def test_stop_asked_while_the_agent_starts_stops_it(tmp_path: Path, gated_start: Any) -> None:
    """A stop arriving during the start is not lost to a /proc walk made before the agent existed."""
    entered, gate = gated_start
    job, seen = make_turn(tmp_path, [SLEEP, "30"])
    result: dict[str, Any] = {}

    async def run() -> None:
        result["turn"] = await job.run()

    began = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await wait_for(entered)
        job.request_stop(Outcome.INTERRUPTED)
        procs.group_members(1)  # another turn's stop walks /proc now, before the agent exists
        gate.set()
    assert result["turn"].outcome == "interrupted"
    assert ("signal_sent", {"signal": "SIGTERM", "pid": seen["pids"][0]}) in seen["events"]
    assert time.monotonic() - began < 10
    assert not pid_alive(seen["pids"][0])


async def test_cancelled_while_the_agent_starts_leaves_no_agent(
    tmp_path: Path, gated_start: Any
) -> None:
    """Cancelled during the start (a shutdown's grace ran out): the agent is stopped anyway."""
    entered, gate = gated_start
    job, seen = make_turn(tmp_path, [SLEEP, "30"])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job.run)
            await wait_for(entered)
            scope.cancel()
            gate.set()
    assert len(seen["pids"]) <= 1
    assert all(not pid_alive(pid) for pid in seen["pids"])
    assert not (tmp_path / "turn" / "turn.pid").exists()


@pytest.mark.timeout(30)  # a regression hangs in a shielded wait: fail it soon
async def test_cancelled_while_stopping_a_sigterm_ignorer_is_bounded(tmp_path: Path) -> None:
    """A cancellation landing while the watchdog stops the group: SIGKILL still comes, no hang."""
    job, seen = make_turn(tmp_path, ["sh", "-c", f"trap '' TERM; {SLEEP} 30"], sigkill_delay_s=1.0)
    began = time.monotonic()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job.run)
            with trio.fail_after(10):
                while not seen["pids"]:
                    await trio.sleep(0.005)
            job.request_stop(Outcome.INTERRUPTED)
            with trio.fail_after(10):
                while not any(type_ == "signal_sent" for type_, _ in seen["events"]):
                    await trio.sleep(0.005)
            scope.cancel()
    assert time.monotonic() - began < 10
    signals = [data["signal"] for type_, data in seen["events"] if type_ == "signal_sent"]
    assert signals == ["SIGTERM", "SIGKILL"]
    assert not pid_alive(seen["pids"][0])
