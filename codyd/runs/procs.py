"""Process-group handling: who is still alive in a turn's group, and stopping it.

``trio.run_process`` signals only the pid it started; agents start shells,
test runners and servers, so codyd signals the whole process group itself.
Liveness comes from ``/proc``: a zombie (state Z) is no longer running, and
``killpg(pgid, 0)`` would count it, so it cannot answer the question alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

PROC = Path("/proc")
STOP_POLL_S = 0.02


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    tail = raw[raw.rfind(b")") + 2 :].decode("ascii", "replace")
    return tail.split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_same_process(pid: int, ticks: int | None) -> bool:
    """True if ``pid`` is alive and is the process that started at ``ticks``."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return False
    return ticks is None or int(fields[19]) == ticks


def _scan() -> list[tuple[int, list[str]]]:
    table = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and len(fields) >= 20:
                table.append((int(entry.name), fields))
    return table


class _ProcessTable:
    """One walk of /proc shared by everyone polling within a few milliseconds.

    Stopping 200 turns at once means 200 loops asking who is still alive every
    20 ms; they share a snapshot instead of walking /proc 200 times. A process's
    initial environment never changes, so it is read once per (pid, start time).
    """

    TTL_S = 0.01

    def __init__(self) -> None:
        self._taken_at = float("-inf")
        self._table: list[tuple[int, list[str]]] = []
        self._environ: dict[tuple[int, str], bytes] = {}

    def processes(self, shared: bool) -> list[tuple[int, list[str]]]:
        now = time.monotonic()
        if not shared or now - self._taken_at > self.TTL_S:
            self._table = _scan()
            self._taken_at = now
            live = {(pid, f[19]) for pid, f in self._table}
            for key in [k for k in self._environ if k not in live]:
                del self._environ[key]
        return self._table

    def environ(self, pid: int, fields: list[str]) -> bytes:
        key = (pid, fields[19])
        cached = self._environ.get(key)
        if cached is None:
            try:
                cached = (PROC / str(pid) / "environ").read_bytes()
            except OSError:
                cached = b""
            self._environ[key] = cached
        return cached


_TABLE = _ProcessTable()


def _processes(shared: bool = False) -> Iterator[tuple[int, list[str]]]:
    """Every process with its stat fields after the command name (state, ppid, pgrp, ...)."""
    return iter(_TABLE.processes(shared))


def group_members(pgid: int, shared: bool = False) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is ``pgid``."""
    return [pid for pid, f in _processes(shared) if f[0] != "Z" and int(f[2]) == pgid]


def signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class TurnMark:
    """What identifies a turn's processes in their environment (SPEC 2.4)."""

    run_id: str
    turn: int

    def matches(self, environ: bytes) -> bool:
        entries = environ.split(b"\0")
        return (
            f"CODYD_RUN_ID={self.run_id}".encode() in entries
            and f"CODYD_TURN={self.turn}".encode() in entries
        )


def find_marked(mark: TurnMark, shared: bool = False) -> list[int]:
    """Live processes whose environment carries the turn's mark (escapees included)."""
    me = os.getpid()
    return [
        pid
        for pid, fields in _processes(shared)
        if pid != me and fields[0] != "Z" and mark.matches(_TABLE.environ(pid, fields))
    ]


def turn_processes(pgid: int | None, mark: TurnMark | None, shared: bool = False) -> set[int]:
    """Every live process of a turn: its process group, and marked processes that left it."""
    members = set(group_members(pgid, shared)) if pgid is not None else set()
    if mark is not None:
        members.update(find_marked(mark, shared))
    return members


def _signal_all(pgid: int | None, pids: set[int], signum: int) -> bool:
    sent = signal_group(pgid, signum) if pgid is not None else False
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
            sent = True
    return sent


async def stop_group(
    pgid: int | None,
    sigkill_delay_s: float,
    on_signal: Callable[[str], Awaitable[None] | None] | None = None,
    mark: TurnMark | None = None,
) -> None:
    """SIGTERM the turn's processes, then SIGKILL after ``sigkill_delay_s`` if any are left.

    The turn's processes are its process group plus, with ``mark``, any process
    carrying the turn's ``CODYD_RUN_ID``/``CODYD_TURN`` (one that left the group
    with ``setsid``, say).
    """
    alive = turn_processes(pgid, mark)
    if not alive:
        return
    if _signal_all(pgid, alive, signal.SIGTERM) and on_signal is not None:
        await _maybe_await(on_signal("SIGTERM"))
    with trio.move_on_after(sigkill_delay_s):
        while turn_processes(pgid, mark, shared=True):
            await trio.sleep(STOP_POLL_S)
        return
    alive = turn_processes(pgid, mark)
    if alive and _signal_all(pgid, alive, signal.SIGKILL) and on_signal is not None:
        await _maybe_await(on_signal("SIGKILL"))
    with trio.move_on_after(5.0):
        while turn_processes(pgid, mark, shared=True):
            await trio.sleep(STOP_POLL_S)


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def zombie_children(parent: int) -> list[int]:
    """Pids of exited, unreaped children of ``parent``."""
    return [pid for pid, f in _processes() if f[0] == "Z" and int(f[1]) == parent]


def reap_orphans(own: Callable[[], set[int]]) -> int:
    """Reap exited children that codyd did not start itself (re-parented descendants).

    The turn processes codyd started are left alone: trio waits for those, and
    reaping them here would steal their exit status.
    """
    reaped = 0
    mine = own()
    for pid in zombie_children(os.getpid()):
        if pid in mine:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
            reaped += 1
        except ChildProcessError:
            pass
    return reaped


async def reaper(own: Callable[[], set[int]]) -> None:
    """Reap re-parented orphans whenever a child exits (SIGCHLD)."""
    with trio.open_signal_receiver(signal.SIGCHLD) as signals:
        reap_orphans(own)
        async for _ in signals:
            reap_orphans(own)
