"""An agent printing 100,000 short lines as fast as it can: what one turn of it costs codyd.

Measured per turn: every line present in the turn's ``stdout.log``, the number of
``subprocess_output`` events and the smallest gap between consecutive ones (the throttle
promises ≥ 100 ms), the daemon's CPU seconds (utime + stime from ``/proc/<pid>/stat``) and
the wall time from ``run.start`` to the run's end. The floor is the CPU time of ``cat``
copying the same output from a pipe into a file. ``python -m bench.bench_output``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    AGENTS_DIR,
    PY,
    BenchResult,
    Daemon,
    Row,
    cpu_seconds,
    open_daemon,
    report,
    short_tempdir,
)

LINES = 100_000
TURNS = 3
CAT_RUNS = 5
MIN_GAP_S = 0.1
# Event times are float unix seconds: allow for their rounding, nothing more.
GAP_TOLERANCE_S = 1e-6
PRINTER_ARGV = [PY, str(AGENTS_DIR / "fast_printer.py"), str(LINES)]


def expected_lines() -> list[bytes]:
    return [f"line {number:06d}".encode() for number in range(LINES)]


@dataclass(frozen=True)
class TurnMeasure:
    """One measured turn of the fast printer under codyd."""

    run_id: str
    outcome: str
    lines_present: int
    log_exact: bool
    output_events: int
    min_gap_s: float | None
    dropped_bytes: int
    daemon_cpu_s: float
    wall_s: float
    turn_duration_s: float


def min_gap(times: list[float]) -> float | None:
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return min(gaps) if gaps else None


def check_log(path: Path, expected: list[bytes]) -> tuple[int, bool]:
    """How many of the expected lines the log holds, and whether it holds exactly them."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    present = len(set(expected).intersection(lines))
    return present, lines == expected


def measure_turn(daemon: Daemon, workspace: Path, expected: list[bytes]) -> TurnMeasure:
    params = {
        "workspace": str(workspace),
        "prompt": "print as fast as you can",
        "command": PRINTER_ARGV,
        "max_turns": 1,
    }
    cpu_before = cpu_seconds(daemon.pid)
    began = time.perf_counter()
    run_id: str = daemon.call("run.start", params)["run_id"]
    daemon.wait_terminal(run_id)
    wall_s = time.perf_counter() - began
    daemon_cpu_s = cpu_seconds(daemon.pid) - cpu_before
    events = daemon.events(run_id)
    output = [event for event in events if event["type"] == "subprocess_output"]
    turn_end = next((event for event in events if event["type"] == "turn_completed"), None)
    if turn_end is None:
        types = [event["type"] for event in events]
        raise RuntimeError(f"run {run_id} ended without a turn_completed event: {types}")
    present, exact = check_log(daemon.turn_dir(run_id, 1) / "stdout.log", expected)
    return TurnMeasure(
        run_id=run_id,
        outcome=turn_end["data"]["outcome"],
        lines_present=present,
        log_exact=exact,
        output_events=len(output),
        min_gap_s=min_gap([event["ts"] for event in output]),
        dropped_bytes=sum(event["data"].get("dropped_bytes", 0) for event in output),
        daemon_cpu_s=daemon_cpu_s,
        wall_s=wall_s,
        turn_duration_s=turn_end["data"]["duration_ms"] / 1000,
    )


@dataclass(frozen=True)
class CatMeasure:
    cat_cpu_s: float
    wall_s: float


def measure_cat(directory: Path) -> CatMeasure:
    """``fast_printer | cat > file``: cat's own CPU time, from its rusage when reaped."""
    target = directory / "cat.out"
    began = time.perf_counter()
    with target.open("wb") as sink:
        printer = subprocess.Popen(PRINTER_ARGV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert printer.stdout is not None
        cat = subprocess.Popen(["cat"], stdin=printer.stdout, stdout=sink)
        printer.stdout.close()
        _pid, status, usage = os.wait4(cat.pid, 0)
        cat.returncode = os.waitstatus_to_exitcode(status)
        printer.wait()
    wall_s = time.perf_counter() - began
    if cat.returncode != 0 or printer.returncode != 0:
        raise RuntimeError(f"printer | cat failed: {printer.returncode}, {cat.returncode}")
    lines = target.read_bytes().count(b"\n")
    if lines != LINES:
        raise RuntimeError(f"printer | cat wrote {lines} lines, expected {LINES}")
    return CatMeasure(usage.ru_utime + usage.ru_stime, wall_s)


def floor_runs() -> list[CatMeasure]:
    directory = short_tempdir()
    try:
        return [measure_cat(directory) for _ in range(CAT_RUNS)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def rows_for(turns: list[TurnMeasure], cats: list[CatMeasure]) -> list[Row]:
    per_100k = 100_000 / LINES
    worst_present = min(turn.lines_present for turn in turns)
    all_exact = all(turn.log_exact and turn.outcome == "ok" for turn in turns)
    gaps = [turn.min_gap_s for turn in turns if turn.min_gap_s is not None]
    smallest_gap = min(gaps) if gaps else None
    gap_ok = smallest_gap is None or smallest_gap >= MIN_GAP_S - GAP_TOLERANCE_S
    cpu = statistics.mean(turn.daemon_cpu_s for turn in turns) * per_100k
    cat_cpu = statistics.mean(cat.cat_cpu_s for cat in cats) * per_100k
    return [
        Row("output: lines in stdout.log", worst_present, None, "lines", f"= {LINES:,}", all_exact),
        Row("output: subprocess_output events", statistics.mean(t.output_events for t in turns),
            None, "count"),
        Row("output: min gap between events", smallest_gap, None, "s", "≥ 100 ms", gap_ok),
        Row("output: daemon CPU per 100k lines", cpu, cat_cpu, "s"),
        Row("output: wall time", statistics.median(t.wall_s for t in turns),
            statistics.median(c.wall_s for c in cats), "s"),
    ]  # fmt: skip


def run() -> BenchResult:
    """Warm the daemon with one turn, then measure ``TURNS`` turns; then the cat floor."""
    expected = expected_lines()
    with open_daemon() as daemon:
        workspace = daemon.workspace("ws-output")
        measure_turn(daemon, workspace, expected)
        turns = [measure_turn(daemon, workspace, expected) for _ in range(TURNS)]
    cats = floor_runs()
    details: dict[str, Any] = {
        "lines": LINES,
        "printer_argv": PRINTER_ARGV,
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
        "turns": [asdict(turn) for turn in turns],
        "cat": [asdict(cat) for cat in cats],
    }
    return BenchResult("output", rows_for(turns, cats), details)


def main() -> int:
    return report([run()], "output")


if __name__ == "__main__":
    sys.exit(main())
