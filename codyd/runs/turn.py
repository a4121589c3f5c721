"""One turn: one agent subprocess, from prompt to outcome (docs/agents.md §1).

The agent runs in a new process group; its stdout and stderr are read
concurrently into capped log files and through the output pipeline; watchdogs
stop it on stall, timeout or request, always by SIGTERM then SIGKILL to the
whole group. Whatever happens, no process of the group outlives the turn.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from codyd.model.layout import PID_FILE, PROMPT_FILE, log_file_name
from codyd.model.state import Outcome
from codyd.runs import procs
from codyd.runs.output import CappedLog
from codyd.runs.prompt import BuiltPrompt, PromptError, build_prompt
from codyd.runs.spawn import AgentProcess, Started, spawn
from codyd.spec import RunSpec

log = structlog.get_logger("codyd.turn")

STDERR_TAIL_BYTES = 8192
READ_CHUNK = 65536
# After the group is gone, how long a pipe may stay open (held by an escaped descendant).
PIPE_DRAIN_S = 2.0
SUPERVISOR_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
# A turn that looks stalled but has output waiting in its pipes: how soon to look again.
STALL_RECHECK_S = 0.05
# errnos meaning no retry can help: the binary is missing or cannot be executed.
FATAL_SPAWN_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR})


@dataclass(slots=True)
class TurnResult:
    outcome: Outcome
    exit_code: int | None
    duration_ms: int
    stderr_tail: str | None = None
    error_message: str | None = None
    fatal: bool = False  # spawn_failed that no retry can fix
    error_code: str | None = None  # the agent's own code for its error (error_max_turns, 401)
    resets_at: float | None = None  # rate_limited: when the agent said its limit resets (unix s)


@dataclass(slots=True)
class TurnPlan:
    """Everything a turn needs to start, decided by the run driver."""

    run_id: str
    n: int
    argv: list[str]
    cwd: str
    env: dict[str, str]
    prompt: bytes
    turn_dir: Path
    max_log_bytes: int
    max_line_bytes: int
    turn_timeout_s: float
    stall_timeout_s: float
    sigkill_delay_s: float


def agent_environment(
    base: Mapping[str, str], extra: Mapping[str, str], run_id: str, n: int, ws: str
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in SUPERVISOR_ENV}
    env.update(extra)
    env["CODYD_RUN_ID"] = run_id
    env["CODYD_TURN"] = str(n)
    env["CODYD_WORKSPACE"] = ws
    return env


@dataclass(slots=True)
class TurnHooks:
    """How a turn talks back to its run: every callback runs in the trio thread."""

    on_started: Callable[[int, int | None], None]  # pid, its start ticks
    # Bytes read from a stream, as read; b"" once the stream has ended. False: they were
    # only idle noise (an agent retrying its service), which is no activity for the stall
    # watchdog.
    on_output: Callable[[str, bytes], bool | None]
    on_activity: Callable[[], None]
    on_event: Callable[[str, dict[str, Any]], None]
    backpressure: Callable[[], Awaitable[None]] | None = None


class TurnFiles:
    """A turn's files, made before its agent starts: ``prompt.txt``, the capped logs, ``turn.pid``.

    Built in a worker thread (creating a directory and files can block on a busy
    disk); once the agent runs, only writes to files already open happen in the
    event loop. ``turn.pid`` lives exactly as long as the turn.
    """

    def __init__(self, plan: TurnPlan) -> None:
        plan.turn_dir.mkdir(parents=True, exist_ok=True)
        (plan.turn_dir / PROMPT_FILE).write_bytes(plan.prompt)
        self.pid_path = plan.turn_dir / PID_FILE
        self.pid_error: OSError | None = None
        self._pid_fd = os.open(
            self.pid_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640
        )
        try:
            self.stdout = CappedLog(plan.turn_dir / log_file_name("stdout"), plan.max_log_bytes)
            self.stderr = CappedLog(plan.turn_dir / log_file_name("stderr"), plan.max_log_bytes)
        except BaseException:
            if hasattr(self, "stdout"):
                self.stdout.close()
            os.close(self._pid_fd)
            raise

    def record_pid(self, pid: int, ticks: int | None) -> None:
        """Write ``turn.pid``; an error is kept in ``pid_error``: the agent runs already."""
        try:
            os.write(self._pid_fd, f"{pid}\n{ticks or ''}\n".encode())
        except OSError as exc:
            self.pid_error = exc

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()
        os.close(self._pid_fd)
        try:
            self.pid_path.unlink(missing_ok=True)
        except OSError as exc:  # a read-only or vanished state dir: recovery checks the pid
            log.warning("cannot remove turn.pid", path=str(self.pid_path), error=str(exc))


class Turn:
    def __init__(self, plan: TurnPlan, hooks: TurnHooks) -> None:
        self.plan = plan
        self.hooks = hooks
        self.pid: int | None = None
        self.stop_outcome: Outcome | None = None
        # Deliberately time.monotonic(), not trio's clock: it is compared with the start
        # instants of /proc snapshots that worker threads share (procs.stop_group's
        # ``requested_at``), and threads cannot read trio's clock.
        self.stop_requested_at: float | None = None
        self._stop_requested = trio.Event()
        # Set when the watchdog must look again: a stop request, or limits changed.
        self._watch = trio.Event()
        self._stop_done = trio.Event()
        self._stopping = False
        self._last_output = 0.0  # trio.current_time() of the last output read
        self._stderr_tail = bytearray()
        self._mark = procs.TurnMark(plan.run_id, plan.n, plan.cwd)

    def request_stop(self, outcome: Outcome) -> None:
        """Ask the turn to stop its agent; the first reason given is its outcome."""
        if self.stop_outcome is None:
            self.stop_outcome = outcome
            self.stop_requested_at = time.monotonic()
        self._stop_requested.set()
        self._watch.set()

    def change_limits(
        self, turn_timeout_s: float, stall_timeout_s: float, sigkill_delay_s: float
    ) -> None:
        """New limits for this turn (run.update): the deadlines count from its start, as before.

        A timeout lowered below the time the turn has run already stops it at once.
        """
        self.plan.turn_timeout_s = turn_timeout_s
        self.plan.stall_timeout_s = stall_timeout_s
        self.plan.sigkill_delay_s = sigkill_delay_s
        self._watch.set()

    async def run(self) -> TurnResult:
        plan = self.plan
        if self.stop_outcome is not None:
            return TurnResult(self.stop_outcome, None, 0)
        started = trio.current_time()
        # In a worker thread: creating the turn's files blocks for milliseconds on a busy
        # disk. Shielded: a cancellation landing here would abandon a started agent.
        with trio.CancelScope(shield=True):
            files, spawned = await trio.to_thread.run_sync(_start, plan)
        if files is None:
            assert isinstance(spawned, SpawnFailure)
            return spawned.result()
        try:
            if isinstance(spawned, SpawnFailure):
                return spawned.result()
            if self.stop_requested_at is not None:
                # Asked to stop while the agent was being started: the walks of /proc
                # that may answer the stop must be ones that can see the agent.
                self.stop_requested_at = time.monotonic()
            proc = AgentProcess(spawned)
            try:
                return await self._run(proc, files, started)
            finally:
                if proc.returncode is None:
                    # Left early (a cancellation, an error): no agent outlives its turn.
                    await self._stop_group_once(proc.pid)
                proc.close()
        finally:
            files.close()

    async def _run(self, proc: AgentProcess, files: TurnFiles, started: float) -> TurnResult:
        self.pid = proc.pid
        if files.pid_error is not None:
            log.warning(
                "cannot write turn.pid; recovery after a crash relies on the store alone",
                run_id=self.plan.run_id,
                turn=self.plan.n,
                error=str(files.pid_error),
            )
        self._last_output = trio.current_time()
        self.hooks.on_started(proc.pid, proc.ticks)
        exit_code = await self._supervise(proc, files.stdout, files.stderr)
        duration_ms = int((trio.current_time() - started) * 1000)
        outcome = self.stop_outcome or (Outcome.OK if exit_code == 0 else Outcome.ERROR)
        tail = None
        if outcome != Outcome.OK:
            tail = bytes(self._stderr_tail).decode("utf-8", "replace")
        return TurnResult(outcome, exit_code, duration_ms, stderr_tail=tail)

    async def _supervise(
        self, proc: AgentProcess, stdout_log: CappedLog, stderr_log: CappedLog
    ) -> int | None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._feed_stdin, proc.stdin)
            nursery.start_soon(self._watchdog, proc)
            async with trio.open_nursery() as readers:
                readers.start_soon(self._read, "stdout", proc.stdout, stdout_log)
                readers.start_soon(self._read, "stderr", proc.stderr, stderr_log)
                try:
                    await proc.wait()
                finally:
                    await self._stop_group_once(proc.pid)
                # Everyone that held the pipes is gone; what is left to read is buffered.
                readers.cancel_scope.deadline = trio.current_time() + PIPE_DRAIN_S
            nursery.cancel_scope.cancel()
        return proc.returncode

    async def _stop_group_once(self, pgid: int, requested_at: float | None = None) -> None:
        """Stop the turn's processes; whoever comes later waits for the first stop to end.

        Shielded: a stop, once begun, is finished whatever is cancelled meanwhile.
        Turns stopped together (a shutdown) share one walk of /proc to find theirs.
        """
        with trio.CancelScope(shield=True):
            if self._stopping:
                await self._stop_done.wait()
                return
            self._stopping = True
            try:
                await procs.stop_group(
                    pgid, self.plan.sigkill_delay_s, self._signal_sent, self._mark, requested_at
                )
            finally:
                self._stop_done.set()

    def _signal_sent(self, name: str) -> None:
        log.info(
            "signal sent", run_id=self.plan.run_id, turn=self.plan.n, pid=self.pid, signal=name
        )
        self.hooks.on_event("signal_sent", {"signal": name, "pid": self.pid})

    async def _feed_stdin(self, stdin: trio.abc.SendStream) -> None:
        try:
            await stdin.send_all(self.plan.prompt)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the agent does not read its stdin; that is its business
        finally:
            with trio.CancelScope(shield=True):
                await stdin.aclose()

    async def _read(self, stream: str, pipe: trio.abc.ReceiveStream, sink: CappedLog) -> None:
        keep_tail = stream == "stderr"
        try:
            while True:
                data = bytes(await pipe.receive_some(READ_CHUNK))
                if not data:
                    break
                sink.write(data)
                if keep_tail:
                    self._stderr_tail += data
                    del self._stderr_tail[:-STDERR_TAIL_BYTES]
                if self.hooks.on_output(stream, data) is not False:
                    self._last_output = trio.current_time()
                    self.hooks.on_activity()
                if self.hooks.backpressure is not None:
                    await self.hooks.backpressure()
        finally:
            self.hooks.on_output(stream, b"")

    async def _watchdog(self, proc: AgentProcess) -> None:
        """Stop the turn on timeout, stall or request.

        A stall is decided on output actually read: when the daemon itself was
        held up (SIGSTOP, a long GC pause), the agent's output waits in the pipes
        and the readers have yet to see it, so bytes pending there are no stall.
        """
        plan = self.plan
        pid = proc.pid
        started = trio.current_time()
        while True:
            deadline = started + plan.turn_timeout_s
            watch = self._watch
            with trio.move_on_at(min(deadline, self._last_output + plan.stall_timeout_s)):
                await watch.wait()
            if self._stop_requested.is_set():
                break
            if watch.is_set():
                self._watch = trio.Event()  # the limits changed: deadlines from the new ones
                continue
            now = trio.current_time()
            if now >= deadline:
                self.request_stop(Outcome.TIMED_OUT)
                break
            idle = now - self._last_output
            if idle >= plan.stall_timeout_s:
                if _unread_output(proc):
                    await trio.sleep(STALL_RECHECK_S)  # the readers' turn first
                    continue
                self.hooks.on_event("stall_detected", {"idle_s": round(idle, 3)})
                self.request_stop(Outcome.STALLED)
                break
        if self._stopping:
            return
        log.info(
            "stopping turn", run_id=plan.run_id, turn=plan.n, pid=pid, outcome=self.stop_outcome
        )
        await self._stop_group_once(pid, self.stop_requested_at)


@dataclass(frozen=True, slots=True)
class SpawnFailure:
    """Why a turn's agent could not be started, and whether a later turn could do better."""

    message: str
    fatal: bool

    def result(self) -> TurnResult:
        return TurnResult(
            Outcome.SPAWN_FAILED, None, 0, error_message=self.message, fatal=self.fatal
        )


def describe_os_error(exc: OSError) -> str:
    """``Too many open files (EMFILE)``: the errno by name, so that the cause can be looked up."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def _start(plan: TurnPlan) -> tuple[TurnFiles | None, Started | SpawnFailure]:
    """Make the turn's files and start its agent (in a worker thread: both may block).

    Running out of descriptors or disk is a ``spawn_failed`` that a later turn may
    not meet; a missing binary or workspace is one that no retry can help.
    """
    try:
        files = TurnFiles(plan)
    except OSError as exc:
        message = f"cannot create the turn's files in {plan.turn_dir}: {describe_os_error(exc)}"
        return None, SpawnFailure(message, fatal=False)
    try:
        started = spawn(plan.argv, plan.cwd, plan.env)
        # The start time guards recovery against a reused pid (docs/operations.md §4).
        files.record_pid(started.popen.pid, started.ticks)
        return files, started
    except OSError as exc:
        return files, _spawn_failure(plan, exc)
    except BaseException:
        files.close()
        raise


def _spawn_failure(plan: TurnPlan, exc: OSError) -> SpawnFailure:
    if not os.path.isdir(plan.cwd):
        # Popen says ENOENT for a missing cwd as for a missing binary: tell them apart.
        return SpawnFailure(workspace_gone(plan.cwd), fatal=True)
    message = f"cannot start {plan.argv[0]!r}: {describe_os_error(exc)}"
    return SpawnFailure(message, fatal=exc.errno in FATAL_SPAWN_ERRNOS)


def workspace_gone(workspace: str) -> str:
    return f"the workspace {workspace} is gone (no such directory); no turn can run in it"


def _unread_output(proc: AgentProcess) -> bool:
    """True if bytes wait unread in the agent's stdout or stderr pipe."""
    for stream in (proc.stdout, proc.stderr):
        try:
            raw = fcntl.ioctl(stream.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            continue  # closed already: nothing to wait for there
        if struct.unpack("i", raw)[0] > 0:
            return True
    return False


def read_pid_file(path: Path) -> tuple[int, int | None] | None:
    """The pid and start ticks a turn.pid file holds, or None if it is unreadable."""
    try:
        lines = path.read_text().split()
        return int(lines[0]), (int(lines[1]) if len(lines) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def read_prompt(spec: RunSpec) -> BuiltPrompt | TurnResult:
    """The turn's prompt, or how the turn ends without one (blocking: in a worker thread).

    A workspace that is gone fails the run at once, like a missing binary: no
    later turn could run in it.
    """
    if not os.path.isdir(spec.workspace):
        message = workspace_gone(spec.workspace)
        return TurnResult(Outcome.SPAWN_FAILED, None, 0, error_message=message, fatal=True)
    try:
        return build_prompt(spec)
    except PromptError as exc:
        return TurnResult(Outcome.ERROR, None, 0, error_message=str(exc))


def turn_completed_data(
    outcome: Outcome, error_message: str | None, error_code: str | None = None
) -> dict[str, Any]:
    """A ``turn_completed`` event's data, the counts left at zero."""
    return {
        "outcome": outcome,
        "exit_code": None,
        "duration_ms": 0,
        "tokens": {"input": 0, "output": 0, "cached": 0},
        "cost_usd": 0.0,
        "stderr_tail": None,
        "error": None
        if error_message is None
        else {"code": error_code or outcome, "message": error_message},
    }
