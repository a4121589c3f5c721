"""A stall is decided on output read, after what waits in the pipes (SIGSTOP, a slow store).

In-process: a real agent printing steadily under :class:`Turn`, whose reader is
held up by the turn's own backpressure hook for longer than ``stall_timeout_s``
(as when the daemon was stopped or its store fell behind): the agent's output
waits in the full pipe, and the turn must not end ``stalled``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import trio

from codyd.model.state import Outcome
from codyd.runs.output import LineSplitter
from codyd.runs.turn import Turn, TurnHooks, TurnPlan, agent_environment

PRINTS = "import sys, time\nwhile True:\n    print('x' * 1023, flush=True); time.sleep(0.005)\n"


def test_output_waiting_in_the_pipe_is_no_stall(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    lines = [0]
    plan = TurnPlan(
        run_id="stall", n=1, argv=[sys.executable, "-c", PRINTS], cwd=str(tmp_path),
        env=agent_environment(dict(os.environ), {}, "stall", 1, str(tmp_path)), prompt=b"",
        turn_dir=tmp_path / "turn", max_log_bytes=1 << 24, max_line_bytes=1 << 16,
        turn_timeout_s=60, stall_timeout_s=1.0, sigkill_delay_s=1.0,
    )  # fmt: skip
    held = [False]

    async def backpressure() -> None:
        if not held[0] and lines[0] > 10:
            held[0] = True
            await trio.sleep(3.0)  # the reader is held up three stall timeouts long

    splitter = LineSplitter(plan.max_line_bytes)

    def on_output(stream: str, data: bytes) -> None:
        lines[0] += len(splitter.feed(data))
        if lines[0] > 400:
            turn.request_stop(Outcome.ABORTED)  # well past the hold-up: enough

    turn = Turn(
        plan,
        TurnHooks(
            on_started=lambda pid, ticks: None,
            on_output=on_output,
            on_activity=lambda: None,
            on_event=lambda type_, data: events.append((type_, data)),
            backpressure=backpressure,
        ),
    )

    async def main() -> str:
        with trio.fail_after(20):
            return (await turn.run()).outcome

    assert trio.run(main) == "aborted"
    assert held[0]
    assert "stall_detected" not in [type_ for type_, _ in events]
