"""One turn of a ralph loop: prints "turn N", works argv[1] seconds (default 0.5), and on
turn argv[2] (default 0: never) creates the default stop file, as an agent does when done.

argv[3] (optional): a file each turn waits for (bounded, 30 s) before it starts working.
"""

import os
import sys
import time
from pathlib import Path

sys.stdin.read()
turn = int(os.environ["CODYD_TURN"])
if len(sys.argv) > 3:
    deadline = time.monotonic() + 30
    while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
        time.sleep(0.01)
print(f"turn {turn}", flush=True)
print(f"working on turn {turn}", file=sys.stderr, flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
stop_turn = int(sys.argv[2]) if len(sys.argv) > 2 else 0
if stop_turn and turn >= stop_turn:
    stop = Path(".cody-harness/current-epic/.stop")
    stop.parent.mkdir(parents=True, exist_ok=True)
    stop.touch()
