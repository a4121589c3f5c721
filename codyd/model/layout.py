"""Where codyd keeps its files under the state directory (docs/operations.md).

The one place the layout is spelled: the daemon, the supervisor, the turn and the RPC
handlers ask it for paths instead of joining names of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A turn's own files, inside its turn directory.
PROMPT_FILE = "prompt.txt"
PID_FILE = "turn.pid"
LOG_STREAMS = ("stdout", "stderr")


def log_file_name(stream: str) -> str:
    return f"{stream}.log"


@dataclass(frozen=True, slots=True)
class StateLayout:
    """The files of one state directory: the store, the lock, the heartbeat, each run's turns."""

    state_dir: Path

    @property
    def db(self) -> Path:
        return self.state_dir / "codyd.db"

    @property
    def lock(self) -> Path:
        return self.state_dir / "codyd.lock"

    @property
    def heartbeat(self) -> Path:
        return self.state_dir / "heartbeat"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def turns_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "turns"

    def turn_dir(self, run_id: str, n: int) -> Path:
        return self.turns_dir(run_id) / str(n)

    def turn_pid(self, run_id: str, n: int) -> Path:
        return self.turn_dir(run_id, n) / PID_FILE

    def turn_log(self, run_id: str, n: int, stream: str) -> Path:
        return self.turn_dir(run_id, n) / log_file_name(stream)
