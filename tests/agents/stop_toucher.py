"""Creates the stop file (argv[1], workspace-relative) on turn argv[2] (default 2)."""

import os
import sys
from pathlib import Path

sys.stdin.read()
turn = int(os.environ["CODYD_TURN"])
print(f"turn {turn}", flush=True)
if turn >= (int(sys.argv[2]) if len(sys.argv) > 2 else 2):
    path = Path(sys.argv[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
