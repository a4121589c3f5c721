"""Start 200 sleeping agents at once, then SIGTERM the daemon: how long each takes.

A fresh daemon with 200 programs that do not start by themselves. **Start**: from
the first start request (codyd: 200 ``run.start`` pipelined on one connection;
supervisord: ``startAllProcesses``; circus: one ``start`` per watcher, its client
being request/reply) until ``/proc`` shows 200 children running ``sleep`` and, for
codyd, a follower of every run's events has seen 200 ``turn_started``. **Stop**:
from SIGTERM to the daemon's exit, every agent obeying SIGTERM; agents still
alive after the daemon has exited are counted. Median of ``REPEATS``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.scale import procfs
from bench.scale.codyd_fleet import CodydFleet
from bench.scale.fleet import Fleet, sleep_argv, sleepers
from bench.scale.report import ScaleRow, median
from codyctl.client import Client

NAME = "lifecycle"
AGENTS = 200
REPEATS = 3
SETTLE_S = 0.5
MAX_START_FRACTION = 0.5
MAX_STOP_S = 1.0


class TurnStartedCounter:
    """Follows every run's ``turn_started`` events; notes when the ``expected``-th arrives."""

    def __init__(self, fleet: CodydFleet, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.done_at: float | None = None
        self._client = Client(fleet.socket, timeout=None)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _follow(self) -> None:
        stream = self._client.stream("run.events", {"follow": True, "types": ["turn_started"]})
        self._ready.set()
        for _event in stream:
            self.seen += 1
            if self.seen == self.expected:
                self.done_at = time.monotonic()
                break
        self._client.close()

    def wait(self, timeout: float) -> float:
        self._thread.join(timeout)
        if self.done_at is None:
            raise TimeoutError(f"{self.seen} of {self.expected} turn_started events seen")
        return self.done_at


def one_life(make: Any) -> dict[str, Any]:
    argv = sleep_argv()
    fleet: Fleet = make(sleepers(AGENTS, argv, autostart=False))
    try:
        fleet.start()
        counter = fleet.agents(argv)
        follower = TurnStartedCounter(fleet, AGENTS) if isinstance(fleet, CodydFleet) else None
        starting = fleet.start_programs(fleet.programs)
        spawned_at = counter.wait_for(AGENTS, timeout=120, check=starting.check)
        sent_at = starting.sent_at()
        reported_at = follower.wait(60) if follower is not None else spawned_at
        time.sleep(SETTLE_S)
        rss = procfs.rss_mib(fleet.pid)
        stop_s = fleet.terminate()
        left = len(procfs.processes_running(argv))
        return {
            "start_s": max(spawned_at, reported_at) - sent_at,
            "spawned_s": spawned_at - sent_at,
            "reported_s": reported_at - sent_at,
            "requests_answered_s": starting.details.get("answered_at", sent_at) - sent_at,
            "stop_s": stop_s,
            "agents_left_after_exit": left,
            "rss_mib_with_agents": rss,
        }
    finally:
        fleet.close()


def run(makers: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for _ in range(REPEATS):
        for kind, make in makers.items():
            results.setdefault(kind, {"lives": []})["lives"].append(one_life(make))
    for measured in results.values():
        lives = measured["lives"]
        measured["start_s"] = median([life["start_s"] for life in lives])
        measured["stop_s"] = median([life["stop_s"] for life in lives])
        measured["agents_left"] = max(life["agents_left_after_exit"] for life in lives)
    return results


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    def cell(kind: str, key: str) -> float | None:
        value = results.get(kind, {}).get(key)
        return None if value is None else float(value)

    start = ScaleRow(f"start of {AGENTS} agents (until all spawned)", "s", cell("codyd", "start_s"),
                     cell("supervisord", "start_s"), cell("circus", "start_s"))  # fmt: skip
    ratio = start.ratio("supervisord")
    stop = cell("codyd", "stop_s")
    left = cell("codyd", "agents_left")
    return [
        ScaleRow(
            start.benchmark, "s", start.codyd, start.supervisord, start.circus,
            target=f"≤ {MAX_START_FRACTION:g}× supervisord",
            passed=ratio is not None and ratio <= MAX_START_FRACTION,
        ),
        ScaleRow(
            f"SIGTERM to exit, {AGENTS} live agents", "s", stop, cell("supervisord", "stop_s"),
            cell("circus", "stop_s"), target=f"≤ {MAX_STOP_S:g} s",
            passed=stop is not None and stop <= MAX_STOP_S,
        ),
        ScaleRow(
            "agents alive after the daemon exited", "count", left,
            cell("supervisord", "agents_left"), cell("circus", "agents_left"), target="0",
            passed=left == 0,
        ),
    ]  # fmt: skip
