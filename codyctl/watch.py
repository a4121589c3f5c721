"""``codyctl watch``: a live table of runs for a plain terminal (works over SSH).

Each refresh asks one connection for ``run.list`` and, for each listed run,
its newest event. On a terminal the screen is redrawn with two plain ANSI
sequences (home, clear to end), nothing terminal-specific; into a pipe or file
each refresh is written as plain text after a blank line, with no control codes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from codyctl import render
from codyctl.client import Client, ConnectError
from codyctl.follow import Backoff, Settings
from codyctl.render import MISSING, to_json

HOME_AND_CLEAR = "\x1b[H\x1b[2J"
COLUMNS = (*(title for title, _ in render.RUN_COLUMNS), "TOKENS", "COST", "LAST EVENT")


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


def row(run: Mapping[str, Any]) -> list[str]:
    """``list``'s cells for the run, then its tokens, cost and newest event type."""
    stats = run.get("stats") or {}
    tokens = (stats.get("tokens") or {}).get("total", 0)
    return [
        *render.run_row(run),
        f"{tokens:,}",
        f"${stats.get('cost_usd', 0.0):.4f}",
        str(run.get("last_event") or MISSING),
    ]


def table(runs: Sequence[Mapping[str, Any]]) -> str:
    return render.table([list(COLUMNS), *(row(run) for run in runs)])


def screen(runs: Sequence[Mapping[str, Any]], socket_path: str) -> str:
    header = f"codyd at {socket_path} — {len(runs)} runs — {time.strftime('%H:%M:%S')}"
    return f"{header}\n\n{table(runs)}\n"


def frame_json(runs: Sequence[Mapping[str, Any]], now: float) -> str:
    return to_json({"time": now, "runs": list(runs)})


def loop(settings: Settings, interval: float, limit: int, once: bool) -> None:
    """Draw the table every ``interval`` seconds; after a lost daemon, reconnect and go on."""
    # Screen control codes only for a terminal: a pipe or a file gets plain tables.
    clear = HOME_AND_CLEAR if sys.stdout.isatty() and not once else ""
    separator = "" if clear or once else "\n"
    backoff = Backoff(settings.timeout, None)
    connected = False
    while True:
        try:
            with settings.open() as client:
                backoff.connected()
                connected = True
                while True:
                    runs = snapshot(client, limit)
                    if settings.json:
                        sys.stdout.write(frame_json(runs, time.time()) + "\n")
                    else:
                        sys.stdout.write(clear + screen(runs, client.socket_path) + separator)
                    sys.stdout.flush()
                    if once:
                        return
                    time.sleep(interval)
        except ConnectError as exc:
            if not connected:
                raise
            backoff.pause(exc)
