"""Prints progress; on turn argv[1] (default 2) prints the line argv[2] (default TASK COMPLETE)."""

import os
import sys

sys.stdin.read()
turn = int(os.environ["CODYD_TURN"])
print(f"working on turn {turn}", flush=True)
if turn >= (int(sys.argv[1]) if len(sys.argv) > 1 else 2):
    print(sys.argv[2] if len(sys.argv) > 2 else "TASK COMPLETE", flush=True)
print("done for now", flush=True)
