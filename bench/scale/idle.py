"""Idle cost: CPU, wake-ups and memory of a daemon whose agents all sleep.

With ``level`` sleeping agents up, the daemon is left alone for a moment, then
watched for ``WINDOW_S``: CPU time and the number of times its threads were put
on a CPU (``schedstat``; for an idle process, its wake-ups), summed over every
thread, and its resident memory at the end.
"""

from __future__ import annotations

import time
from typing import Any

from bench.scale import procfs
from bench.scale.fleet import Fleet
from bench.scale.report import ScaleRow, at_most

NAME = "idle"
LEVELS = (0, 50, 200, 500)
SETTLE_S = 2.0
WINDOW_S = 5.0
MAX_RSS_MIB = 150.0
MAX_CPU_PERCENT = 2.0
MAX_WAKEUPS_PER_S = 5.0


def levels(kind: str) -> tuple[int, ...]:
    return LEVELS


def measure(fleet: Fleet, level: int) -> dict[str, Any]:
    time.sleep(SETTLE_S)
    tracker = procfs.SchedTracker(fleet.pid)
    spent, seconds = tracker.over(WINDOW_S)
    return {
        "window_s": seconds,
        "cpu_percent": spent.cpu_ns / 1e9 / seconds * 100,
        "wakeups_per_s": spent.runs / seconds,
        "rss_mib": procfs.rss_mib(fleet.pid),
        "threads": procfs.threads(fleet.pid),
        "open_fds": procfs.open_fds(fleet.pid),
    }


def _at(results: dict[str, Any], kind: str, level: int, key: str) -> float | None:
    value = results.get(kind, {}).get(level, {}).get(key)
    return None if value is None else float(value)


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    out: list[ScaleRow] = []
    for level in LEVELS:
        cells = {
            k: _at(results, k, level, "wakeups_per_s") for k in ("codyd", "supervisord", "circus")
        }
        wakeups = cells["codyd"]
        checked = level in (0, 500)
        out.append(ScaleRow(
            f"idle wake-ups, {level} live agents", "/s", wakeups, cells["supervisord"],
            cells["circus"],
            target=f"≤ {MAX_WAKEUPS_PER_S:g}/s" if checked else "—",
            passed=at_most(wakeups, MAX_WAKEUPS_PER_S) if checked else None,
        ))  # fmt: skip
    for level in LEVELS[1:]:
        cpu = {k: _at(results, k, level, "cpu_percent") for k in ("codyd", "supervisord", "circus")}
        checked = level == 500
        out.append(ScaleRow(
            f"idle CPU, {level} live agents", "%", cpu["codyd"], cpu["supervisord"], cpu["circus"],
            target=f"≤ {MAX_CPU_PERCENT:g} % of a core" if checked else "—",
            passed=at_most(cpu["codyd"], MAX_CPU_PERCENT) if checked else None,
        ))  # fmt: skip
    for level in LEVELS[1:]:
        rss = {k: _at(results, k, level, "rss_mib") for k in ("codyd", "supervisord", "circus")}
        checked = level == 500
        out.append(ScaleRow(
            f"daemon RSS, {level} live agents", "MiB",
            rss["codyd"], rss["supervisord"], rss["circus"],
            target=f"≤ {MAX_RSS_MIB:g} MiB" if checked else "—",
            passed=at_most(rss["codyd"], MAX_RSS_MIB) if checked else None,
        ))  # fmt: skip
    return out
