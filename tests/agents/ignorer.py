"""Ignores SIGTERM, and so does the child it starts (codyd's grandchild).

argv[1]: a file that receives one line "<pid>" for this process and one for the child,
written before "ignoring SIGTERM" is printed. Both sleep until SIGKILL.
"""

import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.read()
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_end)
    with open(sys.argv[1], "a") as handle:
        handle.write(f"{os.getpid()}\n")
    os.close(write_end)  # tells the parent the pid is written
    while True:
        time.sleep(60)
os.close(write_end)
os.read(read_end, 1)  # returns at EOF, once the child has written its pid
with open(sys.argv[1], "a") as handle:
    handle.write(f"{os.getpid()}\n")
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(60)
