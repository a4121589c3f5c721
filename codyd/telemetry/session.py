"""Session ids announced in plain text, as ``session id: <uuid>`` (docs/events.md §8)."""

from __future__ import annotations

import re

from codyd.telemetry.ansi import strip_ansi

UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# ASCII-only so that \b, \s and the case-insensitive hex classes never match other scripts;
# the lookahead rejects a longer hex run, which is not this uuid.
SESSION_RE = re.compile(
    rf"(?ia)\bsession[ _-]?id\s*[:=]\s*({UUID_PATTERN})(?![0-9a-f])",
)


def find_session_id(line: str) -> str | None:
    """Return the lowercase uuid of the first ``session id: <uuid>`` in ``line``, if any."""
    match = SESSION_RE.search(strip_ansi(line))
    if match is None:
        return None
    return match.group(1).lower()
