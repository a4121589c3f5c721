"""A chatty agent for the soak: one turn of mixed output, of a length that varies by turn.

Plain stdout lines, ``__cody_event__`` sentinels (custom ``soak_tick`` and ``token_usage``)
and some stderr, at a few dozen lines a second, for 0.2–6 s. The turn's shape comes from
``CODYD_RUN_ID`` and ``CODYD_TURN``, so a turn is the same whoever replays it. A write to a
closed pipe (the daemon died) ends it as any naive agent would end.
"""

import json
import os
import random
import sys
import time

sys.stdin.read()
rng = random.Random(f"{os.environ.get('CODYD_RUN_ID')}:{os.environ.get('CODYD_TURN')}")
duration = rng.choice((0.2, 0.5, 1.0, 2.0, 3.0, 6.0)) * rng.uniform(0.7, 1.3)
pause = rng.uniform(0.01, 0.08)
deadline = time.monotonic() + duration
line = 0
while time.monotonic() < deadline:
    line += 1
    roll = rng.random()
    if roll < 0.15:
        event = {"__cody_event__": {"type": "soak_tick", "line": line}}
        print(json.dumps(event), flush=True)
    elif roll < 0.18:
        usage = {"type": "token_usage", "input": rng.randrange(1000), "output": 7, "cached": 0}
        print(json.dumps({"__cody_event__": usage}), flush=True)
    elif roll < 0.28:
        print(f"warning: soak stderr line {line}", file=sys.stderr, flush=True)
    else:
        print(f"soak line {line} " + "x" * rng.randrange(200), flush=True)
    time.sleep(pause)
print(f"turn done after {line} lines", flush=True)
