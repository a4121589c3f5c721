"""Operator messages (``run.say``): what is accepted, and how a turn's prompt carries them.

A message waits in the run's record until a turn starts with it in its prompt, each one
appended under its own ``## Message from the operator`` heading, oldest first
(docs/protocol.md "run.say").
"""

from __future__ import annotations

from collections.abc import Sequence

from codyd.errors import InvalidParams

MAX_MESSAGE_BYTES = 64 * 1024
MAX_QUEUED = 16
HEADING = "## Message from the operator"


def check_text(value: object, queued: int) -> str:
    """The text of a ``run.say``, or :class:`InvalidParams` naming ``text``."""
    expected = f"a non-empty string of at most {MAX_MESSAGE_BYTES} bytes of UTF-8 text"
    if not isinstance(value, str) or not value:
        raise InvalidParams("text", f"expected {expected}, got {_given(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidParams("text", f"expected {expected}") from None
    if size > MAX_MESSAGE_BYTES:
        raise InvalidParams("text", f"expected {expected}, got {size} bytes")
    if queued >= MAX_QUEUED:
        raise InvalidParams(
            "text",
            f"expected at most {MAX_QUEUED} queued messages; {queued} wait for the next "
            "turn already",
        )
    return value


def _given(value: object) -> str:
    if isinstance(value, str):
        return "an empty string"
    return "null" if value is None else f"a {type(value).__name__}"


def prompt_section(messages: Sequence[str]) -> bytes:
    """What the next turn's prompt gets appended: each message under its own heading."""
    return "".join(f"\n\n{HEADING}\n\n{text}" for text in messages).encode("utf-8")
