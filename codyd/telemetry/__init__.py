"""Pure parsers of agent output: ANSI removal, sentinels, session ids and test summaries."""

from codyd.telemetry.ansi import strip_ansi
from codyd.telemetry.sentinel import ALLOWED_TYPES, Sentinel, parse_sentinel
from codyd.telemetry.session import SESSION_RE, find_session_id
from codyd.telemetry.test_summary import TestSummary, TestSummaryDetector

__all__ = [
    "ALLOWED_TYPES",
    "SESSION_RE",
    "Sentinel",
    "TestSummary",
    "TestSummaryDetector",
    "find_session_id",
    "parse_sentinel",
    "strip_ansi",
]
