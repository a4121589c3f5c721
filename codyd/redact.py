"""Keeping secrets out of logs, events and Redis (docs/operations.md §8, docs/events.md §12).

Two kinds of secret are recognised: the values of a run's environment
variables (which codyd knows), and anything shaped like a well-known token
(OpenAI ``sk-…``, GitHub ``ghp_…``/``gho_…``/``github_pat_…``, Slack
``xox?-…``, AWS ``AKIA…``) wherever it appears in an argv.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***"
TOKEN_RE = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
)
# Environment values shorter than this are not hunted for inside other strings:
# "1" or "true" would otherwise blot out half an argv.
MIN_SECRET_LEN = 6


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with token-shaped strings and the given secret values replaced by ``***``."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LEN and secret in text:
            text = text.replace(secret, REDACTED)
    return TOKEN_RE.sub(REDACTED, text)


def secret_values(values: Iterable[str]) -> tuple[str, ...]:
    """The env values worth hunting for (long enough not to blot out ordinary text)."""
    return tuple(sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True))


def redact_argv(argv: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    values = secret_values(secrets)
    return [redact_text(arg, values) for arg in argv]


def redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` (event data: maps, lists, strings) with the given secrets replaced."""
    if isinstance(value, str):
        return redact_text(value, secrets) if any(s in value for s in secrets) else value
    if isinstance(value, dict):
        return {key: redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item, secrets) for item in value]
    return value
