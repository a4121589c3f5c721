"""What the fake agent CLIs share: argv log, known sessions, transcript replay by turn.

FAKE_AGENT_SCRIPT names the transcript (a comma list: one per turn by CODYD_TURN, the
last repeating); FAKE_AGENT_ARGV_LOG, if set, gets the argv as one JSON line; with
FAKE_AGENT_KNOWN_SESSIONS set, resuming another id fails as the real CLI does; the exit
status is FAKE_AGENT_EXIT (default 0).
"""

import json
import os
import sys
from collections.abc import Callable


def in_workspace(transcript: bytes) -> bytes:
    """The transcripts were recorded in /srv/work/calc: replay them in this run's workspace."""
    workspace = os.environ.get("CODYD_WORKSPACE", "/srv/work/calc")
    return transcript.replace(b"/srv/work/calc", workspace.encode())


def run(resumed_session: Callable[[list[str]], str | None], unknown: Callable[[str], None]) -> None:
    """Play one turn; ``unknown(session)`` reports a session the CLI does not know."""
    sys.stdin.read()
    argv = sys.argv[1:]
    if log := os.environ.get("FAKE_AGENT_ARGV_LOG"):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(argv) + "\n")
    session = resumed_session(argv)
    known = os.environ.get("FAKE_AGENT_KNOWN_SESSIONS")
    if session is not None and known is not None and session not in known.split(","):
        unknown(session)
        sys.exit(1)
    scripts = [path for path in os.environ.get("FAKE_AGENT_SCRIPT", "").split(",") if path]
    if scripts:
        turn = max(int(os.environ.get("CODYD_TURN", "1")), 1)
        with open(scripts[min(turn, len(scripts)) - 1], "rb") as handle:
            sys.stdout.buffer.write(in_workspace(handle.read()))
        sys.stdout.flush()
    sys.exit(int(os.environ.get("FAKE_AGENT_EXIT", "0")))
