"""Prints N numbered lines as fast as it can (argv[1], default 3), then exits 0."""

import os
import sys

prompt = sys.stdin.read()
count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
out = sys.stdout
out.write(f"prompt bytes: {len(prompt.encode())} turn {os.environ.get('CODYD_TURN')}\n")
for i in range(count):
    out.write(f"line {i}\n")
out.flush()
