"""Keeping secrets out of logs, events and Redis (SPEC 6.2).

Two kinds of secret are recognised: the values of a run's environment
variables (which codyd knows), and anything shaped like a well-known token
(OpenAI ``sk-…``, GitHub ``ghp_…``/``gho_…``/``github_pat_…``, Slack
``xox?-…``, AWS ``AKIA…``) wherever it appears in an argv.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def redact_argv(argv: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    values = [s for s in secrets if len(s) >= MIN_SECRET_LEN]
    return [redact_text(arg, values) for arg in argv]
