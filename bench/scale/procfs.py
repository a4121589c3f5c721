"""What ``/proc`` says about a daemon: CPU time, scheduling count, memory, its agents.

Every daemon is measured the same way from outside, so no daemon's own reporting
is trusted: CPU time and the number of times its threads were put on a CPU come
from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, not 10 ms ticks), memory from
``VmRSS``, and agents are counted by their command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sched:
    """A process's summed thread counters: CPU nanoseconds and times scheduled in."""

    cpu_ns: int
    runs: int

    def __sub__(self, other: Sched) -> Sched:
        return Sched(self.cpu_ns - other.cpu_ns, self.runs - other.runs)


def _thread_counters(pid: int) -> dict[int, tuple[int, int]]:
    counters = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = (_read(f"/proc/{pid}/task/{tid}/schedstat") or b"").split()
        if len(fields) >= 3:
            counters[int(tid)] = (int(fields[0]), int(fields[2]))
    return counters


class SchedTracker:
    """Summed ``schedstat`` of every thread of ``pid``, keeping threads that have ended.

    A thread's counters vanish with it; sampling every half second while measuring
    keeps the last values of threads that end in between (a worker thread of a
    daemon that retires, say).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._last: dict[int, tuple[int, int]] = {}

    def sample(self) -> Sched:
        self._last.update(_thread_counters(self.pid))
        return Sched(
            sum(cpu for cpu, _ in self._last.values()), sum(runs for _, runs in self._last.values())
        )

    def over(self, seconds: float, every_s: float = 0.5) -> tuple[Sched, float]:
        """What the process did during the next ``seconds``, and the exact length of that span."""
        before = self.sample()
        began = time.monotonic()
        end = began + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(every_s, left))
            self.sample()
        after = self.sample()
        return after - before, time.monotonic() - began


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB."""
    with open(f"/proc/{pid}/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


class AgentCounter:
    """Counts the children of ``parent`` that run exactly ``argv`` (after their exec).

    Each scan lists ``/proc`` and reads only what it has not seen: the parent of a
    new pid once, and the command line of children that have not exec'd yet. So
    a scan costs about a millisecond even with a thousand processes around.
    """

    def __init__(self, parent: int, argv: tuple[str, ...]) -> None:
        self.parent = parent
        self.cmdline = b"\0".join(arg.encode() for arg in argv) + b"\0"
        self._seen: set[int] = set()
        self._waiting: set[int] = set()  # children not (yet) running argv
        self._agents: set[int] = set()

    def count(self) -> int:
        live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in live - self._seen:
            self._seen.add(pid)
            if _ppid(pid) == self.parent:
                self._waiting.add(pid)
        for pid in list(self._waiting):
            cmdline = _read(f"/proc/{pid}/cmdline")
            if cmdline == self.cmdline:
                self._waiting.discard(pid)
                self._agents.add(pid)
            elif cmdline is None:
                self._waiting.discard(pid)
        self._agents &= live
        return len(self._agents)

    def wait_for(
        self,
        count: int,
        timeout: float,
        poll_s: float = 0.005,
        check: Callable[[], None] | None = None,
    ) -> float:
        """Block until ``count`` agents run; the ``time.monotonic()`` of the scan that saw them.

        ``check`` is called between scans: it raises when waiting longer is pointless.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.count() >= count:
                return time.monotonic()
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.count()} of {count} agents running under pid {self.parent} "
                    f"after {timeout:g} s"
                )
            time.sleep(poll_s)


def processes_running(argv: tuple[str, ...]) -> list[int]:
    """Pids of every process whose command line is exactly ``argv``."""
    wanted = b"\0".join(arg.encode() for arg in argv) + b"\0"
    return [
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and _read(f"/proc/{name}/cmdline") == wanted
    ]


def kill_leftovers(argv: tuple[str, ...]) -> int:
    """SIGKILL processes still running this benchmark's unique ``argv``; how many there were."""
    pids = processes_running(argv)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
