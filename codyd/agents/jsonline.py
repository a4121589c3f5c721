"""The JSON lines the codex and claude adapters read, and the values inside them.

An agent's line becomes a JSON object only when it holds exactly one (no arrays, no
prose around it); the values read from it are checked for the types the event store
takes (64-bit integers, bounded nesting, strings UTF-8 can encode), and anything else is
dropped or replaced rather than raised: an agent's output never fails a turn.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

MAX_INT: Final = 2**63 - 1
_MAX_DEPTH: Final = 24
_SURROGATE_RE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def load_object(line: str) -> dict[str, Any] | None:
    """The JSON object ``line`` holds, or None for any other line (text, arrays, bad JSON)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if _SURROGATE_RE.search(text):
        try:
            scrubbed: dict[str, Any] = _scrub(value)
        except RecursionError:
            return None
        return scrubbed
    return value


def _scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced (UTF-8 must encode them)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    return value


def str_or_none(value: Any) -> str | None:
    """``value`` if it is a string, else None."""
    return value if isinstance(value, str) else None


def count(value: Any) -> int:
    """A token count: a non-negative integer (``12`` or ``12.0``) below 2**63, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_INT:
        return value
    return 0


def exit_status(value: Any) -> int | None:
    """A process exit code as reported (an int in the 64-bit range), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT:
        return value
    return None


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON value made safe for the event store: 64-bit ints, bounded nesting."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -MAX_INT <= value <= MAX_INT else str(value)
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, list):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item, depth + 1) for key, item in value.items()}
    return str(value)
