"""The run driver: one task that drives a running run turn after turn (SPEC 2.2–2.7)."""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

import structlog
import trio

from codyd.agents import Parsed, adapter_for
from codyd.events import LIFECYCLE_TYPES
from codyd.redact import redact_text, redact_value, secret_values
from codyd.runs.output import OutputThrottle
from codyd.runs.prompt import BuiltPrompt, PromptError, build_prompt
from codyd.runs.record import RunRecord, Tokens
from codyd.runs.state import Phase, State
from codyd.runs.turn import (
    Turn,
    TurnHooks,
    TurnPlan,
    TurnResult,
    agent_environment,
    workspace_gone,
)
from codyd.runs.watch import LogWatcher, watched_files
from codyd.telemetry.ansi import strip_ansi
from codyd.telemetry.runner_summary import TestSummaryDetector
from codyd.telemetry.sentinel import parse_sentinel

if TYPE_CHECKING:
    from codyd.runs.supervisor import Supervisor
    from codyd.spec import RunSpec

log = structlog.get_logger("codyd.run")

USAGE_EVENTS = frozenset({"token_usage", "cost"})
PATH_EVENTS = frozenset({"file_read", "file_written", "file_deleted", "log_updated"})
FAILED_OUTCOMES = frozenset({"error", "stalled", "timed_out", "spawn_failed"})
# Not counted toward max_turns: the daemon ended the turn, or no agent ran (SPEC 2.1).
UNCOUNTED_OUTCOMES = frozenset({"interrupted", "lost", "spawn_failed"})
MAX_BACKOFF_S = 300.0
ACTIVITY_SAVE_S = 2.0
LOG_CHECK_S = 1.0


class RunDriver:
    def __init__(self, supervisor: Supervisor, record: RunRecord) -> None:
        self.supervisor = supervisor
        self.store = supervisor.store
        self.config = supervisor.config
        self.record = record
        self.spec = record.spec
        self.adapter = adapter_for(record.spec.agent)
        self.turn: Turn | None = None
        self._turn_open = False  # a turn began and its turn_completed is not out yet
        self.interrupted = False
        self.lease_holder: str | None = None  # set when another daemon took the lease
        self._wake = trio.Event()
        self._throttle = OutputThrottle()
        self._output_waiting = trio.Event()
        self._pattern = (
            re.compile(self.spec.completion.pattern) if self.spec.completion.pattern else None
        )
        self._detectors: dict[str, TestSummaryDetector] = {}
        self._activity_saved = 0.0
        self._watcher = (
            LogWatcher(watched_files(self.spec.workspace, self.spec.watch_logs))
            if self.spec.watch_logs
            else None
        )
        self._turn_tokens = Tokens()
        self._turn_cost = 0.0
        # Values of the run's env: agent output echoing them never reaches an event.
        self._secrets = secret_values(self.spec.env.values())
        self._requested_session: str | None = None
        self._sessions_this_turn: set[str] = set()
        self._resume_failed = False
        self._split_warned = False
        self._agent_config = self.config.agents.get(self.spec.agent)
        agent_config = self._agent_config
        self._usage_mode = agent_config.usage if agent_config is not None else "per_turn"

    # -- control from outside ----------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop_turn(self, outcome: str) -> None:
        if self.turn is not None:
            self.turn.request_stop(outcome)
        self.wake()

    def lose_lease(self, holder: str) -> None:
        """Another daemon took the run's lease: stop the turn, record it, drive no more."""
        if self.lease_holder is None:
            self.lease_holder = holder
            self.store.append(
                self.record, "lease_lost", {"holder": holder}, turn=self.record.current_turn or None
            )
            self.stop_turn("aborted")

    def interrupt(self) -> None:
        """Daemon shutdown: stop the live turn, leave the run non-terminal."""
        self.interrupted = True
        self.stop_turn("interrupted")

    # -- the loop ---------------------------------------------------------------------------

    async def drive(self) -> None:
        """Turn after turn until the run leaves ``running``; errors go to the supervisor."""
        record = self.record
        while record.state is State.RUNNING and not self._stopped():
            if not await self._hold_lease() or self._stopped():
                break
            if self._finish_if_done():
                break
            # No new turn while the store cannot record it.
            await self.store.wait_writable(
                record.run_id, lambda: self._stopped() or record.state is not State.RUNNING
            )
            if self._stopped() or record.state is not State.RUNNING:
                break
            result = await self._one_turn()
            if self._after_turn(result):
                break
            if record.consecutive_failures and record.state is State.RUNNING:
                await self._backoff()
        self._settle()

    def park(self) -> None:
        """The driver ends: a run it leaves non-running is idle."""
        record = self.record
        record.phase = Phase.IDLE if record.state is not State.RUNNING else record.phase
        self.store.save(record)

    def fail_internal(self, exc: BaseException) -> None:
        """A bug of codyd's met while driving this run: the run fails, nothing else does.

        The turn in progress (its agent already stopped by the turn) is closed with
        outcome ``error``, so that recovery never takes it for a lost one.
        """
        record = self.record
        cause = _innermost(exc)
        message = f"internal error in codyd: {type(cause).__name__}: {cause}"
        self.turn = None
        if self._turn_open:
            self._turn_open = False
            record.pid = None
            self.store.save_turn(
                record.run_id, record.current_turn, ended_at=time.time(), outcome="error"
            )
            self._emit("turn_completed", _turn_completed_data("error", message))
        if record.state is State.CANCELLING:
            self._settle()  # it was to end anyway: cancelled, as asked
            return
        error = {"code": "internal", "message": message, "retryable": True}
        self.store.compare_and_set(
            record,
            {State.RUNNING, State.PAUSING},
            State.FAILED,
            ("run_failed", {"error": error}),
            error=error,
            phase=Phase.IDLE,
        )

    def _stopped(self) -> bool:
        return self.interrupted or self.lease_holder is not None

    async def _hold_lease(self) -> bool:
        """Wait until this daemon holds the run's lease; False if it should stop driving."""
        leases = self.supervisor.leases
        waited = False
        while True:
            holder = await leases.acquire(self.record.run_id)
            if holder is None:
                return True
            if not waited:
                waited = True
                log.info("run waits for its lease", run_id=self.record.run_id, holder=holder)
            self._wake = trio.Event()
            with trio.move_on_after(self.config.lease_ttl_s / 3):
                await self._wake.wait()
            if self.record.state is not State.RUNNING or self._stopped():
                return False

    def _settle(self) -> None:
        """Apply a pause or cancel that arrived while a turn was ending."""
        record = self.record
        if record.state is State.PAUSING:
            self._set_paused()
        elif record.state is State.CANCELLING:
            self.store.compare_and_set(
                record,
                {State.CANCELLING},
                State.CANCELLED,
                (
                    "run_cancelled",
                    {"reason": self.supervisor.cancel_reasons.pop(record.run_id, None)},
                ),
                phase=Phase.IDLE,
            )

    def _set_paused(self) -> None:
        self.store.compare_and_set(
            self.record,
            {State.PAUSING, State.RUNNING},
            State.PAUSED,
            ("run_paused", {"reason": self.supervisor.pause_reasons.get(self.record.run_id)}),
            phase=Phase.IDLE,
            paused_since=time.time(),
        )

    async def _backoff(self) -> None:
        record = self.record
        delay = min(
            MAX_BACKOFF_S, self.spec.retry_backoff_s * 2 ** (record.consecutive_failures - 1)
        )
        record.phase = Phase.BACKOFF
        self.store.save(record)
        self._wake = trio.Event()
        with trio.move_on_after(delay):
            await self._wake.wait()
        if record.phase is Phase.BACKOFF:
            record.phase = Phase.BETWEEN_TURNS

    # -- one turn ----------------------------------------------------------------------------

    async def _one_turn(self) -> TurnResult:
        record = self.record
        n = record.current_turn + 1
        self.adapter = adapter_for(self.spec.agent)
        resume = self.spec.resume_session and self.adapter.resumes_sessions
        session = record.session_id if resume else None
        self._requested_session = session
        self._sessions_this_turn = set()
        self._resume_failed = False
        self._split_warned = False
        argv = self.adapter.argv(self.spec, self._agent_config, session)
        plan = TurnPlan(
            run_id=record.run_id,
            n=n,
            argv=argv,
            cwd=self.spec.workspace,
            env=agent_environment(os.environ, self.spec.env, record.run_id, n, self.spec.workspace),
            prompt=b"",  # built below, once a stop can find the turn
            turn_dir=self.supervisor.turn_dir(record.run_id, n),
            max_log_bytes=self.config.max_turn_log_bytes,
            max_line_bytes=self.config.max_line_bytes,
            turn_timeout_s=self.spec.turn_timeout_s,
            stall_timeout_s=self.spec.stall_timeout_s,
            sigkill_delay_s=self.spec.sigkill_delay_s,
        )
        turn = Turn(
            plan,
            TurnHooks(
                on_started=lambda pid, ticks: self._turn_started(turn, pid, ticks, argv, session),
                on_line=self._on_line,
                on_activity=self._on_activity,
                on_event=lambda type_, data: self._emit(type_, data),
                backpressure=self.store.backpressure,
            ),
        )
        # Synchronously, with no checkpoint since the state check: a pause or cancel
        # arriving from now on finds the turn and stops it.
        self.turn = turn
        self._turn_open = True
        record.current_turn = n
        record.phase = Phase.IN_TURN
        self._turn_tokens = Tokens()
        self._turn_cost = 0.0
        self._detectors = {}
        self.store.save(record)
        # Off the event loop: the prompt and context files are the workspace's, on any disk.
        prompt = await trio.to_thread.run_sync(_read_prompt, self.spec)
        if isinstance(prompt, TurnResult):
            if prompt.error_message is not None and not prompt.fatal:
                self._warn(prompt.error_message)
            result = prompt
        else:
            plan.prompt = prompt.text
            for warning in prompt.warnings:
                self._warn(warning)
            result = await self._run_with_output(turn)
        self.turn = None
        return result

    async def _run_with_output(self, turn: Turn) -> TurnResult:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_output)
            if self._watcher is not None:
                nursery.start_soon(self._watch_logs)
            deadline = self._duration_deadline()
            if deadline is not None:
                nursery.start_soon(self._duration_watch, turn, deadline)
            result = await turn.run()
            nursery.cancel_scope.cancel()
        for detector in self._detectors.values():
            for summary in detector.flush():
                self._test_summary(summary.to_data())
        await self._flush_output()
        self._check_logs()
        if result.outcome in ("ok", "error"):
            reported = self.adapter.finish(result.exit_code)
            if reported is not None:
                result.outcome = "error"
                result.error_message = reported
        if self._resume_failed and self._requested_session is not None:
            # A session the agent no longer knows: the next turn starts a fresh one.
            self._warn(
                f"the agent could not resume session {self._requested_session}; "
                "the next turn starts a new session"
            )
            if self.record.session_id == self._requested_session:
                self.record.session_id = None
        return result

    async def _watch_logs(self) -> None:
        while True:
            await trio.sleep(LOG_CHECK_S)
            self._check_logs()

    def _check_logs(self) -> None:
        if self._watcher is not None:
            for update in self._watcher.check():
                self._emit("log_updated", update)

    async def _duration_watch(self, turn: Turn, deadline: float) -> None:
        await trio.sleep_until(deadline)
        turn.request_stop("aborted")

    def _duration_deadline(self) -> float | None:
        limit = self.spec.budget.max_duration_s
        if limit is None:
            return None
        return trio.current_time() + max(0.0, limit - self._run_seconds())

    def _run_seconds(self) -> float:
        record = self.record
        if record.started_at is None:
            return 0.0
        return time.time() - record.started_at - record.paused_total_s

    def _turn_started(
        self, turn: Turn, pid: int, ticks: int | None, argv: list[str], session: str | None
    ) -> None:
        record = self.record
        record.pid = pid
        self.store.save_turn(
            record.run_id, turn.plan.n, started_at=time.time(), pid=pid, pid_start_ticks=ticks
        )
        shown = [redact_text(arg, self._secrets) for arg in argv]
        self._emit("turn_started", {"pid": pid, "argv": shown, "session_id": session})
        log.info("turn started", run_id=record.run_id, turn=turn.plan.n, pid=pid)

    # -- output ------------------------------------------------------------------------------------

    def _emit(self, type_: str, data: dict[str, Any]) -> None:
        record = self.record
        if self._secrets and type_ not in LIFECYCLE_TYPES:
            data = redact_value(data, self._secrets)
        if type_ in PATH_EVENTS and isinstance(data.get("path"), str):
            data["path"] = workspace_relative(data["path"], self.spec.workspace)
        record.stats.account(type_, data)
        if type_ == "token_usage":
            self._turn_tokens.add(Tokens(data["input"], data["output"], data["cached"]))
        elif type_ == "cost":
            self._turn_cost += data["usd"]
        self.store.append(record, type_, data, turn=record.current_turn or None)

    def _redact(self, text: str) -> str:
        """Output may echo the run's secrets or tokens; they never reach an event."""
        return redact_text(text, self._secrets)

    def _warn(self, message: str) -> None:
        self._emit("warning", {"message": message})

    def _on_activity(self) -> None:
        now = time.time()
        if now - self._activity_saved >= ACTIVITY_SAVE_S:
            self._activity_saved = now
            self.record.last_activity = now
            self.store.save(self.record)

    def _on_line(self, stream: str, raw: bytes, split: bool) -> None:
        if split and not self._split_warned:
            self._split_warned = True
            self._warn(
                f"{stream} line longer than max_line_bytes={self.config.max_line_bytes} "
                "was split (the log file has it whole)"
            )
        text = raw.decode("utf-8", "replace")
        if not split:
            sentinel = parse_sentinel(text)
            if sentinel is not None:
                if sentinel.type == "test_run_completed":
                    self.record.sentinel_tests = True
                self._emit(sentinel.type, sentinel.data)
                return
        parsed = self._parse(stream, text)
        plain = strip_ansi(text) if "\x1b" in text else text
        if not parsed.consumed and not self.record.sentinel_tests:
            detector = self._detectors.get(stream)
            if detector is None:
                detector = self._detectors[stream] = TestSummaryDetector()
            for summary in detector.feed(plain):
                self._test_summary(summary.to_data())
        if self._pattern is not None and not self.record.completion_detected:
            candidate = parsed.message_text if self.spec.agent != "command" else plain
            if candidate is not None:
                self._match_pattern(candidate)
        if not parsed.consumed:
            self._throttle.add(stream, raw if split else raw + b"\n")
            self._output_waiting.set()

    def _parse(self, stream: str, text: str) -> Parsed:
        """Let the adapter read the line, and emit what it found."""
        adapter = self.adapter
        parsed = adapter.parse_stdout(text) if stream == "stdout" else adapter.parse_stderr(text)
        if parsed.session_id is not None:
            self._session_seen(parsed.session_id)
        if parsed.resume_failed:
            self._resume_failed = True
        for type_, data in parsed.events:
            if type_ == "test_run_completed" and self.record.sentinel_tests:
                continue  # tests reported by sentinel are counted once (SPEC 2.6)
            if type_ in USAGE_EVENTS:
                self._emit_usage(type_, data)
            else:
                self._emit(type_, data)
        return parsed

    def _test_summary(self, data: dict[str, Any]) -> None:
        if not self.record.sentinel_tests:
            self._emit("test_run_completed", data)

    def _match_pattern(self, text: str) -> None:
        assert self._pattern is not None
        for line in text.splitlines() or [text]:
            if self._pattern.search(line):
                record = self.record
                record.completion_detected = True
                record.completion_reason = "pattern"
                record.completion_line = line[:4096]
                self.store.save(record)
                return

    def _session_seen(self, session_id: str) -> None:
        """The agent reported its session: once per turn, and a resumed one must match."""
        if session_id in self._sessions_this_turn:
            return
        self._sessions_this_turn.add(session_id)
        record = self.record
        requested = self._requested_session
        if requested is not None and session_id != requested:
            self._emit("resume_mismatch", {"requested": requested, "observed": session_id})
        record.session_id = session_id
        self._emit("session_started", {"session_id": session_id})

    def _emit_usage(self, type_: str, data: dict[str, Any]) -> None:
        """An agent's token or cost report: added as is, or as the growth of a session total."""
        if self._usage_mode == "session_total":
            data = self._usage_increment(type_, data)
        self._emit(type_, data)

    def _usage_increment(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        record = self.record
        baseline = record.usage_baseline
        if baseline is None or baseline.get("session_id") != record.session_id:
            baseline = {"session_id": record.session_id}  # a new session starts from zero
        keys = ("input", "output", "cached") if type_ == "token_usage" else ("usd",)
        increment: dict[str, Any] = {}
        for key in keys:
            total = data[key]
            increment[key] = max(0, total - baseline.get(key, 0))
            baseline[key] = total
        record.usage_baseline = baseline
        return increment

    async def _pump_output(self) -> None:
        while True:
            await self._output_waiting.wait()
            await trio.sleep_until(_monotonic_to_trio(self._throttle.next_due()))
            self._emit_output()
            self._output_waiting = trio.Event()
            if self._throttle.has_pending():
                self._output_waiting.set()

    async def _flush_output(self) -> None:
        while self._throttle.has_pending():
            await trio.sleep_until(_monotonic_to_trio(self._throttle.next_due()))
            self._emit_output()

    def _emit_output(self) -> None:
        data = self._throttle.take(time.monotonic())
        if data is not None:
            data["text"] = self._redact(data["text"])
            self.store.append(self.record, "subprocess_output", data, turn=self.record.current_turn)

    # -- after a turn ---------------------------------------------------------------------------

    def _after_turn(self, result: TurnResult) -> bool:
        """Record the turn's end; True when the driver should stop driving."""
        record = self.record
        record.pid = None
        record.stats.turns += 1
        failed = result.outcome in FAILED_OUTCOMES
        if failed:
            record.stats.failed_turns += 1
            record.consecutive_failures += 1
        elif result.outcome == "ok":
            record.consecutive_failures = 0
        if result.outcome in UNCOUNTED_OUTCOMES:
            record.uncounted_turns += 1
        self.store.save_turn(
            record.run_id,
            record.current_turn,
            ended_at=time.time(),
            outcome=result.outcome,
            exit_code=result.exit_code,
        )
        message = None if result.error_message is None else self._redact(result.error_message)
        data = _turn_completed_data(result.outcome, message)
        data.update(
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            tokens=self._turn_tokens.to_wire(),
            cost_usd=self._turn_cost,
            stderr_tail=None if result.stderr_tail is None else self._redact(result.stderr_tail),
        )
        self._emit("turn_completed", data)
        self._turn_open = False
        log.info(
            "turn completed",
            run_id=record.run_id,
            turn=record.current_turn,
            outcome=result.outcome,
            exit_code=result.exit_code,
            error=result.error_message,
        )
        record.phase = Phase.BETWEEN_TURNS
        if result.outcome == "interrupted" or self.interrupted:
            self.store.append(
                record, "run_interrupted", {"reason": "shutdown"}, turn=record.current_turn
            )
            return True
        if self.lease_holder is not None:
            return True  # the run is another daemon's to drive now
        if record.state is not State.RUNNING:
            return True
        message = result.error_message or f"turn {record.current_turn} ended {result.outcome}"
        if result.exit_code is not None and not result.error_message:
            message += f" (exit code {result.exit_code})"
        if self._finish_if_done(failed=failed, fatal=message if result.fatal else None):
            return True
        if failed and record.consecutive_failures >= self.spec.max_consecutive_failures:
            self._fail(result.outcome, message, retryable=True)
            return True
        return False

    def _finish_if_done(self, failed: bool = False, fatal: str | None = None) -> bool:
        """Complete or fail the run if its turn, a completion condition or a budget says so.

        The order matters: a binary that cannot run fails the run whatever else
        holds; the agent's own "done" (stop file, pattern) beats a failure count;
        reaching max_consecutive_failures beats reaching max_turns.
        """
        record = self.record
        if fatal is not None:
            self._fail("spawn_failed", fatal, retryable=False)
            return True
        reason: str | None = None
        if record.completion_detected:
            reason = record.completion_reason or "pattern"
        elif self._stop_file_present():
            reason = "stop_file"
        too_many_failures = record.consecutive_failures >= self.spec.max_consecutive_failures
        if reason is None and failed and too_many_failures:
            return False  # the caller fails the run with the turn's outcome
        counted = record.current_turn - record.uncounted_turns
        if reason is None and counted >= self.spec.max_turns:
            reason = "max_turns"
        if reason is not None:
            self._complete(reason)
            return True
        exceeded = self._budget_exceeded()
        if exceeded is not None:
            self._fail("budget_exceeded", exceeded, retryable=False)
            return True
        return False

    def _complete(self, reason: str) -> None:
        record = self.record
        line = record.completion_line if reason == "pattern" else None
        record.completion_detected = True
        record.completion_reason = reason
        self._emit("completion_detected", {"reason": reason, "line": line})
        self.store.compare_and_set(
            record,
            {State.RUNNING},
            State.COMPLETED,
            ("run_completed", {"reason": reason, "line": line}),
            phase=Phase.IDLE,
        )

    def _budget_exceeded(self) -> str | None:
        budget = self.spec.budget
        stats = self.record.stats
        if budget.max_cost_usd is not None and stats.cost_usd >= budget.max_cost_usd:
            return (
                f"cost {stats.cost_usd:.4f} USD reached budget.max_cost_usd={budget.max_cost_usd}"
            )
        if budget.max_tokens is not None and stats.tokens.total >= budget.max_tokens:
            return f"{stats.tokens.total} tokens reached budget.max_tokens={budget.max_tokens}"
        if budget.max_duration_s is not None and self._run_seconds() >= budget.max_duration_s:
            return f"run time reached budget.max_duration_s={budget.max_duration_s}"
        return None

    def _stop_file_present(self) -> bool:
        name = self.spec.completion.stop_file
        if name is None:
            return False
        try:
            mtime = self.spec.resolve(name).stat().st_mtime
        except OSError:
            return False
        return mtime >= self.record.created_at - 1.0

    def _fail(self, code: str, message: str, retryable: bool) -> None:
        error = {"code": code, "message": message, "retryable": retryable}
        self.store.compare_and_set(
            self.record,
            {State.RUNNING},
            State.FAILED,
            ("run_failed", {"error": error}),
            error=error,
            phase=Phase.IDLE,
        )


def workspace_relative(path: str, workspace: str) -> str:
    """Paths in events: relative to the workspace when inside it, absolute otherwise (SPEC 2.3)."""
    if not os.path.isabs(path):
        return os.path.normpath(path)
    normalized = os.path.normpath(path)
    if normalized == workspace or normalized.startswith(workspace.rstrip("/") + "/"):
        return os.path.relpath(normalized, workspace)
    return normalized


def _read_prompt(spec: RunSpec) -> BuiltPrompt | TurnResult:
    """The turn's prompt, or how the turn ends without one (blocking: in a worker thread).

    A workspace that is gone fails the run at once, like a missing binary: no
    later turn could run in it.
    """
    if not os.path.isdir(spec.workspace):
        message = workspace_gone(spec.workspace)
        return TurnResult("spawn_failed", None, 0, error_message=message, fatal=True)
    try:
        return build_prompt(spec)
    except PromptError as exc:
        return TurnResult("error", None, 0, error_message=str(exc))


def _turn_completed_data(outcome: str, error_message: str | None) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "exit_code": None,
        "duration_ms": 0,
        "tokens": Tokens().to_wire(),
        "cost_usd": 0.0,
        "stderr_tail": None,
        "error": None if error_message is None else {"code": outcome, "message": error_message},
    }


def _innermost(exc: BaseException) -> BaseException:
    """The exception a task group wrapped (trio groups a task's error with its siblings')."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _monotonic_to_trio(when: float) -> float:
    """Convert a time.monotonic() instant to trio's clock."""
    return trio.current_time() + (when - time.monotonic())
