"""Prints its pid and environment facts, then sleeps until signalled (it obeys SIGTERM).

argv[1] (optional): seconds to sleep before exiting 0 by itself.
"""

import json
import os
import sys
import time

prompt = sys.stdin.read()
facts = {
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "sid": os.getsid(0),
    "prompt": prompt,
    "env": {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("CODYD_", "NOTIFY_", "WATCHDOG_", "LISTEN_", "EXTRA_"))
    },
}
print(json.dumps(facts), flush=True)
deadline = time.monotonic() + (float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
while time.monotonic() < deadline:
    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
