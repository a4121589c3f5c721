#!/usr/bin/env python3
"""A stand-in for `codex exec --json`: replays a JSONL transcript as one turn's stdout.

The environment it reads is described in fake_cli.py; `resume <id>` names the session.
`--version` prints `codex-cli <FAKE_AGENT_VERSION>` (default 0.171.0).
"""

import os
import sys

from fake_cli import run


def resumed_session(argv: list[str]) -> str | None:
    return argv[argv.index("resume") + 1] if "resume" in argv[:-1] else None


def unknown(session: str) -> None:
    sys.stderr.write(
        f"Error: thread/resume: thread/resume failed: no rollout found for thread id {session}"
        " (code -32600)\n"
    )


def about(argv: list[str]) -> None:
    """`--version` and `--help` as codex prints them (FAKE_AGENT_VERSION)."""
    if argv == ["--version"]:
        print(f"codex-cli {os.environ.get('FAKE_AGENT_VERSION', '0.171.0')}")
        sys.exit(0)
    if argv == ["--help"]:
        print("Codex CLI\n\nUsage: codex [OPTIONS] [PROMPT]\n  exec  Run Codex non-interactively")
        sys.exit(0)


about(sys.argv[1:])
run(resumed_session, unknown)
