"""What codyd writes into Redis: stream entry fields, the run meta hash, the heartbeat.

The fields are those of docs/redis.md ("Stream entries", "Run meta", "Heartbeat").

Pure functions. Times are unix milliseconds (integers, truncated), absent values are
empty strings and booleans are ``true``/``false``, so every field reads back as text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from codyd.model.events import Event

# A value as redis-py sends it: bytes as they are, str as UTF-8, int in decimal.
Value = bytes | str | int


def unix_ms(seconds: float | None) -> int | None:
    """Float unix seconds as integer milliseconds (None stays None)."""
    return None if seconds is None else int(seconds * 1000)


def hash_text(value: Any) -> str:
    """One scalar as hash text: None is empty, booleans are true/false, floats round-trip."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def data_json(data: Mapping[str, Any]) -> bytes:
    """An event's data as compact JSON text in UTF-8.

    Text that cannot be UTF-8 (a lone surrogate) is written with ``\\u`` escapes
    instead, so no event can make a batch unsendable.
    """
    try:
        return _COMPACT.encode(data).encode("utf-8")
    except UnicodeEncodeError:
        return _COMPACT_ASCII.encode(data).encode("ascii")


def event_fields(event: Event, data: bytes | None = None) -> list[Value]:
    """The entry of one event as a flat field/value list, in the order of docs/redis.md.

    ``data`` is the event's data already as JSON (from :func:`data_json`), if at hand.
    """
    return [
        "seq",
        event.seq,
        "gid",
        event.gid,
        "run_id",
        event.run_id,
        "ts",
        int(event.ts * 1000),
        "type",
        event.type,
        "turn",
        "" if event.turn is None else event.turn,
        "data",
        data_json(event.data) if data is None else data,
    ]


def meta_fields(summary: Mapping[str, Any]) -> dict[str, str]:
    """A run snapshot (``RunRecord.summary()``) flattened into docs/redis.md "Run meta"."""
    stats = summary["stats"]
    tokens = stats["tokens"]
    completion = summary["completion"]
    error = summary["error"] or {}
    wait = summary.get("wait") or {}
    attention = summary.get("attention") or {}
    fields: dict[str, Any] = {
        "runId": summary["run_id"],
        "name": summary["name"],
        "state": summary["state"],
        "phase": summary["phase"],
        "workspace": summary["workspace"],
        "agent": summary["agent"],
        "pid": summary["pid"],
        "currentTurn": summary["current_turn"],
        "sessionId": summary["session_id"],
        "stats.turns": stats["turns"],
        "stats.tokens": tokens["total"],
        "stats.tokens.input": tokens["input"],
        "stats.tokens.output": tokens["output"],
        "stats.tokens.cached": tokens["cached"],
        "stats.costUsd": stats["cost_usd"],
        "completion.detected": completion["detected"],
        "completion.reason": completion["reason"],
        "completion.line": completion["line"],
        "error.code": error.get("code"),
        "error.message": error.get("message"),
        "error.retryable": error.get("retryable"),
        "wait.reason": wait.get("reason"),
        "wait.until": unix_ms(wait.get("until")),
        "wait.account": wait.get("account"),
        "attention.reason": attention.get("reason"),
        "attention.message": attention.get("message"),
        "createdAt": unix_ms(summary["created_at"]),
        "startedAt": unix_ms(summary["started_at"]),
        "updatedAt": unix_ms(summary["updated_at"]),
        "finishedAt": unix_ms(summary["finished_at"]),
        "lastActivity": unix_ms(summary["last_activity"]),
        "node": summary["node"],
        "lastSeq": summary["last_seq"],
    }
    return {name: hash_text(value) for name, value in fields.items()}


def heartbeat_fields(
    pid: int, version: str, started_at: float, ts: float, active_runs: int
) -> dict[str, str]:
    """The daemon's heartbeat hash (docs/redis.md "Heartbeat")."""
    return {
        "pid": str(pid),
        "version": version,
        "startedAt": str(unix_ms(started_at)),
        "ts": str(unix_ms(ts)),
        "activeRuns": str(active_runs),
    }
