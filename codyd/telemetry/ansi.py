"""Removal of terminal escape sequences, so parsers match what a human would read."""

from __future__ import annotations

import re

ESC = "\x1b"

# One alternation, tried left to right at each ESC:
#   CSI  ESC [ params intermediates final   (SGR colours, cursor moves, ...)
#   OSC  ESC ] payload, ended by BEL, ST (ESC \\), the next ESC or the end of the line
#   any other escape: ESC, optional intermediates, one final byte (ESC ( B, ESC 7, ESC =, ...)
#   a stray ESC that starts no sequence.
# Every repeated class excludes ESC, so each attempt stops at the next ESC: linear time.
_ESCAPE_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b"
)


def strip_ansi(text: str) -> str:
    """Return ``text`` without CSI/SGR, OSC and other ESC sequences; the result holds no ESC."""
    if ESC not in text:
        return text
    return _ESCAPE_RE.sub("", text)
