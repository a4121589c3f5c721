#!/usr/bin/env python3
"""A stand-in for `claude -p --output-format stream-json`: replays a transcript as stdout.

The environment it reads is described in fake_cli.py; `--resume=<id>` names the session.
`--version` prints FAKE_AGENT_VERSION (default 2.1.332), `--help` FAKE_AGENT_HELP
(default: a help naming --max-budget-usd).
"""

import json
import os
import sys
import uuid

from fake_cli import run


def resumed_session(argv: list[str]) -> str | None:
    resumes = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--resume=")]
    return resumes[-1] if resumes else None


def unknown(session: str) -> None:
    result = {
        "type": "result",
        "subtype": "error_during_execution",
        "duration_ms": 0,
        "duration_api_ms": 0,
        "is_error": True,
        "num_turns": 0,
        "session_id": str(uuid.uuid4()),
        "total_cost_usd": 0,
        "usage": {
            "input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        },
        "permission_denials": [],
        "errors": [f"No conversation found with session ID: {session}"],
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)


def about(argv: list[str]) -> None:
    """`--version` and `--help` as claude prints them (FAKE_AGENT_VERSION, FAKE_AGENT_HELP)."""
    if argv == ["--version"]:
        print(f"{os.environ.get('FAKE_AGENT_VERSION', '2.1.332')} (Claude Code)")
        sys.exit(0)
    if argv == ["--help"]:
        budget = "  --max-budget-usd <amount>  Maximum dollar amount to spend on API calls\n"
        print(os.environ.get("FAKE_AGENT_HELP", "Usage: claude [options] [prompt]\n" + budget))
        sys.exit(0)


about(sys.argv[1:])
run(resumed_session, unknown)
