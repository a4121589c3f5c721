"""circus 0.19 as a fleet: one ``[watcher:x]`` with one process per program, over zmq (ipc).

Endpoints are ipc sockets in the fleet's directory and multicast discovery is
off, so nothing leaves the machine; programs that run once have
``respawn = false``; the rest is circus's default.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from bench.scale.fleet import Fleet, Program, Starting
from bench.scale.supervisord_fleet import probe, probe_in_background
from bench.scale.venv import Anchors


class CircusFleet(Fleet):
    kind = "circus"

    def __init__(self, programs: Sequence[Program], anchors: Anchors) -> None:
        super().__init__(programs)
        self.anchors = anchors
        self.endpoint = f"ipc://{self.root / 'ctl.sock'}"
        self.config = self.root / "circus.ini"
        self.logs = self.root / "logs"

    def write_config(self) -> None:
        self.logs.mkdir(exist_ok=True)
        lines = [
            "[circus]",
            f"endpoint = {self.endpoint}",
            f"pubsub_endpoint = ipc://{self.root / 'pubsub.sock'}",
            "multicast_endpoint =",
            "statsd = false",
        ]
        for program in self.programs:
            lines += [
                f"[watcher:{program.name}]",
                f"cmd = {shlex.quote(program.argv[0])}",
                f"args = {shlex.join(program.argv[1:])}",
                "numprocesses = 1",
                f"autostart = {str(program.autostart).lower()}",
            ]
            if program.once:
                lines += [
                    "respawn = false",
                    "stdout_stream.class = FileStream",
                    f"stdout_stream.filename = {self.stdout_log(program)}",
                ]
        self.config.write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        self.write_config()
        self.popen([self.anchors.program("circusd"), str(self.config)])
        self.wait_until(self._answers, "circusd to answer")

    def _answers(self) -> bool:
        if not (self.root / "ctl.sock").exists():
            return False
        try:
            probe(self.anchors, "circus", self.endpoint, "time",
                  json.dumps({"command": "numwatchers", "properties": {}}), "1", "0")  # fmt: skip
        except RuntimeError:
            return False
        return True

    def rpc(self, what: str, max_calls: int, budget_s: float) -> list[float] | None:
        commands = {
            "ping": {"command": "numwatchers", "properties": {}},
            "status": {"command": "status", "properties": {"name": self.programs[0].name}},
            "list": {"command": "status", "properties": {}},
        }
        if what not in commands:
            return None
        answer = probe(self.anchors, "circus", self.endpoint, "time",
                       json.dumps(commands[what]), str(max_calls), str(budget_s))  # fmt: skip
        latencies: list[float] = answer["latencies"]
        return latencies

    def cli(self, what: str) -> list[str]:
        base = [self.anchors.program("circusctl"), "--endpoint", self.endpoint, "status"]
        return [*base, self.programs[0].name] if what == "status" else base

    def start_programs(self, programs: Sequence[Program]) -> Starting:
        """One ``start`` command per watcher (circus starts all watchers only if autostart)."""
        names = [program.name for program in programs]
        return probe_in_background(self.anchors, "circus", self.endpoint, "start", *names)

    def stdout_log(self, program: Program) -> Path:
        return self.logs / f"{program.name}.out"
