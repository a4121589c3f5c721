"""A daemon with its programs: codyd, supervisord or circus, driven the same way.

A :class:`Fleet` owns one daemon process in its own temp directory. Its programs
are agents to supervise: in codyd each is a run of a ``command`` agent, in
supervisord a ``[program:x]``, in circus a ``[watcher:x]`` with one process.
The sleeping agents of a fleet run ``sleep <marker>``, with a marker unique to
the fleet, so they are counted (and, should a daemon leave any, killed) by
their command line alone.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.common import short_tempdir, terminate
from bench.scale import procfs

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_MARKERS = itertools.count(1)
_TO_REMOVE: list[Path] = []


def remove_later(path: Path) -> None:
    """Have :func:`remove_directories` remove ``path`` with the fleets' directories."""
    _TO_REMOVE.append(path)


def remove_directories() -> None:
    """Remove the directories of every fleet closed so far."""
    while _TO_REMOVE:
        shutil.rmtree(_TO_REMOVE.pop(), ignore_errors=True)


def sleep_argv() -> tuple[str, ...]:
    """``sleep`` for an hour, with a fractional part unique to this process and call."""
    return ("sleep", f"3600.{os.getpid()}{next(_MARKERS):04d}")


@dataclass(frozen=True)
class Program:
    """An agent to supervise: a name (a valid run id), its argv, whether it starts at once."""

    name: str
    argv: tuple[str, ...]
    autostart: bool = True
    once: bool = False  # runs once: no restart, no second turn


def sleepers(
    count: int, argv: tuple[str, ...], prefix: str = "s", autostart: bool = True
) -> list[Program]:
    return [Program(f"{prefix}{index:04d}", argv, autostart) for index in range(count)]


class Starting:
    """Programs being started in the background; :meth:`sent_at` is when the first request left."""

    def __init__(self) -> None:
        self._sent_at: float | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.details: dict[str, Any] = {}

    def run_in_background(self, work: Any) -> Starting:
        def target() -> None:
            try:
                work(self)
            except BaseException as exc:  # reported by sent_at()
                self._error = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        return self

    def mark_sent(self, at: float | None = None) -> None:
        self._sent_at = time.monotonic() if at is None else at

    def check(self) -> None:
        """Raise what went wrong, if the requests have failed already."""
        if self._error is not None:
            raise self._error

    def sent_at(self, timeout: float = START_TIMEOUT_S) -> float:
        """Wait for the requests to be answered; the instant the first one was sent."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        if self._sent_at is None:
            raise RuntimeError("the start requests were not sent")
        return self._sent_at


class Fleet(ABC):
    kind: str
    # Exit statuses of the CLI that mean it answered (supervisorctl: 3 when a program is stopped).
    cli_ok_codes: tuple[int, ...] = (0,)

    def __init__(self, programs: Sequence[Program], root: Path | None = None) -> None:
        self.programs = list(programs)
        self.root = root or short_tempdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sleep_argvs = {p.argv for p in self.programs if p.argv[0] == "sleep"}

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.kind} was not started")
        return self.proc.pid

    @abstractmethod
    def launch(self) -> None:
        """Start the daemon and return once it answers; autostart programs may still be starting."""

    def start(self) -> None:
        self.launch()
        for argv in self.sleep_argvs:
            wanted = sum(1 for p in self.programs if p.autostart and p.argv == argv)
            if wanted:
                self.agents(argv).wait_for(wanted, START_TIMEOUT_S, poll_s=0.05)

    def agents(self, argv: tuple[str, ...]) -> procfs.AgentCounter:
        return procfs.AgentCounter(self.pid, argv)

    def terminate(self) -> float:
        """SIGTERM the daemon; the seconds until it exited."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0.0
        began = time.monotonic()
        if not terminate(proc, STOP_TIMEOUT_S):
            return float("inf")
        return time.monotonic() - began

    def close(self) -> int:
        """Stop the daemon if it runs; kill agents it left behind; how many it left.

        Its directory is removed by :func:`remove_directories`, once everything is
        measured: right after mass deletions ext4 is slow to allocate inodes (it skips
        recently deleted ones), which would tax whichever daemon creates files next.
        """
        self.terminate()
        left = sum(procfs.kill_leftovers(argv) for argv in self.sleep_argvs)
        remove_later(self.root)
        return left

    def popen(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with (self.root / f"{self.kind}.out").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=self.root
            )

    def wait_until(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind}: timed out waiting for {what}: {self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        path = self.root / f"{self.kind}.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- what the workloads ask of every daemon ---------------------------------------------------

    @abstractmethod
    def rpc(self, what: str, max_calls: int, budget_s: float) -> list[float] | None:
        """Latencies of ``ping``, ``status`` (one program), ``list`` (all) or ``page`` calls.

        None when the daemon has no such call.
        """

    @abstractmethod
    def cli(self, what: str) -> list[str]:
        """argv of the daemon's own CLI showing one program (``status``) or all (``list``)."""

    @abstractmethod
    def start_programs(self, programs: Sequence[Program]) -> Starting:
        """Ask the daemon to start programs that are not running (in the background)."""

    @abstractmethod
    def stdout_log(self, program: Program) -> Path:
        """The file where the daemon keeps a program's stdout."""

    def tail_argv(self, program: Program) -> list[str] | None:
        """argv following a program's output live, or None when the daemon has no such thing."""
        return None


FleetT = TypeVar("FleetT", bound=Fleet)


@contextmanager
def running(fleet: FleetT) -> Iterator[FleetT]:
    """Start ``fleet`` with its autostart programs up; stop it and clean up after."""
    try:
        fleet.start()
        yield fleet
    finally:
        left = fleet.close()
        if left:
            print(f"{fleet.kind} left {left} agents running; they were killed")
