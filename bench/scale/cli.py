"""The daemons' own CLIs as whole processes: one program's status, and every program.

``codyctl status RUN`` / ``supervisorctl status NAME`` / ``circusctl status NAME``, and
``codyctl list --limit 1000`` / ``supervisorctl status`` / ``circusctl status``: one
warm-up, then ``RUNS`` timed runs each, from spawn to exit, output to a pipe. Every
CLI runs with bytecode caching on, in one private ``PYTHONPYCACHEPREFIX`` that the
warm-up fills, as an installed package runs, whatever ``PYTHONDONTWRITEBYTECODE``
says in the caller's environment.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scale.fleet import Fleet, remove_later
from bench.scale.report import ScaleRow, median

NAME = "cli"
RUNS = 7


def levels(kind: str) -> tuple[int, ...]:
    return (50, 200)


_PYCACHE: list[Path] = []


def cli_environment() -> dict[str, str]:
    if not _PYCACHE:
        _PYCACHE.append(Path(tempfile.mkdtemp(prefix="cdyb-pycache-")))
        remove_later(_PYCACHE[0])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE[0])
    return env


def wall_time(argv: list[str], ok_codes: tuple[int, ...]) -> float:
    env = cli_environment()
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, env=env)
    elapsed = time.perf_counter() - began
    if done.returncode not in ok_codes or not done.stdout:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-1000:]!r}")
    return elapsed


def measure(fleet: Fleet, level: int) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    for what in ("status", "list"):
        argv = fleet.cli(what)
        wall_time(argv, fleet.cli_ok_codes)
        times = [wall_time(argv, fleet.cli_ok_codes) for _ in range(RUNS)]
        measured[what] = {"argv": argv, "median_s": median(times), "runs_s": times}
    return measured


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    out: list[ScaleRow] = []
    for what, label in (("status", "CLI status of one program"), ("list", "CLI list of all")):
        for level in levels("codyd"):
            cells = {
                kind: results.get(kind, {}).get(level, {}).get(what, {}).get("median_s")
                for kind in ("codyd", "supervisord", "circus")
            }
            out.append(ScaleRow(f"{label}, {level} programs", "s", cells["codyd"],
                                cells["supervisord"], cells["circus"]))  # fmt: skip
    return out
