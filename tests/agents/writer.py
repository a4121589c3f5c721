"""Writes one new file per turn, out/turn-<CODYD_TURN>.txt, then exits 0."""

import os
import sys
from pathlib import Path

sys.stdin.read()
out = Path("out")
out.mkdir(exist_ok=True)
turn = os.environ.get("CODYD_TURN", "0")
(out / f"turn-{turn}.txt").write_text(f"turn {turn}\n")
print(f"wrote out/turn-{turn}.txt")
