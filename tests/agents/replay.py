"""Prints a transcript file (argv[1]) to stdout byte for byte, then exits argv[2] (default 0)."""

import sys

sys.stdin.read()
with open(sys.argv[1], "rb") as handle:
    sys.stdout.buffer.write(handle.read())
sys.stdout.flush()
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
