"""Prints `progress` sentinel lines at argv[1] lines/s, argv[2] at most, stopping early once the file argv[3] exists."""

import json
import os
import sys
import time

sys.stdin.read()
rate, limit = float(sys.argv[1]), int(sys.argv[2])
stop_file = sys.argv[3] if len(sys.argv) > 3 else None
began = time.monotonic()
printed = 0
while printed < limit and not (stop_file and os.path.exists(stop_file)):
    due = min(limit, int((time.monotonic() - began) * rate) + 1)
    while printed < due:
        print(json.dumps({"__cody_event__": {"type": "progress", "n": printed}}))
        printed += 1
    sys.stdout.flush()
    time.sleep(0.005)
print(f"printed {printed}", flush=True)
