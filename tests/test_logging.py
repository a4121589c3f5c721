"""The daemon's log lines: JSON with an ISO 8601 UTC timestamp."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime


def test_log_lines_are_json_with_a_utc_microsecond_timestamp() -> None:
    script = (
        "from codyd.logging import configure; configure('json', 'info'); import structlog, time\n"
        "log = structlog.get_logger('t')\n"
        "for n in range(3):\n"
        "    log.info('tick', n=n); time.sleep(0.001)\n"
    )
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stderr
    after = time.time()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["event"], line["n"], line["level"]) for line in lines] == [
        ("tick", n, "info") for n in range(3)
    ]
    stamps = [line["timestamp"] for line in lines]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", s) for s in stamps), stamps
    seconds = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
    assert seconds == sorted(seconds)
    assert before - 0.001 <= seconds[0] and seconds[-1] <= after + 0.001
