"""Process-group handling: who is still alive in a turn's group, and stopping it.

``trio.run_process`` signals only the pid it started; agents start shells,
test runners and servers, so codyd signals the whole process group itself.
Liveness comes from ``/proc``: a zombie (state Z) is no longer running, and
``killpg(pgid, 0)`` would count it, so it cannot answer the question alone.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
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


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 3 or fields[0] == "Z":
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(
    pgid: int,
    sigkill_delay_s: float,
    on_signal: Callable[[str], Awaitable[None] | None] | None = None,
) -> None:
    """SIGTERM the group, then SIGKILL after ``sigkill_delay_s`` if anything is left."""
    if not group_members(pgid):
        return
    if signal_group(pgid, signal.SIGTERM) and on_signal is not None:
        await _maybe_await(on_signal("SIGTERM"))
    with trio.move_on_after(sigkill_delay_s):
        while group_members(pgid):
            await trio.sleep(STOP_POLL_S)
        return
    if group_members(pgid) and signal_group(pgid, signal.SIGKILL) and on_signal is not None:
        await _maybe_await(on_signal("SIGKILL"))
    with trio.move_on_after(5.0):
        while group_members(pgid):
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
    zombies = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and len(fields) > 1 and fields[0] == "Z" and int(fields[1]) == parent:
            zombies.append(int(entry.name))
    return zombies


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
