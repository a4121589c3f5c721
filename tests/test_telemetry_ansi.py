"""Tests of codyd.telemetry.ansi."""

from __future__ import annotations

import pytest

from codyd.telemetry.ansi import strip_ansi

ESC = "\x1b"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"{ESC}[1;36m[agent]{ESC}[0m starting", "[agent] starting"),
        (f"{ESC}[32m8 passed{ESC}[0m in 0.06s", "8 passed in 0.06s"),
        (f"{ESC}[m plain", " plain"),
        (f"{ESC}[38;5;196mred{ESC}[39m", "red"),
        (f"{ESC}[38:2:255:0:0mtruecolor{ESC}[0m", "truecolor"),
        (f"{ESC}[?25lhidden cursor{ESC}[?25h", "hidden cursor"),
        (f"{ESC}[2K{ESC}[1Gprogress", "progress"),
        (f"{ESC}[>4;2mkeys", "keys"),
        (f"{ESC}]0;window title\x07text", "text"),
        (f"{ESC}]8;;https://example.com{ESC}\\link{ESC}]8;;{ESC}\\", "link"),
        (f"{ESC}]0;title{ESC}[1mbold", "bold"),
        (f"before{ESC}]0;never terminated", "before"),
        (f"{ESC}(Bcharset", "charset"),
        (f"{ESC}7saved{ESC}8", "saved"),
        (f"{ESC}=keypad{ESC}>", "keypad"),
        (f"{ESC}Mreverse index", "reverse index"),
        (f"trailing escape{ESC}", "trailing escape"),
        (f"{ESC}[12\x00nul", "12\x00nul"),
        (f"{ESC}{ESC}[31mx", "x"),
    ],
)
def test_strip_ansi_removes_escape_sequences(raw: str, expected: str) -> None:
    """CSI/SGR, OSC (BEL or ST terminated) and two-character escapes are removed."""
    assert strip_ansi(raw) == expected


@pytest.mark.parametrize(
    "text",
    ["", "plain text", "[31m not an escape", "tab\tand \x07 bell", "snow ☃ \udcff \x00"],
)
def test_strip_ansi_leaves_text_without_escapes_alone(text: str) -> None:
    """A line without ESC comes back unchanged."""
    assert strip_ansi(text) == text


def test_strip_ansi_is_fast_on_a_mebibyte_of_escapes() -> None:
    """Unterminated sequences repeated over 1 MiB are handled in one linear pass."""
    for unit in (f"{ESC}[", f"{ESC}]", f"{ESC}[1;", f"{ESC}]0;x", f"{ESC}[0123456789"):
        line = unit * (1024 * 1024 // len(unit))
        assert ESC not in strip_ansi(line)
