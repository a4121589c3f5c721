"""Starting an agent process: one worker-thread call, then trio streams and a pidfd.

``trio.lowlevel.open_process`` spends a worker-thread round trip on ``Popen``
alone, and a turn also has files to create first; hundreds of turns start at
once, and each round trip costs the event loop a GIL hand-over. So a turn's
files and its process are made in one call (:func:`spawn`, blocking, run in a
worker thread) and the result is wrapped on the trio side (:class:`AgentProcess`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Sequence

import trio

from codyd.runs.procs import start_ticks

# Without pidfds (Linux before 5.3), how often an exit is polled for.
EXIT_POLL_S = 0.05


class Children:
    """The agents codyd started and has not reaped yet, and the starts under way.

    The orphan reaper asks :meth:`owns` before reaping a zombie: an agent's exit
    status belongs to its turn. While a start is under way its pid is not known
    yet (the agent may already have exited), so every zombie counts as owned.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()
        self._starting = 0

    def owns(self, pid: int) -> bool:
        with self._lock:
            return self._starting > 0 or pid in self._pids

    def _begin(self) -> None:
        with self._lock:
            self._starting += 1

    def _end(self, pid: int | None) -> None:
        with self._lock:
            self._starting -= 1
            if pid is not None:
                self._pids.add(pid)

    def release(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)


CHILDREN = Children()


class Started:
    """What :func:`spawn` made in the worker thread.

    The process, our ends of its pipes, a pidfd for its exit (-1 without pidfds)
    and its start time in clock ticks (None if it is gone already).
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], fds: tuple[int, int, int], pidfd: int
    ) -> None:
        self.popen = popen
        self.fds = fds
        self.pidfd = pidfd
        self.ticks = start_ticks(popen.pid)


def spawn(argv: Sequence[str], cwd: str, env: dict[str, str]) -> Started:
    """Start ``argv`` in a new session with piped stdin, stdout and stderr (blocking).

    Raises OSError when the process cannot be started; no descriptor leaks then.
    """
    ours: list[int] = []
    theirs: list[int] = []
    pid: int | None = None
    CHILDREN._begin()
    try:
        for to_child in (True, False, False):
            read_end, write_end = os.pipe()  # both close-on-exec
            ours.append(write_end if to_child else read_end)
            theirs.append(read_end if to_child else write_end)
        popen = subprocess.Popen(
            list(argv),
            stdin=theirs[0],
            stdout=theirs[1],
            stderr=theirs[2],
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        pid = popen.pid
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # Linux before 5.3
            pidfd = -1
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        CHILDREN._end(pid)
        for fd in theirs:
            os.close(fd)
    return Started(popen, (ours[0], ours[1], ours[2]), pidfd)


class AgentProcess:
    """A started agent as trio sees it: its pid, its pipes as streams, its exit.

    Built in the trio thread from :class:`Started`. :meth:`close` releases every
    descriptor; the exit status is collected by :meth:`wait` (which reaps).
    """

    def __init__(self, started: Started) -> None:
        self._popen = started.popen
        self.pid = started.popen.pid
        stdin, stdout, stderr = started.fds
        self.stdin = trio.lowlevel.FdStream(stdin)
        self.stdout = trio.lowlevel.FdStream(stdout)
        self.stderr = trio.lowlevel.FdStream(stderr)
        self._pidfd = started.pidfd
        self.ticks = started.ticks
        self._registered = True

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the process to exit and reap it; return its exit status."""
        if self._popen.poll() is None:
            if self._pidfd >= 0:
                await trio.lowlevel.wait_readable(self._pidfd)
            else:
                while self._popen.poll() is None:
                    await trio.sleep(EXIT_POLL_S)
            self._popen.wait()  # it has exited: this reaps without blocking
        self._unregister()
        self._close_pidfd()
        return self._popen.returncode

    def _unregister(self) -> None:
        # Once only: the pid may name another agent of ours by a later call.
        if self._registered:
            self._registered = False
            CHILDREN.release(self.pid)

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def close(self) -> None:
        """Release the descriptors and the pid.

        The turn stops the agent's group before this. Should the agent still run
        (unkillable), it is left to the orphan reaper; ``Popen`` is told it is done
        so that it never reaps the pid later, when it may name another agent.
        """
        for stream in (self.stdin, self.stdout, self.stderr):
            stream.close()
        self._close_pidfd()
        if self._popen.poll() is None:
            self._popen.returncode = -signal.SIGKILL
        self._unregister()


def run_helper(
    argv: Sequence[str], cwd: str, timeout_s: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a short command of codyd's own (``git status``) to its end (blocking).

    Registered as codyd's child while it lives, so that neither the orphan reaper
    nor the look for stray processes takes it. Killed at ``timeout_s``
    (:class:`subprocess.TimeoutExpired`); raises OSError when it cannot start.
    """
    pid: int | None = None
    CHILDREN._begin()
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        pid = popen.pid
    finally:
        CHILDREN._end(pid)
    try:
        with popen:
            try:
                out, err = popen.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.communicate()
                raise
    finally:
        CHILDREN.release(popen.pid)
    return subprocess.CompletedProcess(popen.args, popen.returncode, out, err)
