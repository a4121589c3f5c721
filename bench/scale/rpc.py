"""RPC round trips: a no-op call, one program's status, and the list of every program.

Each daemon is called through its own client library on one connection
(codyd: ``codyctl.client``; supervisord: its XML-RPC transport over its Unix
socket; circus: its zmq client over ipc): a few warm-up calls, then up to
``MAX_CALLS`` calls or ``BUDGET_S`` seconds. The calls compared:

* **round trip**: ``daemon.ping`` / ``supervisor.getState`` / ``numwatchers``
* **status**: ``run.status`` / ``supervisor.getProcessInfo`` / ``status <name>``
* **list**: ``run.list`` (limit 1000) / ``supervisor.getAllProcessInfo`` / ``status``
* **page** (codyd only): ``run.list`` with ``limit: 50``, whatever the number of runs
"""

from __future__ import annotations

from typing import Any

from bench.scale.fleet import Fleet
from bench.scale.report import Quantiles, ScaleRow

NAME = "rpc"
MAX_CALLS = 500
BUDGET_S = 1.5
CALLS = ("ping", "status", "list", "page")
LIST_FRACTION = 1 / 20


def levels(kind: str) -> tuple[int, ...]:
    return (50, 200, 500) if kind == "codyd" else (50, 200)


def measure(fleet: Fleet, level: int) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    for what in CALLS:
        latencies = fleet.rpc(what, MAX_CALLS, BUDGET_S)
        if latencies is not None:
            measured[what] = Quantiles.of(latencies).__dict__
    return measured


def p50(results: dict[str, Any], kind: str, level: int, what: str) -> float | None:
    figures = results.get(kind, {}).get(level, {}).get(what)
    return None if figures is None else float(figures["p50"])


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    labels = {
        "ping": "RPC round trip p50",
        "status": "status RPC p50",
        "list": "list RPC p50 (every program)",
    }
    out: list[ScaleRow] = []
    for what, label in labels.items():
        for level in (50, 200):
            cells = {k: p50(results, k, level, what) for k in ("codyd", "supervisord", "circus")}
            row = ScaleRow(f"{label}, {level} programs", "s", cells["codyd"],
                           cells["supervisord"], cells["circus"])  # fmt: skip
            if what == "list" and level == 200:
                ratio = row.ratio("supervisord")
                row = ScaleRow(
                    row.benchmark, row.unit, row.codyd, row.supervisord, row.circus,
                    target="≤ 1/20 of supervisord",
                    passed=ratio is not None and ratio <= LIST_FRACTION,
                )  # fmt: skip
            out.append(row)
    return out
