"""Starts a grandchild that leaves the process group with setsid and ignores SIGTERM.

argv[1]: file receiving the escapee's pid. argv[2]: "exit" to exit 0 at once
(leaving the escapee behind), or "stay" to sleep until signalled.
"""

import os
import signal
import sys
import time

sys.stdin.read()
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.close(read_end)
    if os.fork() == 0:  # the grandchild: a daemonizing dev server, say
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(sys.argv[1], "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.close(write_end)
        # stdout/stderr stay inherited: the escapee may hold the turn's pipes open.
        while True:
            time.sleep(60)
    os._exit(0)
os.close(write_end)
os.read(read_end, 1)  # EOF once the escapee wrote its pid
os.wait()
print("escapee started", flush=True)
if sys.argv[2] == "stay":
    while True:
        time.sleep(60)
