"""An agent that prints its ``time.monotonic()`` every PERIOD seconds, forever.

    stamper.py plain|sentinel [PERIOD]

``plain`` lines read ``stamp <n> <t>``; ``sentinel`` lines are telemetry sentinels
``{"__cody_event__": {"type": "stamp", "n": <n>, "t": <t>}}``. The monotonic clock is
the machine's, so a reader in another process can tell how late each line arrived.
It uses only the standard library and reads nothing.
"""

import json
import sys
import time


def line(mode: str, n: int, stamp: float) -> str:
    if mode == "plain":
        return f"stamp {n} {stamp:.6f}"
    return json.dumps({"__cody_event__": {"type": "stamp", "n": n, "t": stamp}})


def main() -> None:
    mode = sys.argv[1]
    period = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    if mode not in ("plain", "sentinel"):
        raise SystemExit(f"stamper: expected plain or sentinel, got {mode!r}")
    out = sys.stdout
    began = time.monotonic()
    n = 0
    while True:
        out.write(line(mode, n, time.monotonic()) + "\n")
        out.flush()
        n += 1
        time.sleep(max(0.0, began + n * period - time.monotonic()))


if __name__ == "__main__":
    main()
