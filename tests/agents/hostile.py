"""Prints what hostile output looks like: bad UTF-8, NUL bytes, escapes, one huge line.

argv[1]: megabytes of the line without a newline (default 100).
"""

import sys

sys.stdin.read()
out = sys.stdout.buffer
out.write(b"bad utf-8: \xff\xfe\xc3(\n")
out.write(b"nul: a\x00b\x00c\n")
out.write(b"escapes: \x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J\x1b[H\n")
block = b"x" * (1024 * 1024)
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 100):
    out.write(block)
out.write(b"\nafter the huge line\n")
out.flush()
