"""The telemetry parsers over a whole generic-agent transcript (tests/data/sentinel-generic.txt)."""

from __future__ import annotations

from pathlib import Path

from codyd.telemetry.ansi import strip_ansi
from codyd.telemetry.runner_summary import TestSummary, TestSummaryDetector
from codyd.telemetry.sentinel import Sentinel, parse_sentinel
from codyd.telemetry.session import find_session_id

TRANSCRIPT = Path(__file__).parent / "data" / "sentinel-generic.txt"
SESSION_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def transcript_lines() -> list[str]:
    text = TRANSCRIPT.read_bytes().decode("utf-8", errors="surrogateescape")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_transcript_is_the_expected_copy() -> None:
    """The transcript has 26 lines and real ESC bytes, so the other tests mean something."""
    lines = transcript_lines()
    assert len(lines) == 26
    assert lines[0].startswith("\x1b[1;36m[agent]\x1b[0m")
    assert strip_ansi(lines[25]).startswith("TASK COMPLETE")


def test_transcript_sentinels() -> None:
    """Exactly the documented sentinels are found, by line number; L5 and L19 are text."""
    found = {
        number: sentinel
        for number, line in enumerate(transcript_lines(), start=1)
        if (sentinel := parse_sentinel(line)) is not None
    }
    assert found == {
        6: Sentinel("file_read", {"path": "src/calc/ops.py"}),
        7: Sentinel("file_read", {"path": "tests/test_ops.py"}),
        9: Sentinel("test_run_started", {"command": "python -m pytest -q"}),
        13: Sentinel(
            "test_run_completed", {"passed": 5, "failed": 1, "skipped": 0, "runner": "sentinel"}
        ),
        15: Sentinel("file_written", {"path": "src/calc/ops.py"}),
        16: Sentinel("file_written", {"path": "tests/test_errors.py"}),
        18: Sentinel("file_deleted", {"path": "src/calc/_compat.py"}),
        20: Sentinel("test_run_started", {"command": "python -m pytest -q"}),
        23: Sentinel(
            "test_run_completed", {"passed": 8, "failed": 0, "skipped": 0, "runner": "sentinel"}
        ),
        24: Sentinel("log_updated", {"path": "AGENT_LOG.md", "bytes_added": 0, "tail": ""}),
        25: Sentinel("token_usage", {"input": 18234, "output": 2311, "cached": 0}),
    }


def test_transcript_session_id() -> None:
    """Only L2 (`Session ID: <uuid>`) announces a session."""
    found = {
        number: session_id
        for number, line in enumerate(transcript_lines(), start=1)
        if (session_id := find_session_id(line)) is not None
    }
    assert found == {2: SESSION_ID}


def test_transcript_test_summaries() -> None:
    """The pytest lines L12 and L22 (the latter ANSI-coloured) are the only text summaries."""
    detector = TestSummaryDetector()
    found = {
        number: summaries
        for number, line in enumerate(transcript_lines(), start=1)
        if (summaries := detector.feed(line))
    }
    assert found == {
        12: [TestSummary(passed=5, failed=1, skipped=0, runner="pytest")],
        22: [TestSummary(passed=8, failed=0, skipped=0, runner="pytest")],
    }
    assert detector.flush() == []
