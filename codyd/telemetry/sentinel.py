"""Sentinel lines: one-line JSON objects through which any agent reports telemetry.

The rules and the allowed types: docs/events.md §6.

A sentinel is a whole output line that, once ANSI codes and surrounding whitespace are
removed, is a JSON object with a top-level ``__cody_event__`` object carrying a string
``type``. Allowed types become that event with normalized data, except the report types
(``rate_limited``, ``auth_failed``, ``context_exhausted``), which decide the turn's
outcome instead (:func:`report_of`); every other type becomes a ``custom`` event, so
output can never forge lifecycle events (``run_*``, ``turn_*``).
An allowed type whose fields are unusable also becomes ``custom``, with an ``invalid``
reason, so nothing is counted and nothing is lost.

The data of every sentinel is safe to encode as msgpack and JSON: integers fit in 64
bits, floats are finite, strings hold no lone surrogates (they become U+FFFD) and the
event object nests at most :data:`MAX_DEPTH` levels; a line breaking these limits is
not a sentinel (it stays text).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from codyd.agents.base import AgentReport
from codyd.model.events import REPORT_SENTINEL_TYPES, SENTINEL_TYPES
from codyd.model.state import Outcome
from codyd.telemetry.ansi import strip_ansi

SENTINEL_KEY: Final = "__cody_event__"
CUSTOM_TYPE: Final = "custom"
MAX_SENTINEL_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 64
DEFAULT_TEST_RUNNER: Final = "sentinel"
DEFAULT_MESSAGE_ROLE: Final = "assistant"


_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Sentinel:
    """One telemetry event reported by a sentinel line."""

    type: str
    data: dict[str, Any]


class _InvalidField(ValueError):
    """A field of an allowed sentinel type has an unusable value."""


class _TooDeep(ValueError):
    """The event object nests deeper than :data:`MAX_DEPTH`."""


def parse_sentinel(line: str) -> Sentinel | None:
    """Return the event a sentinel line reports, or None when the line is not a sentinel."""
    payload = _decode_object(line)
    if payload is None:
        return None
    event = payload.get(SENTINEL_KEY)
    if not isinstance(event, dict):
        return None
    try:
        event = _clean(event, 1)
    except _TooDeep:
        return None
    event_type = event.get("type")
    if not isinstance(event_type, str):
        return None
    fields = {key: value for key, value in event.items() if key != "type"}
    normalize = _NORMALIZERS.get(event_type)
    if normalize is None:
        return Sentinel(CUSTOM_TYPE, {"type": event_type, **fields})
    try:
        data = normalize(fields)
    except _InvalidField as exc:
        return Sentinel(CUSTOM_TYPE, {"type": event_type, **fields, "invalid": str(exc)})
    return Sentinel(event_type, data)


def report_of(sentinel: Sentinel) -> AgentReport | None:
    """The turn outcome a report sentinel stands for; None for a telemetry sentinel."""
    if sentinel.type not in REPORT_SENTINEL_TYPES:
        return None
    data = sentinel.data
    return AgentReport(
        Outcome(sentinel.type), data["message"], code=sentinel.type, resets_at=data.get("resets_at")
    )


def _decode_object(line: str) -> dict[str, Any] | None:
    """Parse the line as one strict JSON object, or return None."""
    # The one gate every output line passes: most lines are rejected here, at the cost of a
    # substring search. The key is written as is: no encoder escapes plain ASCII.
    if SENTINEL_KEY not in line:
        return None
    if len(line) > MAX_SENTINEL_BYTES // 4 and _utf8_length(line) > MAX_SENTINEL_BYTES:
        return None
    text = strip_ansi(line).strip()
    if not text.startswith("{"):
        return None
    try:
        payload = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _parse_int(literal: str) -> int:
    value = int(literal)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"integer {literal[:32]} does not fit in 64 bits")
    return value


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal[:32]} is out of range")
    return value


def _reject_constant(literal: str) -> float:
    raise ValueError(f"{literal} is not JSON")


def _clean(value: Any, depth: int) -> Any:
    """Copy a decoded JSON value with lone surrogates replaced, enforcing the depth limit."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict | list) and depth > MAX_DEPTH:
        raise _TooDeep(f"event nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {_clean_text(key): _clean(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item, depth + 1) for item in value]
    return value


def _clean_text(text: str) -> str:
    return _SURROGATE_RE.sub("\ufffd", text)


def _json_kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _count(fields: dict[str, Any], *names: str) -> int:
    """The first of ``names`` present, as an integer >= 0; 0 when none is present."""
    for name in names:
        if name in fields:
            value = fields[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _InvalidField(f"{name}: expected an integer >= 0, got {_json_kind(value)}")
            return value
    return 0


def _text(fields: dict[str, Any], name: str, default: str | None = None) -> str:
    """The string field ``name``; required when ``default`` is None."""
    if name not in fields:
        if default is None:
            raise _InvalidField(f"{name}: required, expected a string")
        return default
    value = fields[name]
    if not isinstance(value, str):
        raise _InvalidField(f"{name}: expected a string, got {_json_kind(value)}")
    return value


def _path(fields: dict[str, Any]) -> str:
    path = _text(fields, "path")
    if not path:
        raise _InvalidField("path: expected a non-empty string")
    return path


def _file_event(fields: dict[str, Any]) -> dict[str, Any]:
    return {"path": _path(fields)}


def _log_updated(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": _path(fields),
        "bytes_added": _count(fields, "bytes_added"),
        "tail": _text(fields, "tail", ""),
    }


def _test_run_started(fields: dict[str, Any]) -> dict[str, Any]:
    return {"command": _text(fields, "command", "")}


def _test_run_completed(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "passed": _count(fields, "passed"),
        "failed": _count(fields, "failed"),
        "skipped": _count(fields, "skipped"),
        "runner": _text(fields, "runner", DEFAULT_TEST_RUNNER),
    }


def _token_usage(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": _count(fields, "input", "input_tokens"),
        "output": _count(fields, "output", "output_tokens"),
        "cached": _count(fields, "cached", "cached_tokens", "cached_input_tokens"),
    }


def _cost(fields: dict[str, Any]) -> dict[str, Any]:
    if "usd" not in fields:
        raise _InvalidField("usd: required, expected a number >= 0")
    usd = fields["usd"]
    if (
        isinstance(usd, bool)
        or not isinstance(usd, int | float)
        or not math.isfinite(usd)
        or usd < 0
    ):
        raise _InvalidField(f"usd: expected a number >= 0, got {_json_kind(usd)}")
    return {"usd": float(usd)}


def _message(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": _text(fields, "role", DEFAULT_MESSAGE_ROLE),
        "text": _text(fields, "text"),
    }


def _resets_at(fields: dict[str, Any]) -> float | None:
    value = fields.get("resets_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _InvalidField(
            f"resets_at: expected unix seconds (a number >= 0) or null, got {_json_kind(value)}"
        )
    return float(value)


def _rate_limited(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "resets_at": _resets_at(fields),
        "message": _text(fields, "message", "the agent reported a usage limit"),
    }


def _auth_failed(fields: dict[str, Any]) -> dict[str, Any]:
    return {"message": _text(fields, "message", "the agent reported that its login was refused")}


def _context_exhausted(fields: dict[str, Any]) -> dict[str, Any]:
    return {"message": _text(fields, "message", "the agent's context window is full")}


_NORMALIZERS: Final[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "file_read": _file_event,
    "file_written": _file_event,
    "file_deleted": _file_event,
    "log_updated": _log_updated,
    "test_run_started": _test_run_started,
    "test_run_completed": _test_run_completed,
    "token_usage": _token_usage,
    "cost": _cost,
    "message": _message,
    "rate_limited": _rate_limited,
    "auth_failed": _auth_failed,
    "context_exhausted": _context_exhausted,
}
assert frozenset(_NORMALIZERS) == SENTINEL_TYPES | REPORT_SENTINEL_TYPES
