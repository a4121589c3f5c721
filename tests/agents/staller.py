"""Prints one line, then stays silent until it is signalled."""

import sys
import time

sys.stdin.read()
print("thinking...", flush=True)
while True:
    time.sleep(60)
