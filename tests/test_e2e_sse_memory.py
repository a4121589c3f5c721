"""A live stream whose client never reads costs the daemon no memory beyond one read.

The stream reads the store at its client's pace: what the client has not taken stays
in the store. Measured by the daemon's peak RSS (``VmHWM``, reset between phases
through ``/proc/<pid>/clear_refs``) while a run writes tens of megabytes of events,
first with no stream, then with a stuck one on every run's events from the start.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_e2e_http import READ, Http, http_factory  # noqa: F401 - the fixture

EVENTS = 2500
PAYLOAD = 16 * 1024  # bytes of each event's data
ONE_READ = 512 * (PAYLOAD + 1024)  # a stream's read of the store: 512 events
CHATTY = [
    sys.executable,
    "-c",
    "import json, sys; sys.stdin.read()\n"
    f"for n in range({EVENTS}):\n"
    f"    print(json.dumps({{'__cody_event__': {{'type': 'blob', 'n': n, 'pad': 'x' * {PAYLOAD}}}}}))",
]


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def peak_growth_kib(http: Http, workspace: str) -> int:
    """How far the daemon's RSS peaked above its start while one chatty run ran."""
    pid = http.daemon.proc.pid  # type: ignore[union-attr]
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kib(pid, "VmRSS")
    spec = {"agent": "command", "command": CHATTY, "workspace": workspace, "prompt": "p"}
    run_id = http.daemon.call("run.start", {**spec, "max_turns": 1})["run_id"]
    http.daemon.wait_state(run_id, "completed", timeout=60)
    return status_kib(pid, "VmHWM") - before


def test_a_stuck_stream_holds_no_backlog_in_memory(http_factory: Callable[..., Http]) -> None:  # noqa: F811
    http = http_factory()
    if not Path(f"/proc/{http.daemon.proc.pid}/clear_refs").exists():  # type: ignore[union-attr]
        pytest.skip("no /proc/<pid>/clear_refs to reset the peak RSS")
    alone = peak_growth_kib(http, str(http.daemon.workspace("alone")))
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", http.port))
    stuck.sendall(
        b"GET /api/v1/events?after=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        + f"Authorization: Bearer {READ}\r\n\r\n".encode()
    )
    try:
        watched = peak_growth_kib(http, str(http.daemon.workspace("watched")))
    finally:
        stuck.close()
    # Both runs' events (80 MB) are behind the stuck stream; it holds one read of them.
    backlog_kib = 2 * EVENTS * PAYLOAD // 1024
    # One read is held twice at its peak: as the rows and as the events decoded from them.
    assert watched < alone + 2 * ONE_READ // 1024 + 8 * 1024, (alone, watched, backlog_kib)
    assert watched < backlog_kib // 2
