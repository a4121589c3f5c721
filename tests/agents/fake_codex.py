#!/usr/bin/env python3
"""A stand-in for `codex exec --json`: replays a JSONL transcript as one turn's stdout.

The environment it reads is described in fake_cli.py; `resume <id>` names the session.
"""

import sys

from fake_cli import run


def resumed_session(argv: list[str]) -> str | None:
    return argv[argv.index("resume") + 1] if "resume" in argv[:-1] else None


def unknown(session: str) -> None:
    sys.stderr.write(
        f"Error: thread/resume: thread/resume failed: no rollout found for thread id {session}"
        " (code -32600)\n"
    )


run(resumed_session, unknown)
