"""Prints a short line every 1/argv[1] s (default 10 lines/s) for argv[2] s (default 8)."""

import sys
import time

sys.stdin.read()
rate = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
duration = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
began = time.monotonic()
line = 0
while (due := began + line / rate) < began + duration:
    time.sleep(max(0.0, due - time.monotonic()))
    print(f"steady line {line}", flush=True)
    line += 1
