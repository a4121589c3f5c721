"""Prints the prompt it read as JSON, then waits until the file argv[1] exists and exits 0.

The file is looked for relative to the workspace (the agent's working directory).
"""

import json
import os
import sys
import time

prompt = sys.stdin.read()
print(json.dumps({"prompt": prompt, "turn": os.environ.get("CODYD_TURN")}), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
