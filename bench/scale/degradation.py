"""Does codyd's cost follow its work rather than its size? The same figures at 50 and 500 runs.

Each figure measured with 50 and with 500 live runs (the page of ``run.list`` has
a fixed size of 50, so both levels ask for the same work); the target is that
none grows by more than ``MAX_GROWTH`` from 50 to 500.
"""

from __future__ import annotations

from typing import Any

from bench.scale.report import ScaleRow

MAX_GROWTH = 2.0
LOW, HIGH = 50, 500


def _figures(results: dict[str, Any], level: int) -> dict[str, float | None]:
    def get(workload: str, *keys: str) -> float | None:
        value: Any = results.get(workload, {}).get("codyd", {}).get(level)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return None if value is None else float(value)

    return {
        "run.list page of 50 p50": get("rpc", "page", "p50"),
        "run.status p50": get("rpc", "status", "p50"),
        "daemon.ping p50": get("rpc", "ping", "p50"),
        "sentinel line → run.events p99": get("latency", "sentinel → run.events", "p99"),
        "sentinel line → codyctl tail -f p99": get("latency", "sentinel → codyctl tail -f", "p99"),
        "plain line → run.events p99": get("latency", "plain → run.events", "p99"),
        "idle CPU": get("idle", "cpu_percent"),
        "idle wake-ups": get("idle", "wakeups_per_s"),
        "daemon RSS": get("idle", "rss_mib"),
    }


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    low, high = _figures(results, LOW), _figures(results, HIGH)
    out = []
    for name in low:
        before, after = low[name], high[name]
        growth = None if before is None or after is None or before <= 0 else after / before
        out.append(
            ScaleRow(
                f"growth {LOW} → {HIGH} runs: {name}",
                "×",
                growth,
                target=f"≤ {MAX_GROWTH:g}×",
                passed=growth is not None and growth <= MAX_GROWTH,
            )
        )
    return out
