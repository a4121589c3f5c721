"""``codyctl status``: what a snapshot does not say, read from the run's events.

The snapshot has no spec and no per-turn detail; a person watching a loop wants both: what
ends the run (stop file, pattern, max turns), how the last turn went, the last test result and
the last line the agent wrote on stderr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from codyctl import render
from codyctl.client import Client

RECENT_OUTPUT_EVENTS = 200
Extras = list[tuple[str, str | None]]


def extras(client: Client, snapshot: Mapping[str, Any]) -> Extras:
    """The extra ``status`` lines for one run."""
    run_id = snapshot["run_id"]
    found: dict[str, dict[str, Any]] = {}
    kinds = ["run_queued", "turn_completed", "test_run_completed"]
    for event in client.stream("run.events", {"run_id": run_id, "after": 0, "types": kinds}):
        found[event["type"]] = event
    spec = (found.get("run_queued") or {}).get("data", {}).get("spec") or {}
    last_turn = found.get("turn_completed")
    return [
        ("watches", watched(spec, str(snapshot.get("workspace") or ""))),
        ("last turn", turn_text(last_turn)),
        ("last tests", tests_text(found.get("test_run_completed"))),
        ("last stderr", last_stderr(client, snapshot, last_turn)),
    ]


def watched(spec: Mapping[str, Any], workspace: str) -> str | None:
    if not spec:
        return None
    parts = []
    completion = spec.get("completion") or {}
    stop_file = completion.get("stop_file")
    if stop_file:
        there = os.path.exists(os.path.join(workspace, stop_file))
        parts.append(f"stop file {stop_file} ({'present' if there else 'not there yet'})")
    else:
        parts.append("no stop file")
    if completion.get("pattern"):
        parts.append(f"pattern {completion['pattern']!r}")
    if isinstance(spec.get("max_turns"), int):
        parts.append(f"max {spec['max_turns']} turns")
    return ", ".join(parts)


def turn_text(event: Mapping[str, Any] | None) -> str | None:
    if event is None:
        return None
    data = event.get("data") or {}
    parts = [f"{event.get('turn')}: {data.get('outcome', render.MISSING)}"]
    if data.get("exit_code") is not None:
        parts.append(f"exit {data['exit_code']}")
    if isinstance(data.get("duration_ms"), int | float):
        parts.append(render.duration(data["duration_ms"] / 1000))
    return ", ".join(parts)


def tests_text(event: Mapping[str, Any] | None) -> str | None:
    if event is None:
        return None
    data = event.get("data") or {}
    counts = ", ".join(f"{data.get(key, 0)} {key}" for key in ("passed", "failed", "skipped"))
    runner = f" ({data['runner']})" if data.get("runner") else ""
    return f"{counts}{runner} in turn {event.get('turn')}"


def last_stderr(
    client: Client, snapshot: Mapping[str, Any], last_turn: Mapping[str, Any] | None
) -> str | None:
    """The last non-blank stderr line: the failed turn's tail, else the recent output events."""
    tail = ((last_turn or {}).get("data") or {}).get("stderr_tail")
    line = _last_line(tail)
    if line:
        return line
    last_seq = snapshot.get("last_seq")
    if not isinstance(last_seq, int) or last_seq <= 0:
        return None
    params = {
        "run_id": snapshot["run_id"],
        "after": max(0, last_seq - RECENT_OUTPUT_EVENTS),
        "types": ["subprocess_output"],
    }
    for event in client.stream("run.events", params):
        data = event.get("data") or {}
        if data.get("stream") == "stderr":
            line = _last_line(data.get("text")) or line
    return line


def _last_line(text: Any) -> str | None:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else None
