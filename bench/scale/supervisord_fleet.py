"""supervisord 4.3 as a fleet: one ``[program:x]`` per program, driven over its XML-RPC socket.

Programs use ``startsecs=0`` (an agent counts as started once spawned, as in codyd)
and ``autorestart=false``; everything else is supervisord's default, with the
file descriptor floor (``minfds``) raised to what 500 programs need.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.scale.fleet import Fleet, Program, Starting
from bench.scale.venv import Anchors

PROBE = str(Path(__file__).with_name("probe.py"))
MIN_FDS = 8192


def probe(anchors: Anchors, *args: str, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``probe.py`` with the anchors' Python; its JSON answer."""
    done = subprocess.run(
        [str(anchors.python), PROBE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe {args[:3]} exited {done.returncode}: {done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def probe_in_background(anchors: Anchors, *args: str) -> Starting:
    def work(starting: Starting) -> None:
        answer = probe(anchors, *args)
        starting.mark_sent(answer["sent_at"])
        starting.details.update(answer)

    return Starting().run_in_background(work)


class SupervisordFleet(Fleet):
    kind = "supervisord"
    cli_ok_codes = (0, 3)

    def __init__(self, programs: Sequence[Program], anchors: Anchors) -> None:
        super().__init__(programs)
        self.anchors = anchors
        self.socket = self.root / "supervisor.sock"
        self.config = self.root / "supervisord.conf"
        self.logs = self.root / "logs"

    def write_config(self) -> None:
        self.logs.mkdir(exist_ok=True)
        lines = [
            "[unix_http_server]",
            f"file = {self.socket}",
            "[supervisord]",
            f"logfile = {self.root / 'supervisord.log'}",
            f"pidfile = {self.root / 'supervisord.pid'}",
            f"childlogdir = {self.logs}",
            "nodaemon = true",
            f"minfds = {MIN_FDS}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl = unix://{self.socket}",
        ]
        for program in self.programs:
            lines += [
                f"[program:{program.name}]",
                f"command = {shlex.join(program.argv)}",
                f"autostart = {str(program.autostart).lower()}",
                "autorestart = false",
                "startsecs = 0",
                f"stdout_logfile = {self.stdout_log(program)}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        self.write_config()
        self.popen([self.anchors.program("supervisord"), "-c", str(self.config)])
        self.wait_until(self._answers, "supervisord to answer")

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            probe(self.anchors, "supervisord", str(self.socket), "time", "supervisor.getState",
                  "[]", "1", "0")  # fmt: skip
        except RuntimeError:
            return False
        return True

    def rpc(self, what: str, max_calls: int, budget_s: float) -> list[float] | None:
        calls = {
            "ping": ("supervisor.getState", []),
            "status": ("supervisor.getProcessInfo", [self.programs[0].name]),
            "list": ("supervisor.getAllProcessInfo", []),
        }
        if what not in calls:
            return None
        method, params = calls[what]
        answer = probe(self.anchors, "supervisord", str(self.socket), "time", method,
                       json.dumps(params), str(max_calls), str(budget_s))  # fmt: skip
        latencies: list[float] = answer["latencies"]
        return latencies

    def cli(self, what: str) -> list[str]:
        base = [self.anchors.program("supervisorctl"), "-c", str(self.config), "status"]
        return [*base, self.programs[0].name] if what == "status" else base

    def start_programs(self, programs: Sequence[Program]) -> Starting:
        """``supervisor.startAllProcesses``: every program that is not running."""
        return probe_in_background(self.anchors, "supervisord", str(self.socket), "start-all")

    def stdout_log(self, program: Program) -> Path:
        return self.logs / f"{program.name}.out"

    def tail_argv(self, program: Program) -> list[str] | None:
        return [self.anchors.program("supervisorctl"), "-c", str(self.config), "tail", "-f",
                program.name]  # fmt: skip
