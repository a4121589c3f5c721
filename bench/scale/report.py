"""Figures of the scale benchmarks: percentiles that allow a never, rows, the table, the JSON.

Each row puts codyd beside supervisord and circus, measured in the same run, and
gives codyd's figure as a ratio of each; a row with a target also says pass or
fail. Rows with no anchor figure say why in their note.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import write_json

INF = math.inf


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, linearly interpolated; ``inf`` values (never arrived) allowed."""
    if not values:
        raise ValueError("percentile: expected at least one value, got none")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    if math.isinf(ordered[high]) or rank == low:
        return ordered[high] if rank > low else ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Quantiles:
    """p50 / p99 / max of some latencies in seconds, and how many there were."""

    count: int
    p50: float
    p99: float
    max: float
    missing: int = 0  # values that never arrived (counted as infinitely late)

    @classmethod
    def of(cls, values: Sequence[float]) -> Quantiles:
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p99=percentile(values, 99),
            max=max(values),
            missing=sum(1 for value in values if math.isinf(value)),
        )


ANCHORS = ("supervisord", "circus")


def at_most(value: float | None, limit: float) -> bool:
    """A target met: the figure exists and is not above ``limit``."""
    return value is not None and value <= limit


def at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit


@dataclass(frozen=True)
class ScaleRow:
    """One figure for codyd and each anchor; ``passed`` is None for information only."""

    benchmark: str
    unit: str
    codyd: float | None
    supervisord: float | None = None
    circus: float | None = None
    target: str = "—"
    passed: bool | None = None
    note: str = ""

    def ratio(self, anchor: str) -> float | None:
        theirs: float | None = getattr(self, anchor)
        if self.codyd is None or theirs is None or theirs <= 0 or math.isinf(theirs):
            return None
        return self.codyd / theirs

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for name, value in list(document.items()):
            if isinstance(value, float) and math.isinf(value):
                document[name] = "inf"
        document["ratios"] = {anchor: self.ratio(anchor) for anchor in ANCHORS}
        return document


def _seconds(value: float) -> str:
    if value < 0.001:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s"


_FORMATS: dict[str, Callable[[float], str]] = {
    "s": _seconds,
    "%": lambda value: f"{value:.3g} %",
    "MiB": lambda value: f"{value:.1f} MiB",
    "events/s": lambda value: f"{value:,.0f} events/s",
    "/s": lambda value: f"{value:.2g}/s",
    "×": lambda value: f"{value:.2f}×",
    "count": lambda value: f"{value:,.0f}",
}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "never"
    formatter = _FORMATS.get(unit)
    return formatter(value) if formatter is not None else f"{value:.3g} {unit}"


def _ratio_cell(row: ScaleRow, anchor: str) -> str:
    ratio = row.ratio(anchor)
    if ratio is not None:
        return f"{ratio:.3g}×"
    return "—"


def markdown_table(rows: Sequence[ScaleRow]) -> str:
    lines = [
        "| benchmark | codyd | supervisord | circus | codyd / supervisord | codyd / circus "
        "| target | pass/fail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = {True: "pass", False: "FAIL", None: "—"}[row.passed]
        cells = [
            row.benchmark + (f" ({row.note})" if row.note else ""),
            format_value(row.codyd, row.unit),
            format_value(row.supervisord, row.unit),
            format_value(row.circus, row.unit),
            _ratio_cell(row, "supervisord"),
            _ratio_cell(row, "circus"),
            row.target,
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def save(name: str, rows: Sequence[ScaleRow], details: dict[str, Any]) -> Path:
    """Write the rows and every detail behind them to ``bench/results/<name>.json``."""
    return write_json(
        name,
        {
            "passed": all(row.passed is not False for row in rows),
            "rows": [row.to_json() for row in rows],
            "details": _jsonable(details),
        },
    )
