"""Writes to stderr and exits with argv[1] (default 3)."""

import sys

sys.stdin.read()
print("about to fail", flush=True)
print("fatal: something broke", file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
