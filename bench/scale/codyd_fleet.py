"""codyd as a fleet: each program is a run of a ``command`` agent in its own workspace."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import PY, answers_ping
from bench.scale.fleet import Fleet, Program, Starting
from codyctl.client import Client

MAX_ACTIVE_RUNS = 1000
PIPELINE = 60  # requests in flight on one connection (codyd allows 64)
LONG_S = 1e6
CODYCTL = str(Path(PY).parent / "codyctl")


class CodydFleet(Fleet):
    kind = "codyd"

    def __init__(self, programs: Sequence[Program], env: dict[str, str] | None = None) -> None:
        super().__init__(programs)
        self.socket = self.root / "codyd.sock"
        self.state_dir = self.root / "state"
        self.extra_env = env or {}

    def launch(self) -> None:
        env = {**os.environ, "CODYD_MAX_ACTIVE_RUNS": str(MAX_ACTIVE_RUNS), **self.extra_env}
        env.pop("CODYD_CONFIG", None)
        env.pop("CODYD_LOG_LEVEL", None)
        self.popen(
            [
                *(PY, "-m", "codyd", "serve", "--socket", str(self.socket)),
                *("--state-dir", str(self.state_dir), "--log-format", "json"),
                *("--log-level", "info"),
            ],
            env,
        )
        self.wait_until(lambda: answers_ping(self.socket), "codyd to answer a ping")
        initial = [p for p in self.programs if p.autostart]
        if initial:
            self.start_programs(initial).sent_at()

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.call(method, params)

    def spec(self, program: Program) -> dict[str, Any]:
        workspace = self.root / "ws" / program.name
        workspace.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = {
            "run_id": program.name,
            "workspace": str(workspace),
            "prompt": "benchmark",
            "command": list(program.argv),
            "stall_timeout_s": LONG_S,
            "turn_timeout_s": LONG_S,
        }
        if program.once:
            spec["max_turns"] = 1
        return spec

    def start_programs(self, programs: Sequence[Program]) -> Starting:
        """``run.start`` for each, pipelined on one connection."""
        specs = [self.spec(program) for program in programs]

        def work(starting: Starting) -> None:
            with self.client() as client:
                pending: deque[int] = deque()
                starting.mark_sent()
                for spec in specs:
                    if len(pending) >= PIPELINE:
                        client.result(pending.popleft())
                    pending.append(client.submit("run.start", spec))
                while pending:
                    client.result(pending.popleft())
            starting.details["answered_at"] = time.monotonic()

        return Starting().run_in_background(work)

    def rpc(self, what: str, max_calls: int, budget_s: float) -> list[float] | None:
        first = self.programs[0].name if self.programs else None
        calls: dict[str, tuple[str, dict[str, Any]]] = {
            "ping": ("daemon.ping", {}),
            "status": ("run.status", {"run_id": first}),
            "list": ("run.list", {"limit": 1000}),
            "page": ("run.list", {"limit": 50}),
        }
        method, params = calls[what]
        with self.client() as client:
            return time_calls(lambda: client.call(method, params), max_calls, budget_s)

    def cli(self, what: str) -> list[str]:
        base = [CODYCTL, "--socket", str(self.socket)]
        if what == "status":
            return [*base, "status", self.programs[0].name]
        return [*base, "list", "--limit", "1000"]

    def stdout_log(self, program: Program) -> Path:
        return self.state_dir / "runs" / program.name / "turns" / "1" / "stdout.log"

    def tail_argv(self, program: Program) -> list[str] | None:
        return [CODYCTL, "--socket", str(self.socket), "--json", "tail", program.name, "-f",
                "--after", "0"]  # fmt: skip


def time_calls(call: Any, max_calls: int, budget_s: float, warmup: int = 5) -> list[float]:
    """Latencies of up to ``max_calls`` calls, stopping after ``budget_s`` (at least 10 calls)."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    clock = time.perf_counter
    stop_at = clock() + budget_s
    while len(latencies) < max_calls and (len(latencies) < 10 or clock() < stop_at):
        began = clock()
        call()
        latencies.append(clock() - began)
    return latencies
