"""Fails (exit 3) until the file argv[1] exists in the workspace, then prints GATE OPEN."""

import os
import sys

sys.stdin.read()
if not os.path.exists(sys.argv[1] if len(sys.argv) > 1 else "gate"):
    print("fatal: the gate is closed", file=sys.stderr, flush=True)
    sys.exit(3)
print("GATE OPEN", flush=True)
