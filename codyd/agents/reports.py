"""What an agent's error text says stopped it (docs/agents.md §4): limits, logins, context, service.

The adapters read their CLI's structured fields first (a status, an error code) and fall
back to these rules on the message text. Each rule is the words a CLI is known to print;
the first that matches decides, in the order rate limit, login, context, service.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from codyd.model.state import Outcome

# An HTTP status as the CLIs quote it: "API Error: 401 ...", "unexpected status 503 ...".
_STATUS_WORDS: Final = r"(?:\bstatus|\berror|\bhttp)[: ]\s*"
_RATE_LIMITED_RE = re.compile(
    r"(?i)usage limit reached|usage_limit_reached|hit your (?:usage )?limit|\blimit reached\b"
    r"|rate[ _]limit(?:ed| reached|_error| exceeded)|too many requests|try again at\b"
    rf"|{_STATUS_WORDS}429\b"
    r"|rate_limit_exceeded|quota exceeded|insufficient_quota"
)
_AUTH_RE = re.compile(
    r"(?i)invalid api key|invalid x-api-key|please run /login|not logged in|oauth token has expired"
    r"|authentication_(?:error|failed)|failed to authenticate|\b40[13] (?:unauthorized|forbidden)\b"
    rf"|{_STATUS_WORDS}40[13]\b"
    r"|unauthorized|token (?:has )?expired|refresh[ _]token|codex login|invalid_api_key"
    r"|permission_error|credentials? (?:were |was )?(?:refused|expired|invalid)"
)
_CONTEXT_RE = re.compile(
    r"(?i)prompt is too long|context_length_exceeded|exceeds? the context window"
    r"|context (?:window|length)[^\n]{0,40}?exceed|exceed[^\n]{0,40}?context (?:window|length)"
    r"|maximum context length"
    # codex 0.171.0 on a context_length_exceeded response.failed.
    r"|ran out of room in the model's context window"
)
_UNAVAILABLE_RE = re.compile(
    r"(?i)connection refused|econnrefused|econnreset|etimedout|enotfound|eai_again|getaddrinfo"
    r"|failed to lookup address|name does not resolve|waiting for network|connection failed"
    r"|error sending request|stream disconnected|network (?:is )?unreachable|fetch failed"
    r"|overloaded|service unavailable|bad gateway|gateway time-?out|internal server error"
    r"|server_error|connection_failed|request timed out"
    rf"|{_STATUS_WORDS}5\d\d\b"
)
# Claude: "Claude AI usage limit reached|1763787600" (the reset in unix seconds).
_EPOCH_RE = re.compile(r"\|(\d{10})\b")
# "resets 3pm", "resets at 4:12 PM (Europe/Berlin)", codex "try again at 4:12 PM".
_CLOCK_RE = re.compile(
    r"(?i)(?:resets?(?: at)?|try again at)\s+(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?"
    r"(?:\s*\(([A-Za-z_]+/[A-Za-z_/+-]+|UTC)\))?"
)
# "try again in 2 hours 5 minutes", "resets in 30m", "in 45 seconds".
_UNIT = r"(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b"
_SPAN_JOIN = r"(?:\s*,\s*|\s+and\s+|\s+)"
_IN_RE = re.compile(
    rf"(?i)(?:try again|resets?|retry) in\s+(\d+\s*{_UNIT}(?:{_SPAN_JOIN}\d+\s*{_UNIT})*)"
)
_SPAN_RE = re.compile(r"(?i)(\d+)\s*(d|h|m|s)")
_STATUS_RE = re.compile(
    r"(?i)\b(?:status|error|http)[: ]\s*(\d{3})\b|\b(\d{3}) (?:unauthorized|forbidden|too many)"
)
MAX_MESSAGE_CHARS: Final = 4096


@dataclass(frozen=True, slots=True)
class Reading:
    """What a message says stopped the agent, and when a limit resets (unix seconds)."""

    outcome: Outcome
    resets_at: float | None = None


def outcome_of_status(status: int | None) -> Outcome | None:
    """An HTTP status the CLI gave up on: 401/403 login, 429 limit, 5xx (529 overloaded) service."""
    if status in (401, 403):
        return Outcome.AUTH_FAILED
    if status == 429:
        return Outcome.RATE_LIMITED
    if status is not None and 500 <= status <= 599:
        return Outcome.UNAVAILABLE
    return None


def read_message(text: str, now: float | None = None) -> Reading | None:
    """The outcome ``text`` names, by the rules above, or None for an ordinary error."""
    if _RATE_LIMITED_RE.search(text):
        return Reading(Outcome.RATE_LIMITED, reset_time(text, now))
    if _AUTH_RE.search(text):
        return Reading(Outcome.AUTH_FAILED)
    if _CONTEXT_RE.search(text):
        return Reading(Outcome.CONTEXT_EXHAUSTED)
    if _UNAVAILABLE_RE.search(text):
        return Reading(Outcome.UNAVAILABLE)
    return None


def status_in(text: str) -> str | None:
    """The HTTP status a message quotes (``unexpected status 401 Unauthorized`` → ``401``)."""
    match = _STATUS_RE.search(text)
    return (match[1] or match[2]) if match else None


def reset_time(text: str, now: float | None = None) -> float | None:
    """When the text says the limit resets: an epoch, a span (``in 2 hours``) or a clock time."""
    now = time.time() if now is None else now
    if match := _EPOCH_RE.search(text):
        return float(match[1])
    if match := _IN_RE.search(text):
        units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        spans = _SPAN_RE.findall(match[1])
        return now + sum(int(count) * units[unit.lower()] for count, unit in spans)
    if match := _CLOCK_RE.search(text):
        return _next_clock_time(match, now)
    return None


def _next_clock_time(match: re.Match[str], now: float) -> float | None:
    hour, minute = int(match[1]), int(match[2] or 0)
    meridiem = (match[3] or "").replace(".", "").lower()
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    zone = None
    if match[4]:
        try:
            zone = ZoneInfo(match[4])
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
    current = (
        datetime.fromtimestamp(now, zone) if zone else datetime.fromtimestamp(now).astimezone()
    )
    candidate = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() <= now:
        candidate += timedelta(days=1)
    return candidate.timestamp()


def shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"
