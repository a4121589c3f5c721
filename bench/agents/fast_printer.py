"""An agent that prints N short numbered lines (argv[1], default 100000) as fast as it can."""

import sys

sys.stdin.read()
count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
write = sys.stdout.write
for number in range(count):
    write(f"line {number:06d}\n")
sys.stdout.flush()
