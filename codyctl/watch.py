"""``codyctl watch``: a live table of runs for a plain terminal (works over SSH).

Each refresh asks one connection for ``run.list`` and, for each listed run,
its newest event. The screen is redrawn with two
plain ANSI sequences (home, clear to end), nothing terminal-specific.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from codyctl import render
from codyctl.client import Client
from codyctl.render import MISSING, to_json

HOME_AND_CLEAR = "\x1b[H\x1b[2J"
COLUMNS = ("RUN ID", "STATE", "PHASE", "TURN", "LAST ACTIVITY", "TOKENS", "COST", "LAST EVENT")


def snapshot(client: Client, limit: int) -> list[dict[str, Any]]:
    """The newest runs, each with its last event type as ``last_event``."""
    runs: list[dict[str, Any]] = client.call("run.list", {"limit": limit})["runs"]
    for run in runs:
        run["last_event"] = None
        if run["last_seq"]:
            params = {"run_id": run["run_id"], "after": run["last_seq"] - 1}
            for event in client.stream("run.events", params):
                run["last_event"] = event["type"]
    return runs


def ago(ts: float | None, now: float) -> str:
    if not isinstance(ts, int | float):
        return MISSING
    seconds = max(0, int(now - ts))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def row(run: Mapping[str, Any], now: float) -> list[str]:
    stats = run.get("stats") or {}
    tokens = (stats.get("tokens") or {}).get("total", 0)
    return [
        str(run["run_id"]),
        str(run["state"]),
        str(run["phase"]),
        str(run.get("current_turn", 0)),
        ago(run.get("last_activity") or run.get("updated_at"), now),
        f"{tokens:,}",
        f"${stats.get('cost_usd', 0.0):.4f}",
        str(run.get("last_event") or MISSING),
    ]


def table(runs: Sequence[Mapping[str, Any]], now: float) -> str:
    return render.table([list(COLUMNS), *(row(run, now) for run in runs)])


def screen(runs: Sequence[Mapping[str, Any]], now: float, socket_path: str) -> str:
    header = f"codyd at {socket_path} — {len(runs)} runs — {time.strftime('%H:%M:%S')}"
    return f"{header}\n\n{table(runs, now)}\n"


def frame_json(runs: Sequence[Mapping[str, Any]], now: float) -> str:
    return to_json({"time": now, "runs": list(runs)})
