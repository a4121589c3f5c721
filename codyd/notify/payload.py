"""What a webhook receives: one event of the store and the summary of its run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from codyd.model.events import Event


def message_id(node: str, event: Event) -> str:
    """``<node>:<gid>``: the same for every attempt, so a receiver can drop repeats."""
    return f"{node}:{event.gid}"


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(event: Event, run: dict[str, Any] | None) -> bytes:
    """``{"type", "timestamp", "data": {"event", "run"}}`` as compact UTF-8 JSON.

    ``run`` is the run's summary when the body is built (None for a run forgotten since).
    """
    document = {
        "type": event.type,
        "timestamp": iso8601(event.ts),
        "data": {"event": event.to_wire(), "run": run},
    }
    # Agents' text may hold anything; what JSON has no form for is sent as text.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()
