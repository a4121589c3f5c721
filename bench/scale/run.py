"""Scale and latency of codyd beside supervisord and circus: every workload, one table.

``python -m bench.scale.run [--only WORKLOAD]... [--no-anchors]``; writes
``bench/results/scale.json``; exit status 1 if a target was missed.

Workloads measured on fleets of sleeping agents, level by level (a fresh
daemon per level): ``idle``, ``rpc``, ``cli``, ``latency``. Workloads with
daemons of their own: ``lifecycle`` (start of 200, SIGTERM to exit),
``throughput`` (events/s).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from bench.scale import cli, degradation, idle, latency, lifecycle, rpc, throughput
from bench.scale.circus_fleet import CircusFleet
from bench.scale.codyd_fleet import CodydFleet
from bench.scale.fleet import (
    Fleet,
    Program,
    remove_directories,
    running,
    sleep_argv,
    sleepers,
)
from bench.scale.report import ScaleRow, markdown_table, save
from bench.scale.supervisord_fleet import SupervisordFleet
from bench.scale.venv import Anchors, ensure_anchors, installed_versions

LADDER: tuple[ModuleType, ...] = (idle, rpc, cli, latency)
SEPARATE: tuple[ModuleType, ...] = (lifecycle, throughput)
Maker = Callable[[Sequence[Program]], Fleet]


def fleet_makers(anchors: Anchors | None) -> dict[str, Maker]:
    makers: dict[str, Maker] = {"codyd": CodydFleet}
    if anchors is not None and anchors.available("supervisord"):
        makers["supervisord"] = lambda programs: SupervisordFleet(programs, anchors)
    if anchors is not None and anchors.available("circus"):
        makers["circus"] = lambda programs: CircusFleet(programs, anchors)
    return makers


def ladder(makers: dict[str, Maker], modules: Sequence[ModuleType]) -> dict[str, Any]:
    """Each kind of daemon at each level its workloads ask for, with ``level`` sleeping agents."""
    results: dict[str, Any] = {module.NAME: {} for module in modules}
    for kind, make in makers.items():
        wanted = sorted({level for module in modules for level in module.levels(kind)})
        for level in wanted:
            measuring = [module for module in modules if level in module.levels(kind)]
            programs = sleepers(level, sleep_argv())
            for module in measuring:
                programs += getattr(module, "extra_programs", lambda _kind: [])(kind)
            began = time.monotonic()
            with running(make(programs)) as fleet:
                for module in measuring:
                    results[module.NAME].setdefault(kind, {})[level] = module.measure(fleet, level)
            names = ", ".join(module.NAME for module in measuring)
            print(f"{kind} with {level} agents: {names} in {time.monotonic() - began:.1f} s",
                  file=sys.stderr)  # fmt: skip
    return results


def measure_all(makers: dict[str, Maker], chosen: set[str]) -> dict[str, Any]:
    # The daemons' own start and stop come first, on a file system not yet churned.
    results: dict[str, Any] = {}
    for module in SEPARATE:
        if module.NAME in chosen:
            started = time.monotonic()
            results[module.NAME] = module.run(makers)
            print(f"{module.NAME} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    results.update(ladder(makers, [module for module in LADDER if module.NAME in chosen]))
    return results


def missing_rows(anchors: Anchors | None) -> list[ScaleRow]:
    if anchors is None:
        return [ScaleRow("anchors", "—", None, note="not measured (--no-anchors)")]
    return [
        ScaleRow(f"{name}: not measured", "—", None, note=reason)
        for name, reason in anchors.missing.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.run", description=__doc__)
    names = [module.NAME for module in (*LADDER, *SEPARATE)]
    parser.add_argument("--only", action="append", choices=names, help="run only this workload")
    parser.add_argument("--no-anchors", action="store_true", help="measure codyd alone")
    args = parser.parse_args(argv)
    chosen = set(args.only or names)
    began = time.monotonic()
    anchors = None if args.no_anchors else ensure_anchors()
    try:
        results = measure_all(fleet_makers(anchors), chosen)
    finally:
        remove_directories()
    rows = missing_rows(anchors)
    for module in (*LADDER, *SEPARATE):
        if module.NAME in chosen:
            rows += module.rows(results[module.NAME])
    if {"rpc", "latency", "idle"} <= chosen:
        rows += degradation.rows(results)
    print(markdown_table(rows))
    details = {
        "results": results,
        "anchors": None if anchors is None else installed_versions(anchors),
        "missing_anchors": None if anchors is None else anchors.missing,
        "bench_seconds": time.monotonic() - began,
    }
    path = save("scale", rows, details)
    print(f"\nresults written to {path} in {details['bench_seconds']:.0f} s")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
