"""One turn of a run as its driver runs it (docs/agents.md §1).

Its plan, output, watches, and the record of its end.

:class:`~codyd.runs.turn.Turn` runs an agent subprocess and knows nothing of
runs; this puts it in its run: the argv and environment from the spec, the
output pipeline fed with what the agent prints, the watched logs and
``budget.max_duration_s``, and the turn's rows and events in the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from codyd.agents import Adapter, adapter_for
from codyd.agents.usage import rules_for
from codyd.agents.version import PROBES, AgentProbe
from codyd.config import Config
from codyd.model.record import RunRecord
from codyd.model.state import FAILED_OUTCOMES, UNCOUNTED_OUTCOMES, Outcome, Phase
from codyd.runs.operator import prompt_section
from codyd.runs.pipeline import OutputSettings, Redactor, RunEvents, TurnOutput
from codyd.runs.turn import (
    Turn,
    TurnHooks,
    TurnPlan,
    TurnResult,
    agent_environment,
    read_prompt,
    turn_completed_data,
)
from codyd.runs.watch import LogWatcher, watched_files
from codyd.spec import RunSpec
from codyd.store import Store

log = structlog.get_logger("codyd.run")

ACTIVITY_SAVE_S = 2.0
LOG_CHECK_S = 1.0


def run_seconds(record: RunRecord) -> float:
    """How long the run has been running, pauses left out."""
    if record.started_at is None:
        return 0.0
    return time.time() - record.started_at - record.paused_total_s


class TurnRunner:
    """Runs a run's turns, one at a time; ``turn`` is the live one, for stop requests."""

    def __init__(
        self,
        record: RunRecord,
        store: Store,
        config: Config,
        turn_dir: Callable[[str, int], Path],
        emit: Redactor,
        events: RunEvents,
    ) -> None:
        self.record = record
        self.store, self.config, self._turn_dir = store, config, turn_dir
        self._emit, self._events = emit, events
        self.turn: Turn | None = None
        self.agent_version: str | None = None  # the CLI's --version, read before each turn
        self._budget_flag_missing = False  # said once per run: the CLI has no --max-budget-usd
        self._messages_in_prompt = 0  # operator messages in the live turn's prompt
        self.open = False  # a turn began and its turn_completed is not out yet
        self._activity_saved = 0.0
        spec = record.spec
        watched = watched_files(spec.workspace, spec.watch_logs) if spec.watch_logs else None
        self._watcher = LogWatcher(watched) if watched is not None else None
        self._agent_config = config.agents.get(spec.agent)
        # Set (and replaced) when run.update changes the spec during a turn.
        self._spec_changed = trio.Event()

    @property
    def spec(self) -> RunSpec:
        """The run's spec as it is now: run.update replaces it in the record."""
        return self.record.spec

    def spec_changed(self) -> None:
        """New limits apply to the live turn: its deadlines and the duration budget's stop."""
        changed, self._spec_changed = self._spec_changed, trio.Event()
        changed.set()
        spec = self.record.spec
        if self.turn is not None:
            self.turn.change_limits(spec.turn_timeout_s, spec.stall_timeout_s, spec.sigkill_delay_s)

    async def run(self) -> TurnResult:
        """The next turn, from its prompt to its outcome (its end not yet recorded)."""
        record, spec = self.record, self.spec
        n = record.current_turn + 1
        adapter = adapter_for(spec.agent)
        session = record.session_id if spec.resume_session and adapter.resumes_sessions else None
        output = TurnOutput(
            adapter,
            # From the spec as it is now: run.update may have replaced it since the last turn.
            OutputSettings.of(spec, self._agent_config, self.config.max_line_bytes),
            record,
            self._emit,
            lambda data: self.store.append(record, "subprocess_output", data, turn=n),
            lambda: self.store.save(record),
            requested_session=session,
        )
        argv = adapter.argv(spec, self._agent_config, session)
        plan = TurnPlan(
            run_id=record.run_id,
            n=n,
            argv=argv,
            cwd=spec.workspace,
            env=agent_environment(os.environ, spec.env, record.run_id, n, spec.workspace),
            prompt=b"",  # built below, once a stop can find the turn
            turn_dir=self._turn_dir(record.run_id, n),
            max_log_bytes=self.config.max_turn_log_bytes,
            max_line_bytes=self.config.max_line_bytes,
            turn_timeout_s=spec.turn_timeout_s,
            stall_timeout_s=spec.stall_timeout_s,
            sigkill_delay_s=spec.sigkill_delay_s,
        )
        turn = Turn(
            plan,
            TurnHooks(
                on_started=lambda pid, ticks: self._started(n, pid, ticks, plan.argv, session),
                on_output=output.feed,
                on_activity=self._on_activity,
                on_event=self._emit,
                backpressure=self.store.backpressure,
            ),
        )
        # Synchronously, with no checkpoint since the driver's state check: a pause or
        # cancel arriving from now on finds the turn and stops it.
        self.turn = turn
        self.open = True
        record.current_turn = n
        record.phase = Phase.IN_TURN
        self._events.new_turn()
        self.store.save(record)
        probe = await self._probe()
        if probe is not None:
            output.use_usage_rules(rules_for(spec.agent, self._agent_config, probe))
            plan.argv = self._argv_with_budget(adapter, session, probe) or plan.argv
        # Off the event loop: the prompt and context files are the workspace's, on any disk.
        messages = list(record.operator_messages)
        prompt = await trio.to_thread.run_sync(read_prompt, spec)
        if isinstance(prompt, TurnResult):
            if prompt.error_message is not None and not prompt.fatal:
                self._warn(prompt.error_message)
            result = prompt
        else:
            plan.prompt = prompt.text + prompt_section(messages)
            self._messages_in_prompt = len(messages)
            for warning in prompt.warnings:
                self._warn(warning)
            result = await self._run_with_output(turn, output)
        self.turn = None
        return result

    async def _probe(self) -> AgentProbe | None:
        """The agent binary's release and flags, asked once per binary (off the event loop)."""
        if self.spec.agent == "command" or self._agent_config is None:
            return None
        probe = await PROBES.probe(self._agent_config.bin)
        self.agent_version = probe.version
        return probe

    def _argv_with_budget(
        self, adapter: Adapter, session: str | None, probe: AgentProbe
    ) -> list[str] | None:
        """Claude with a cost budget: an argv that tells the CLI what is left of it."""
        limit, agent = self.spec.budget.max_cost_usd, self._agent_config
        if self.spec.agent != "claude" or limit is None or agent is None or not agent.budget_flag:
            return None
        if not probe.found:
            return None  # the turn cannot start: spawn_failed says why
        if not probe.supports("--max-budget-usd"):
            if self._budget_flag_missing:
                return None
            self._budget_flag_missing = True
            self._warn(
                f"{agent.bin} has no --max-budget-usd (version {probe.version or 'unknown'}): "
                "the cost budget is checked between turns only"
            )
            return None
        remaining = max(0.0, limit - self.record.stats.cost_usd)
        return adapter.argv(self.spec, agent, session, max_budget_usd=remaining)

    async def _run_with_output(self, turn: Turn, output: TurnOutput) -> TurnResult:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.pump.run)
            if self._watcher is not None:
                nursery.start_soon(self._watch_logs)
            nursery.start_soon(self._stop_at_duration_budget, turn)
            result = await turn.run()
            nursery.cancel_scope.cancel()
        await output.flush()
        self._check_logs()
        output.conclude(result)
        return result

    async def _watch_logs(self) -> None:
        while True:
            await trio.sleep(LOG_CHECK_S)
            self._check_logs()

    def _check_logs(self) -> None:
        if self._watcher is not None:
            for update in self._watcher.check():
                self._emit("log_updated", update)

    async def _stop_at_duration_budget(self, turn: Turn) -> None:
        """Stop the turn once budget.max_duration_s is reached, as the spec says now."""
        while True:
            changed = self._spec_changed
            limit = self.spec.budget.max_duration_s
            if limit is None:
                await changed.wait()
                continue
            with trio.move_on_after(max(0.0, limit - run_seconds(self.record))):
                await changed.wait()
            if not changed.is_set():
                turn.request_stop(Outcome.ABORTED)
                return

    def _started(
        self, n: int, pid: int, ticks: int | None, argv: list[str], session: str | None
    ) -> None:
        record = self.record
        record.pid = pid
        # The agent has the operator's messages on its stdin: they were said, once.
        self.store.drop_messages(record, self._messages_in_prompt)
        self._messages_in_prompt = 0
        self.store.save_turn(
            record.run_id, n, started_at=time.time(), pid=pid, pid_start_ticks=ticks
        )
        shown = [self._emit.text(arg) for arg in argv]
        self._emit(
            "turn_started",
            {"pid": pid, "argv": shown, "session_id": session, "agent_version": self.agent_version},
        )
        log.info("turn started", run_id=record.run_id, turn=n, pid=pid)

    def _warn(self, message: str) -> None:
        self._emit("warning", {"message": message})

    def _on_activity(self) -> None:
        now = time.time()
        if now - self._activity_saved >= ACTIVITY_SAVE_S:
            self._activity_saved = now
            self.record.last_activity = now
            self.store.save(self.record)

    def record_end(self, result: TurnResult) -> None:
        """The turn's row, counts and ``turn_completed``: the run is between turns."""
        record = self.record
        record.pid = None
        record.stats.turns += 1
        if result.outcome in FAILED_OUTCOMES:
            record.stats.failed_turns += 1
            record.consecutive_failures += 1
        elif result.outcome == Outcome.OK:
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
        reason = result.error_message or _plain_failure(result)
        message = None if reason is None else self._emit.text(reason)
        data = turn_completed_data(result.outcome, message, result.error_code)
        tail = result.stderr_tail
        data.update(
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            tokens=self._events.turn_tokens.to_wire(),
            cost_usd=self._events.turn_cost,
            stderr_tail=None if tail is None else self._emit.text(tail),
        )
        self._emit("turn_completed", data)
        self.open = False
        log.info(
            "turn completed",
            run_id=record.run_id,
            turn=record.current_turn,
            outcome=result.outcome,
            exit_code=result.exit_code,
            error=result.error_message,
        )
        record.phase = Phase.BETWEEN_TURNS

    def record_broken(self, message: str) -> None:
        """A bug ended the turn in progress: close it with outcome ``error``, never ``lost``."""
        self.turn = None
        if self.open:
            self.open = False
            record = self.record
            record.pid = None
            self.store.save_turn(
                record.run_id, record.current_turn, ended_at=time.time(), outcome=Outcome.ERROR
            )
            self._emit("turn_completed", turn_completed_data(Outcome.ERROR, message))


def _plain_failure(result: TurnResult) -> str | None:
    """Why a turn that did not end ``ok`` ended, when the agent said nothing of it itself:
    its exit status and the last line it wrote on stderr."""
    if result.outcome in (Outcome.OK, Outcome.INTERRUPTED):
        return None
    reason = f"the turn ended {result.outcome}"
    if result.exit_code is not None:
        reason += f" with exit code {result.exit_code}"
    lines = (result.stderr_tail or "").strip().splitlines()
    if lines:
        reason += f"; stderr: {lines[-1][:500]}"
    return reason
