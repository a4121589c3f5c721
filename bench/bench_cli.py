"""``codyctl --socket S status RUN`` as a whole process, against importing click and msgpack.

The floor is the least a click + msgpack client could cost: starting the interpreter and
importing its two libraries. Both commands run alternately, after a warm-up, so page cache
and machine load treat them alike. ``python -X importtime -m codyctl --help`` is recorded in
the JSON for diagnosis. ``python -m bench.bench_cli``.

Both sides are measured twice: with a bytecode cache (in a private ``PYTHONPYCACHEPREFIX``,
filled by the warm-up), as an installed package runs and the target is set for; and with
``PYTHONDONTWRITEBYTECODE=1`` and no cache, where every codyd and codyctl module is compiled
from source on each call (the installed click and msgpack keep their own ``.pyc`` files).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    AGENTS_DIR,
    PY,
    REPO_DIR,
    BenchResult,
    Daemon,
    Row,
    open_daemon,
    report,
    short_tempdir,
)

RUNS = 30
UNCACHED_RUNS = 10
WARMUP = 3
TARGET_RATIO = 1.3
IMPORTTIME_TOP = 25
FLOOR_ARGV = [PY, "-c", "import click, msgpack"]


def codyctl_argv() -> list[str]:
    """The installed ``codyctl`` script beside this interpreter, else ``python -m codyctl``."""
    script = Path(PY).parent / "codyctl"
    return [str(script)] if script.is_file() else [PY, "-m", "codyctl"]


def cached_env(pycache_prefix: Path) -> dict[str, str]:
    """The environment with a bytecode cache kept under ``pycache_prefix``."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(pycache_prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def uncached_env() -> dict[str, str]:
    """The environment with no bytecode written or read outside installed packages' own."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def wall_time(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to exit of one process; its failure is an error."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_DIR, env=env
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


@dataclass(frozen=True)
class WallTimes:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": len(self.samples),
            "median_s": self.median,
            "min_s": min(self.samples),
            "max_s": max(self.samples),
            "samples_s": self.samples,
        }


def measure(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, WallTimes]:
    """Warm up, then run the commands in turn ``runs`` times each."""
    for argv in commands.values():
        for _ in range(WARMUP):
            wall_time(argv, env)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            samples[name].append(wall_time(argv, env))
    return {name: WallTimes(values) for name, values in samples.items()}


def finished_run(daemon: Daemon) -> str:
    """Start a one-turn run with a real agent and wait for its end; its run id."""
    params = {
        "workspace": str(daemon.workspace("ws-cli")),
        "prompt": "print a few lines",
        "command": [PY, str(AGENTS_DIR / "fast_printer.py"), "10"],
        "max_turns": 1,
    }
    run_id: str = daemon.call("run.start", params)["run_id"]
    daemon.wait_terminal(run_id)
    return run_id


def import_times(env: dict[str, str]) -> list[dict[str, Any]]:
    """The slowest imports of ``codyctl --help`` by cumulative time (``-X importtime``)."""
    done = subprocess.run(
        [PY, "-X", "importtime", "-m", "codyctl", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_DIR,
        env=env,
    )
    entries: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        entries.append(
            {
                "module": name.strip(),
                "depth": (len(name) - len(name.lstrip()) - 1) // 2,
                "self_us": int(self_us),
                "cumulative_us": int(cumulative_us),
            }
        )
    entries.sort(key=lambda entry: entry["cumulative_us"], reverse=True)
    return entries[:IMPORTTIME_TOP]


def run() -> BenchResult:
    pycache = short_tempdir()
    try:
        with open_daemon() as daemon:
            run_id = finished_run(daemon)
            status_argv = [*codyctl_argv(), "--socket", str(daemon.socket_path), "status", run_id]
            commands = {"codyd": status_argv, "floor": FLOOR_ARGV}
            times = measure(commands, cached_env(pycache), RUNS)
            uncached = measure(commands, uncached_env(), UNCACHED_RUNS)
        imports = import_times(cached_env(pycache))
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    codyd, floor = times["codyd"], times["floor"]
    rows = [
        Row(
            "codyctl status (median wall)",
            codyd.median,
            floor.median,
            "s",
            f"≤ {TARGET_RATIO}×",
            codyd.median <= TARGET_RATIO * floor.median,
        ),
        Row("codyctl status (min wall)", min(codyd.samples), min(floor.samples), "s"),
        Row("codyctl status (max wall)", max(codyd.samples), max(floor.samples), "s"),
        Row(
            "codyctl status, no bytecode cache (median)",
            uncached["codyd"].median,
            uncached["floor"].median,
            "s",
        ),
    ]
    details = {
        "argv": commands,
        "warmup": WARMUP,
        **{name: wall.to_json() for name, wall in times.items()},
        "no_bytecode_cache": {name: wall.to_json() for name, wall in uncached.items()},
        "importtime_codyctl_help": imports,
    }
    return BenchResult("cli", rows, details)


def main() -> int:
    return report([run()], "cli")


if __name__ == "__main__":
    sys.exit(main())
