"""A steady agent for the dashboard benches: a line every argv[1] seconds, with usage.

Every tenth line is a ``token_usage`` sentinel and every twentieth a ``cost`` one, so the
runs' tokens and cost grow as a real agent's do. It runs until signalled, or for argv[2]
seconds when given, then exits 0 (argv[3] = 1: exits 1 instead, a failed turn).
"""

import json
import sys
import time

sys.stdin.read()
interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
lasting = float(sys.argv[2]) if len(sys.argv) > 2 else 86400.0
status = int(sys.argv[3]) if len(sys.argv) > 3 else 0
deadline = time.monotonic() + lasting
line = 0
while time.monotonic() < deadline:
    line += 1
    if line % 10 == 0:
        usage = {"type": "token_usage", "input": 1200 + line, "output": 350, "cached": 800}
        print(json.dumps({"__cody_event__": usage}), flush=True)
    elif line % 20 == 5:
        print(json.dumps({"__cody_event__": {"type": "cost", "usd": 0.0125}}), flush=True)
    else:
        print(f"step {line}: editing src/module_{line % 7}.py", flush=True)
    time.sleep(interval)
if status:
    print("error: the tests still fail", file=sys.stderr, flush=True)
sys.exit(status)
