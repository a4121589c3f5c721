"""Process-group handling: who is still alive in a turn's group, and stopping it.

``trio.run_process`` signals only the pid it started; agents start shells,
test runners and servers, so codyd signals the whole process group itself.
Liveness comes from ``/proc``: a zombie (state Z) is no longer running, and
``killpg(pgid, 0)`` would count it, so it cannot answer the question alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import trio

PROC = Path("/proc")
STOP_POLL_S = 0.02
REAP_RETRY_S = 0.05
# After SIGKILL: how long processes seen alive may take to go (an unkillable one is
# left to the reaper), and how long a stop keeps trying while /proc cannot be read.
KILL_WAIT_S = 5.0
UNSEEN_WAIT_S = 60.0
UNSEEN_RESEND_S = 0.5
# Errors that say "could not look" (out of descriptors or memory), never "gone".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def _stat_fields(pid: int, strict: bool = False) -> list[str] | None:
    """The stat fields after the command name; None if the process is gone.

    ``strict``: an error that says nothing about the process (no descriptor
    left) is raised rather than taken for its absence.
    """
    try:
        # Plain open(): a scan reads every process's stat, and pathlib's overhead showed.
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        if strict and exc.errno in RESOURCE_ERRNOS:
            raise
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


def identify(pid: int, ticks: int | None) -> str:
    """``same`` (alive, started at ``ticks``), ``dead`` (gone or a zombie) or ``other``.

    ``other`` is a live process under that pid that cannot be shown to be the one
    started at ``ticks`` (a reused pid, or no start time to compare).
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return "dead"
    if ticks is not None and len(fields) >= 20 and int(fields[19]) == ticks:
        return "same"
    return "other"


def _scan() -> list[tuple[int, list[str]]]:
    table = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name), strict=True)
            if fields is not None and len(fields) >= 20:
                table.append((int(entry.name), fields))
    return table


# (CODYD_RUN_ID, CODYD_TURN, CODYD_WORKSPACE values): the workspace tells apart two daemons
# on one host whose clients chose the same run id.
MarkKey = tuple[bytes, bytes, bytes]


class _ProcessTable:
    """One walk of /proc shared by everyone polling within a few milliseconds.

    Stopping 200 turns at once means 200 loops asking who is still alive every
    20 ms; they share a snapshot instead of walking /proc 200 times, and look
    their group and mark up in indexes built once per snapshot. A process's
    initial environment never changes, so its marks are read once per (pid,
    start time).
    """

    TTL_S = 0.01

    def __init__(self) -> None:
        self._taken_at = float("-inf")
        self._table: list[tuple[int, list[str]]] = []
        self._marks: dict[tuple[int, str], frozenset[MarkKey]] = {}
        self._groups: dict[int, list[int]] | None = None
        self._marked: dict[MarkKey, list[int]] | None = None

    def processes(self, shared: bool, since: float | None = None) -> list[tuple[int, list[str]]]:
        """The snapshot: walked afresh unless ``shared`` and young, or begun since ``since``."""
        now = time.monotonic()
        recent = shared and now - self._taken_at <= self.TTL_S
        if not recent and not (since is not None and self._taken_at >= since):
            self._table = _scan()
            self._taken_at = now
            self._groups = self._marked = None
            live = {(pid, f[19]) for pid, f in self._table}
            for key in [k for k in self._marks if k not in live]:
                del self._marks[key]
        return self._table

    def group(self, pgid: int) -> list[int]:
        """Live members of ``pgid`` in the current snapshot."""
        if self._groups is None:
            groups: dict[int, list[int]] = {}
            for pid, f in self._table:
                if f[0] != "Z":
                    groups.setdefault(int(f[2]), []).append(pid)
            self._groups = groups
        return self._groups.get(pgid, [])

    def marked(self, key: MarkKey) -> list[int]:
        """Live processes (but this one) whose environment carries ``key``, in the snapshot."""
        if self._marked is None:
            me = os.getpid()
            marked: dict[MarkKey, list[int]] = {}
            for pid, f in self._table:
                if pid != me and f[0] != "Z":
                    for found in self.marks_of(pid, f):
                        marked.setdefault(found, []).append(pid)
            self._marked = marked
        return self._marked.get(key, [])

    def marks_of(self, pid: int, fields: list[str]) -> frozenset[MarkKey]:
        key = (pid, fields[19])
        cached = self._marks.get(key)
        if cached is None:
            try:
                environ = (PROC / str(pid) / "environ").read_bytes()
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    raise  # not known: never remembered as unmarked
                environ = b""
            cached = self._marks[key] = _marks_in(environ)
        return cached


_MARK_VARIABLES = (b"CODYD_RUN_ID=", b"CODYD_TURN=", b"CODYD_WORKSPACE=")


def _marks_in(environ: bytes) -> frozenset[MarkKey]:
    """Every (run id, turn, workspace) an environment names; repeated variables give several."""
    values: tuple[list[bytes], ...] = ([], [], [])
    for entry in environ.split(b"\0"):
        for index, prefix in enumerate(_MARK_VARIABLES):
            if entry.startswith(prefix):
                values[index].append(entry[len(prefix) :])
    run_ids, turns, workspaces = values
    return frozenset(
        (run_id, turn, workspace)
        for run_id in run_ids
        for turn in turns
        for workspace in workspaces
    )


_TABLE = _ProcessTable()


def group_members(pgid: int, shared: bool = False, since: float | None = None) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is ``pgid``."""
    _TABLE.processes(shared, since)
    return list(_TABLE.group(pgid))


def signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class TurnMark:
    """What identifies a turn's processes in their environment (docs/agents.md §1).

    The workspace is part of it: run ids are chosen by clients, so two daemons on one
    host (two users, two test suites) may both have a run ``build`` at turn 1, and a
    stop of one must never reach the other's agents.
    """

    run_id: str
    turn: int
    workspace: str

    @property
    def key(self) -> MarkKey:
        return (
            self.run_id.encode(),
            str(self.turn).encode(),
            os.fsencode(self.workspace),
        )


def turn_processes(
    pgid: int | None, mark: TurnMark | None, shared: bool = False, since: float | None = None
) -> set[int]:
    """Every live process of a turn: its process group, and marked processes that left it.

    ``since`` (a ``time.monotonic()`` instant) accepts a snapshot of /proc begun at or
    after it: stops requested together are then decided on one walk. Raises OSError
    when /proc cannot be read (no descriptor left): that is no answer.
    """
    _TABLE.processes(shared, since)
    members = set(_TABLE.group(pgid)) if pgid is not None else set()
    if mark is not None:
        members.update(_TABLE.marked(mark.key))
    return members


def strays(
    me: int, owns: Callable[[int], bool], live_groups: set[int], live_marks: set[MarkKey]
) -> list[tuple[int, int]]:
    """Live children of ``me`` that nothing claims: (pid, start ticks) of each.

    A subreaper's children are the agents it started (``owns``) and the
    descendants re-parented to it. One in a live turn's process group or
    carrying a live turn's mark is that turn's (its stop takes it); any other
    (an escapee that left its session and wiped its environment, the remains
    of an ended turn) belongs to nobody. Raises OSError if /proc cannot be read.
    """
    parent = str(me)
    found: list[tuple[int, int]] = []
    for pid, fields in _TABLE.processes(shared=True):
        if fields[1] != parent or fields[0] == "Z" or owns(pid):
            continue
        if int(fields[2]) in live_groups or _TABLE.marks_of(pid, fields) & live_marks:
            continue
        found.append((pid, int(fields[19])))
    return found


async def stop_stray(pid: int, ticks: int, sigkill_delay_s: float) -> None:
    """SIGTERM one process, SIGKILL after ``sigkill_delay_s``; only while it is the same one."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if identify(pid, ticks) != "same":
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
        with trio.move_on_after(sigkill_delay_s):
            while identify(pid, ticks) == "same":
                await trio.sleep(STOP_POLL_S)
            return


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
    requested_at: float | None = None,
) -> None:
    """SIGTERM the turn's processes, then SIGKILL after ``sigkill_delay_s`` if any are left.

    The turn's processes are its process group plus, with ``mark``, any process
    carrying the turn's ``CODYD_RUN_ID``/``CODYD_TURN`` (one that left the group
    with ``setsid``, say). Who gets SIGTERM is read from /proc as it was at some
    moment since ``requested_at`` (the ``time.monotonic()`` of the stop request;
    default: now).

    When /proc cannot be read (the daemon is out of descriptors), "could not
    look" is never taken for "gone": the group is signalled by its pgid (which
    needs no descriptor), and the stop goes on, SIGKILL sent again and again,
    until a look succeeds or the kernel says the group is gone (for at most
    ``UNSEEN_WAIT_S``).
    """
    alive = _look(pgid, mark, since=requested_at)
    if alive is not None and not alive:
        return
    if _signal_all(pgid, alive or set(), signal.SIGTERM) and on_signal is not None:
        await _maybe_await(on_signal("SIGTERM"))
    with trio.move_on_after(sigkill_delay_s):
        while not _gone(pgid, mark):
            await trio.sleep(STOP_POLL_S)
        return
    alive = _look(pgid, mark)
    if alive is not None and not alive:
        return
    if _signal_all(pgid, alive or set(), signal.SIGKILL) and on_signal is not None:
        await _maybe_await(on_signal("SIGKILL"))
    with trio.move_on_after(KILL_WAIT_S):
        while not _gone(pgid, mark):
            await trio.sleep(STOP_POLL_S)
        return
    await _kill_unseen(pgid, mark)


async def _kill_unseen(pgid: int | None, mark: TurnMark | None) -> None:
    """Go on killing while /proc cannot be read; processes seen alive after SIGKILL are left."""
    if _look(pgid, mark) is not None:
        return  # seen alive after SIGKILL: unkillable for now, left to the orphan reaper
    with trio.move_on_after(UNSEEN_WAIT_S):
        while (alive := _look(pgid, mark)) is None and not _gone(pgid, mark):
            _signal_all(pgid, set(), signal.SIGKILL)
            await trio.sleep(UNSEEN_RESEND_S)
        if alive:
            _signal_all(pgid, alive, signal.SIGKILL)  # the first look that sees them all
            with trio.move_on_after(KILL_WAIT_S):
                while not _gone(pgid, mark):
                    await trio.sleep(STOP_POLL_S)


def _look(
    pgid: int | None, mark: TurnMark | None, shared: bool = False, since: float | None = None
) -> set[int] | None:
    """The turn's live processes, or None when /proc cannot be read just now."""
    try:
        return turn_processes(pgid, mark, shared=shared, since=since)
    except OSError as exc:
        if exc.errno not in RESOURCE_ERRNOS:
            raise
        return None


def _gone(pgid: int | None, mark: TurnMark | None) -> bool:
    """True only when known: by /proc, or by the kernel saying the group has no member."""
    alive = _look(pgid, mark, shared=True)
    if alive is not None:
        return not alive
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)  # a zombie member still counts: its reaper is on the way
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


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


class Reaped(NamedTuple):
    reaped: int
    blocked: bool  # a zombie its owner will reap stands first in line: look again soon


def reap_orphans(owns: Callable[[int], bool]) -> Reaped:
    """Reap exited children that codyd did not start itself (re-parented descendants).

    One ``waitid(WNOWAIT)`` peek per zombie, whatever the number of processes:
    the agents codyd started (``owns``) are left alone, their turns wait for them
    and reaping them here would steal their exit status. The kernel shows one
    zombie at a time, so an owned one in front blocks the rest until it is reaped.
    """
    count = 0
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return Reaped(count, False)  # no children at all
        if found is None or found.si_pid == 0:
            return Reaped(count, False)
        if owns(found.si_pid):
            return Reaped(count, True)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(found.si_pid, os.WNOHANG)
            count += 1


class ChildExits:
    """Wakes whoever waits each time a child of codyd exits (the reaper's SIGCHLD).

    An agent's exit is when its escaped descendants are re-parented to codyd, so
    the look for stray processes follows it instead of walking /proc on a timer.
    """

    def __init__(self) -> None:
        self._exited = trio.Event()

    def notify(self) -> None:
        self._exited.set()

    async def wait(self) -> None:
        await self._exited.wait()
        self._exited = trio.Event()


CHILD_EXITS = ChildExits()


async def reaper(owns: Callable[[int], bool]) -> None:
    """Reap re-parented orphans whenever a child exits (SIGCHLD)."""
    with trio.open_signal_receiver(signal.SIGCHLD) as signals:
        while True:
            if reap_orphans(owns).blocked:
                # Its turn reaps it within moments; then the rest can be seen.
                with trio.move_on_after(REAP_RETRY_S):
                    await signals.__anext__()
            else:
                await signals.__anext__()
            CHILD_EXITS.notify()
