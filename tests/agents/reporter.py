"""Reports, turn by turn, what stopped it: argv[1] is a comma list of one word per turn
(CODYD_TURN picks it; the last repeats):

  ok          exit 0
  fail        exit 1
  limit       a rate_limited sentinel without a reset time, exit 1
  limit+S     a rate_limited sentinel resetting S seconds from now, exit 1
  auth        an auth_failed sentinel, exit 1
  ctx         a context_exhausted sentinel, exit 0
  tokens+N    a token_usage sentinel of N input tokens, exit 0

Every turn first prints "session id: <uuid>", the uuid made from the turn number, so a
run's session changes every turn the way a CLI's does when it is not resumed.
"""

import json
import os
import sys
import time
import uuid

sys.stdin.read()
turn = int(os.environ["CODYD_TURN"])
plan = sys.argv[1].split(",")
word = plan[min(turn, len(plan)) - 1]
print(f"session id: {uuid.UUID(int=turn)}", flush=True)


def sentinel(**event: object) -> None:
    print(json.dumps({"__cody_event__": event}), flush=True)


if word == "fail":
    sys.exit(1)
elif word.startswith("limit"):
    resets = time.time() + float(word[6:]) if word.startswith("limit+") else None
    sentinel(type="rate_limited", resets_at=resets, message="usage limit reached")
    sys.exit(1)
elif word == "auth":
    sentinel(type="auth_failed", message="Invalid API key · Please run /login")
    sys.exit(1)
elif word == "ctx":
    sentinel(type="context_exhausted", message="Prompt is too long")
elif word.startswith("tokens+"):
    sentinel(type="token_usage", input=int(word[7:]), output=0)
