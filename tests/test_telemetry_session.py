"""Tests of codyd.telemetry.session."""

from __future__ import annotations

import pytest

from codyd.telemetry.session import SESSION_RE, find_session_id

UUID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize(
    "line",
    [
        f"Session ID: {UUID}",
        f"session id: {UUID}",
        f"SESSION_ID={UUID}",
        f"session-id = {UUID}",
        f"sessionid:{UUID}",
        f"session id: {UUID.upper()}",
        f"\x1b[1msession id:\x1b[0m {UUID}",
        f"\x1b[2m[info]\x1b[0m resumed, session id: {UUID}.",
        f"  session id:\t{UUID}  (resumed)",
    ],
)
def test_session_id_is_found(line: str) -> None:
    """The uuid after `session id:` is found in any case and spelling, ANSI codes ignored."""
    assert find_session_id(line) == UUID


@pytest.mark.parametrize(
    "line",
    [
        "",
        f"{UUID}",
        f"session: {UUID}",
        f"session id {UUID}",
        f"mysession id: {UUID}",
        f"session id: {UUID}0",
        "session id: 7c9e6679-7425-40de-944b-e07fc1f90ae",
        "session id: 7c9e6679742540de944be07fc1f90ae7",
        "session id: zc9e6679-7425-40de-944b-e07fc1f90ae7",
        f'{{"session_id": "{UUID}"}}',
        f"session id: {UUID.replace('7', '٧')}",
    ],
)
def test_session_id_is_not_found(line: str) -> None:
    """Lines without the `session id:` key or without a complete uuid give None."""
    assert find_session_id(line) is None


def test_first_session_id_wins() -> None:
    """With two announcements on one line, the first is returned."""
    other = "a4e7c1d9-3f5b-4a28-9d6e-0b8c2f7e1a53"
    assert find_session_id(f"session id: {UUID}; session id: {other}") == UUID


def test_session_regex_captures_the_uuid() -> None:
    """SESSION_RE's first group is the uuid as written."""
    match = SESSION_RE.search(f"Session-ID: {UUID.upper()}")
    assert match is not None
    assert match.group(1) == UUID.upper()


def test_session_search_is_fast_on_a_mebibyte_line() -> None:
    """Near-misses repeated over 1 MiB are rejected in linear time."""
    for unit in ("session id:   ", "session id: 7c9e6679-", "0 1 2 ", "sessionid" + " " * 50):
        assert find_session_id(unit * (1024 * 1024 // len(unit))) is None
