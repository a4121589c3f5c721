"""Like daemonizer, but the escapee also wipes its environment (``setsid env -i ...``).

Nothing marks it as the turn's any more: no CODYD_RUN_ID, another session and group.
argv[1]: file receiving the escapee's pid. argv[2]: "exit" to exit 0 at once
(leaving the escapee behind), or "stay" to sleep until signalled.
"""

import os
import sys
import time

ESCAPEE = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(f'{os.getpid()}\\n')\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "while True:\n"
    "    time.sleep(60)\n"
)

sys.stdin.read()
child = os.fork()
if child == 0:
    os.setsid()
    if os.fork() == 0:  # re-parented to the nearest subreaper once its parent exits
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)  # holds none of the turn's pipes: nothing waits for it
        os.execv("/usr/bin/env", ["env", "-i", sys.executable, "-c", ESCAPEE, sys.argv[1]])
    os._exit(0)
os.waitpid(child, 0)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("escapee started", flush=True)
if sys.argv[2] == "stay":
    while True:
        time.sleep(60)
