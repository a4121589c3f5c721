"""``codyctl status``: what a snapshot does not say, read from the run's events.

The snapshot has no spec and no per-turn detail; a person watching a loop wants both: what
ends the run (stop file, pattern, max turns), how the last turn went, the last test result and
the last line the agent wrote on stderr.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from codyctl import render
from codyctl.client import Client
from codyd.errors import InvalidParams, NotFound

RECENT_OUTPUT_EVENTS = 200
LAST_OF_TYPES = ("turn_completed", "test_run_completed")
Extras = list[tuple[str, str | None]]


def snapshot_and_extras(client: Client, handle: str) -> tuple[dict[str, Any], Extras]:
    """The run ``handle`` names and its extra ``status`` lines.

    For an exact id the snapshot and the events are asked for together, in one round trip.
    """
    status_request = client.submit("run.status", {"run_id": handle})
    events_request = client.submit("run.events", events_params(handle))
    try:
        snapshot: dict[str, Any] = client.result(status_request)
    except (NotFound, InvalidParams) as exc:
        from codyctl import handles

        if not handles.not_an_id(exc):
            raise
        with contextlib.suppress(NotFound, InvalidParams):
            list(client.items(events_request))

        snapshot = handles.resolve(client, handle)
        events_request = client.submit("run.events", events_params(snapshot["run_id"]))
    stderr_request = client.submit("run.events", stderr_params(snapshot))
    found: dict[str, Any] = {}
    updates: list[dict[str, Any]] = []
    for event in client.items(events_request):
        found[event["type"]] = event
        if event["type"] == "run_updated":
            updates.append(event)
    lines = extras(client, snapshot, found, stderr_request, updates)
    return snapshot, lines


def events_params(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "after": 0, "types": ["run_queued", "run_updated", *LAST_OF_TYPES]}


def stderr_params(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The recent output events, where the last stderr line of an ``ok`` turn is found."""
    last_seq = snapshot.get("last_seq")
    after = max(0, last_seq - RECENT_OUTPUT_EVENTS) if isinstance(last_seq, int) else 0
    return {"run_id": snapshot["run_id"], "after": after, "types": ["subprocess_output"]}


def extras(
    client: Client,
    snapshot: Mapping[str, Any],
    found: Mapping[str, Any],
    stderr_request: int,
    updates: list[dict[str, Any]] | None = None,
) -> Extras:
    """The extra lines, from the run's first event and its updates, its last of
    ``LAST_OF_TYPES`` and its recent output (the answer to ``stderr_request``)."""
    spec = updated_spec(
        (found.get("run_queued") or {}).get("data", {}).get("spec") or {}, updates or []
    )
    last_turn = found.get("turn_completed")
    recent_stderr = None
    for event in client.items(stderr_request):
        data = event.get("data") or {}
        if data.get("stream") == "stderr":
            recent_stderr = _last_line(data.get("text")) or recent_stderr
    failed_tail = _last_line(((last_turn or {}).get("data") or {}).get("stderr_tail"))
    return [
        ("watches", watched(spec, str(snapshot.get("workspace") or ""))),
        ("last turn", turn_text(last_turn)),
        ("last tests", tests_text(found.get("test_run_completed"))),
        ("last stderr", failed_tail or recent_stderr),
        ("messages", messages_text(snapshot.get("operator_messages_queued"))),
        ("last update", update_text(snapshot.get("last_update"))),
    ]


def updated_spec(spec: Mapping[str, Any], updates: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec run_queued showed, with the top-level fields every run_updated changed."""
    current = dict(spec)
    for event in updates:
        for field, change in ((event.get("data") or {}).get("changes") or {}).items():
            if "." not in field and isinstance(change, Mapping):
                current[field] = change.get("to")
    return current


def messages_text(queued: Any) -> str | None:
    if not isinstance(queued, int) or not queued:
        return None
    return f"{queued} operator message{'s' if queued != 1 else ''} for the next turn"


def update_text(update: Any) -> str | None:
    """The newest run.update: what it changed, and when."""
    if not isinstance(update, Mapping):
        return None
    from codyctl.update import describe_changes

    return "; ".join(describe_changes(update)) + f" (at {render.local_time(update.get('at'))})"


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


def _last_line(text: Any) -> str | None:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else None
