"""Prints a line every argv[1] seconds, argv[2] times; appends to argv[3] each time if given."""

import sys
import time

sys.stdin.read()
interval, count = float(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    print(f"tick {i}", flush=True)
    if len(sys.argv) > 3:
        with open(sys.argv[3], "a") as handle:
            handle.write(f"log line {i}\n")
    time.sleep(interval)
