"""Appends "start <who> <time>" and "end <who> <time>" around a short sleep to a shared file.

argv[1]: the shared file; argv[2]: who (a daemon's name); argv[3]: seconds (default 0.3).
"""

import sys
import time

sys.stdin.read()
path, who = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3
with open(path, "a") as handle:
    handle.write(f"start {who} {time.time()}\n")
time.sleep(seconds)
with open(path, "a") as handle:
    handle.write(f"end {who} {time.time()}\n")
