#!/usr/bin/env python3
"""A stand-in for `claude -p --output-format stream-json`: replays a transcript as stdout.

FAKE_AGENT_SCRIPT names the transcript (a comma list: one per turn by CODYD_TURN, the last
repeating); FAKE_AGENT_ARGV_LOG, if set, gets the argv as one JSON line; with
FAKE_AGENT_KNOWN_SESSIONS set, `--resume=<id>` of another id fails as claude does; the exit
status is FAKE_AGENT_EXIT (default 0).
"""

import json
import os
import sys
import uuid


def in_workspace(transcript: bytes) -> bytes:
    """The transcripts were recorded in /srv/work/calc: replay them in this run's workspace."""
    workspace = os.environ.get("CODYD_WORKSPACE", "/srv/work/calc")
    return transcript.replace(b"/srv/work/calc", workspace.encode())


sys.stdin.read()
argv = sys.argv[1:]
if log := os.environ.get("FAKE_AGENT_ARGV_LOG"):
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(argv) + "\n")
resumes = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--resume=")]
session = resumes[-1] if resumes else None
known = os.environ.get("FAKE_AGENT_KNOWN_SESSIONS")
if session is not None and known is not None and session not in known.split(","):
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
    sys.exit(1)
scripts = [path for path in os.environ.get("FAKE_AGENT_SCRIPT", "").split(",") if path]
if scripts:
    turn = max(int(os.environ.get("CODYD_TURN", "1")), 1)
    with open(scripts[min(turn, len(scripts)) - 1], "rb") as handle:
        sys.stdout.buffer.write(in_workspace(handle.read()))
    sys.stdout.flush()
sys.exit(int(os.environ.get("FAKE_AGENT_EXIT", "0")))
