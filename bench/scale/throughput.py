"""Events per second through codyd's store while 1, 10 or 100 agents print at once.

Each agent is ``sh -c "yes LINE | head -n K"``: it prints K sentinel lines as fast
as a pipe takes them (no interpreter start-up), one event each in codyd. The
runs (``max_turns: 1``) are started together; the figure is every event the runs
stored, over the time from the first ``run.start`` until ``run.list`` (which
answers only with committed state) shows every run completed.

supervisord and circus have no event store; their figure is the same lines
through the daemon into its log files (``stdout_logfile`` / ``FileStream``), until
every file holds all its lines: the nearest work each does with an agent's output.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from bench.scale import procfs
from bench.scale.codyd_fleet import CodydFleet
from bench.scale.fleet import Fleet, Program
from bench.scale.report import ScaleRow

NAME = "throughput"
LINE = '{"__cody_event__": {"type": "tick"}}'
SHAPES = ((1, 50_000), (10, 5_000), (100, 1_000))
POLL_S = 0.02
TIMEOUT_S = 120.0
MIN_EVENTS_PER_S = 20_000


def chatty(count: int, lines: int) -> list[Program]:
    argv = ("sh", "-c", f"yes {shlex.quote(LINE)} | head -n {lines}")
    return [Program(f"c{index:03d}", argv, autostart=False, once=True) for index in range(count)]


def _codyd_done(fleet: CodydFleet, count: int, lines: int) -> int | None:
    runs = fleet.call("run.list", {"limit": 1000})["runs"]
    if len(runs) < count or any(run["state"] not in ("completed", "failed") for run in runs):
        return None
    failed = [run["run_id"] for run in runs if run["state"] != "completed"]
    short = [run["run_id"] for run in runs if run["last_seq"] < lines]
    if failed or short:
        raise RuntimeError(f"codyd runs failed {failed} or stored too few events {short}")
    return sum(int(run["last_seq"]) for run in runs)


def _logs_done(fleet: Fleet, lines: int) -> int | None:
    expected = lines * (len(LINE) + 1)
    for program in fleet.programs:
        path = fleet.stdout_log(program)
        if not path.exists() or path.stat().st_size < expected:
            return None
    return lines * len(fleet.programs)


def one_shape(make: Any, count: int, lines: int) -> dict[str, Any]:
    fleet: Fleet = make(chatty(count, lines))
    try:
        fleet.start()
        cpu_before = procfs.SchedTracker(fleet.pid)
        before = cpu_before.sample()
        starting = fleet.start_programs(fleet.programs)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            time.sleep(POLL_S)
            done = (
                _codyd_done(fleet, count, lines)
                if isinstance(fleet, CodydFleet)
                else _logs_done(fleet, lines)
            )
            if done is not None:
                finished = time.monotonic()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{fleet.kind}: {count} agents did not finish in {TIMEOUT_S} s")
        spent = cpu_before.sample() - before
        seconds = finished - starting.sent_at()
        return {
            "agents": count,
            "lines_per_agent": lines,
            "items": done,
            "seconds": seconds,
            "per_s": done / seconds,
            "daemon_cpu_s": spent.cpu_ns / 1e9,
        }
    finally:
        fleet.close()


def run(makers: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for count, lines in SHAPES:
        for kind, make in makers.items():
            results.setdefault(kind, {})[count] = one_shape(make, count, lines)
    return results


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    out = []
    for count, _lines in SHAPES:
        cells = {
            kind: results.get(kind, {}).get(count, {}).get("per_s")
            for kind in ("codyd", "supervisord", "circus")
        }
        codyd = cells["codyd"]
        checked = count == 100
        out.append(ScaleRow(
            f"events/s through the store, {count} agent{'s' if count > 1 else ''} printing",
            "events/s", codyd,
            cells["supervisord"], cells["circus"],
            target=f"≥ {MIN_EVENTS_PER_S:,}/s" if checked else "—",
            passed=(codyd is not None and codyd >= MIN_EVENTS_PER_S) if checked else None,
            note="anchors: lines/s into their log files",
        ))  # fmt: skip
    return out
