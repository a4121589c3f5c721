"""Structured logs: one JSON object per line on stderr, or console when a TTY.

What the lines hold and how to read them: docs/operations.md §5.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(log_format: str | None, level: str) -> None:
    if log_format is None:
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


# The unix second last formatted and its ISO text, replaced together (logs come from threads too).
_second: tuple[int, str] = (-1, "")


def _timestamp(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """``timestamp``: ISO 8601 UTC with microseconds, the date part formatted once a second.

    The same text as structlog's ``TimeStamper(fmt="iso", utc=True)``, for a
    fraction of its cost: hundreds of runs starting at once log thousands of lines.
    """
    global _second
    now = time.time()
    second = int(now)
    formatted = _second
    if formatted[0] != second:
        formatted = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event["timestamp"] = f"{formatted[1]}.{int((now - second) * 1_000_000):06d}Z"
    return event
