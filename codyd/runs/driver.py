"""The run driver: one task that drives a running run turn after turn (docs/events.md §4).

What a turn's output means is :mod:`codyd.runs.pipeline`'s; how the run goes
on after a turn is :mod:`codyd.runs.verdict`'s. The driver runs the turns,
reads the facts for the verdict and applies it through the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import structlog
import trio

from codyd.config import Config
from codyd.leases import Leases
from codyd.model.record import RunRecord
from codyd.model.state import UNCOUNTED_OUTCOMES, Outcome, Phase, State
from codyd.redact import secret_values
from codyd.runs import verdict
from codyd.runs.disk import DiskMonitor
from codyd.runs.gates import (
    ATTENTION_AFTER_S,
    AccountGates,
    Limit,
    limit_at,
    rate_limit_until,
    unavailable_until,
)
from codyd.runs.pipeline import Redactor, RunEvents
from codyd.runs.progress import ProgressGuard
from codyd.runs.turn import Turn, TurnResult
from codyd.runs.turn_runner import TurnRunner, run_seconds
from codyd.runs.verdict import Action, RunView, Verdict
from codyd.runs.watch import stop_file_present
from codyd.spec import RunSpec
from codyd.store import Store

log = structlog.get_logger("codyd.run")

# The waits this driver's limits make (other guards may hold a turn back for their reasons).
LIMIT_WAITS = frozenset({"rate_limited", "account_limited", "unavailable"})


class RunDriver:
    def __init__(
        self,
        record: RunRecord,
        store: Store,
        leases: Leases,
        config: Config,
        turn_dir: Callable[[str, int], Path],
        gates: AccountGates | None = None,
        *,
        disk: DiskMonitor | None = None,
    ) -> None:
        self.record = record
        self.disk = disk
        self.store, self.leases, self.config = store, leases, config
        self.gates = gates if gates is not None else AccountGates()
        self._own_limit: Limit | None = None  # the run's own wait (rate_limited, unavailable)
        self.interrupted = False
        self.lease_holder: str | None = None  # set when another daemon took the lease
        self.pause_reason: str | None = None
        self.cancel_reason: str | None = None
        self._wake = trio.Event()
        self.progress = ProgressGuard(record)
        events = RunEvents(record, self._append)
        # Values of the run's env: agent output echoing them never reaches an event.
        self._emit = Redactor(secret_values(self.spec.env.values()), events)
        self.turns = TurnRunner(record, store, config, turn_dir, self._emit, events)

    @property
    def spec(self) -> RunSpec:
        """The run's spec as it is now: run.update replaces it in the record."""
        return self.record.spec

    @property
    def turn(self) -> Turn | None:
        """The live turn, if any."""
        return self.turns.turn

    # -- control from outside ----------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def spec_changed(self) -> None:
        """run.update gave the run a new spec: the live turn takes its new limits now."""
        self.turns.spec_changed()

    def stop_turn(self, outcome: Outcome) -> None:
        if self.turn is not None:
            self.turn.request_stop(outcome)
        self.wake()

    def pausing(self, reason: str | None) -> None:
        """The run is pausing: the reason goes with run_paused once its turn has ended."""
        self.pause_reason = reason

    def cancel(self, reason: str | None) -> None:
        """The run is cancelling: stop its turn; the reason goes with run_cancelled."""
        self.cancel_reason = reason
        self.stop_turn(Outcome.ABORTED)

    def lose_lease(self, holder: str) -> None:
        """Another daemon took the run's lease: stop the turn, record it, drive no more."""
        if self.lease_holder is None:
            self.lease_holder = holder
            turn = self.record.current_turn or None
            self.store.append(self.record, "lease_lost", {"holder": holder}, turn=turn)
            self.stop_turn(Outcome.ABORTED)

    def interrupt(self) -> None:
        """Daemon shutdown: stop the live turn, leave the run non-terminal."""
        self.interrupted = True
        self.stop_turn(Outcome.INTERRUPTED)

    # -- the loop ---------------------------------------------------------------------------

    async def drive(self) -> None:
        """Turn after turn until the run leaves ``running``; errors go to the caller."""
        record = self.record
        await self._start_progress_guard()
        while record.state is State.RUNNING and not self._stopped():
            if not await self._hold_lease() or self._stopped():
                break
            self._warn_budget()
            if self._apply(verdict.before_turn(self._view(), self.spec)):
                break
            waited = await self._wait_out()
            if waited is None:
                break
            if waited:
                continue  # the lease and the budget again, after a wait
            await self._wait_for_disk()  # after a limit's wait, which it would overwrite
            # No new turn while the store cannot record it.
            await self.store.wait_writable(
                record.run_id, lambda: self._stopped() or record.state is not State.RUNNING
            )
            if self._stopped() or record.state is not State.RUNNING:
                break
            session = record.session_id
            result = await self.turns.run()
            self.turns.record_end(result)
            self._note_turn(result, session)
            self._warn_budget()
            decision = verdict.after_turn(
                self._view(),
                self.spec,
                result,
                interrupted=self.interrupted,
                lease_lost=self.lease_holder is not None,
            )
            if await self._pause_without_progress(result, decision):
                break
            if decision.action is Action.BACK_OFF:
                await self._backoff(decision.delay_s)
            elif decision.action is Action.WAIT:
                self._start_wait(decision.reason, result)
            elif self._apply(decision):
                break
        self._settle()

    def park(self) -> None:
        """The driver ends: a run it leaves non-running is idle."""
        record = self.record
        record.phase = Phase.IDLE if record.state is not State.RUNNING else record.phase
        if record.state is not State.RUNNING and (record.wait or {}).get("reason") in LIMIT_WAITS:
            record.wait = None  # ended or paused: nothing holds it back any more
        self.store.save(record)

    def fail_internal(self, exc: BaseException) -> None:
        """A bug of codyd's met while driving this run: the run fails, nothing else does.

        The turn in progress (its agent already stopped by the turn) is closed with
        outcome ``error``, so that recovery never takes it for a lost one.
        """
        record = self.record
        cause = _innermost(exc)
        message = f"internal error in codyd: {type(cause).__name__}: {cause}"
        self.turns.record_broken(message)
        if record.state is State.CANCELLING:
            self._settle()  # it was to end anyway: cancelled, as asked
            return
        self._fail({"code": "internal", "message": message, "retryable": True}, State.PAUSING)

    def _stopped(self) -> bool:
        return self.interrupted or self.lease_holder is not None

    async def _hold_lease(self) -> bool:
        """Wait until this daemon holds the run's lease; False if it should stop driving."""
        waited = False
        while True:
            holder = await self.leases.acquire(self.record.run_id)
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
            self.store.compare_and_set(
                record,
                {State.PAUSING, State.RUNNING},
                State.PAUSED,
                ("run_paused", {"reason": self.pause_reason}),
                phase=Phase.IDLE,
                paused_since=time.time(),
            )
        elif record.state is State.CANCELLING:
            self.store.compare_and_set(
                record,
                {State.CANCELLING},
                State.CANCELLED,
                ("run_cancelled", {"reason": self.cancel_reason}),
                phase=Phase.IDLE,
            )

    async def _backoff(self, delay: float) -> None:
        record = self.record
        record.phase = Phase.BACKOFF
        self.store.save(record)
        self._wake = trio.Event()
        with trio.move_on_after(delay):
            await self._wake.wait()
        if record.phase is Phase.BACKOFF:
            record.phase = Phase.BETWEEN_TURNS

    # -- the disk guard (docs/operations.md, Disk) ---------------------------------------------

    async def _wait_for_disk(self) -> None:
        """While the state directory's disk is low, the next turn waits (phase ``waiting``)."""
        disk, record = self.disk, self.record
        if disk is None:
            return
        if disk.low:
            record.phase = Phase.WAITING
            record.wait = {"reason": "disk_full", "until": None, "account": None}
            if record.run_id in disk.alerted:
                self.store.save(record)
            else:
                disk.alerted.add(record.run_id)
                message = disk.message()
                record.attention = {"reason": "disk_full", "message": message, "at": time.time()}
                self._append("attention", {"reason": "disk_full", "message": message})
            log.warning("run waits for disk space", run_id=record.run_id, free=disk.free_bytes)
            await disk.wait_for_space(lambda: self._stopped() or record.state is not State.RUNNING)
        self._end_disk_wait(space_back=not disk.low)

    def _end_disk_wait(self, *, space_back: bool) -> None:
        """Clear what a disk wait left, this driver's or a stored one (a restart during it)."""
        record = self.record
        changed = False
        if record.wait is not None and record.wait.get("reason") == "disk_full":
            record.wait = None
            changed = True
        if record.phase is Phase.WAITING and record.wait is None:
            record.phase = Phase.BETWEEN_TURNS if record.state is State.RUNNING else Phase.IDLE
            changed = True
        attention = record.attention
        if space_back and attention is not None and attention.get("reason") == "disk_full":
            record.attention = None
            changed = True
        if changed:
            self.store.save(record)

    # -- the progress guard (docs/operations.md, Progress guard) -----------------------------

    async def _start_progress_guard(self) -> None:
        warning = await self.progress.start()
        if warning is not None:
            self._emit("warning", {"message": warning})

    async def _pause_without_progress(self, result: TurnResult, decision: Verdict) -> bool:
        """Count the turn toward ``stagnation_turns``; True once the run paused for it."""
        if not self.progress.on or decision.stops:
            return False
        judged = await self.progress.judge(result.outcome)
        if judged.warning is not None:
            self._emit("warning", {"message": judged.warning})
        self.store.save(self.record)
        if not judged.stalled or decision.action is not Action.GO_ON or self._stopped():
            return False
        record, turns = self.record, judged.stagnant_turns
        paused = self.store.compare_and_set(
            record,
            {State.RUNNING},
            State.PAUSED,
            ("run_paused", {"reason": "no_progress"}),
            phase=Phase.IDLE,
            paused_since=time.time(),
            stagnant_turns=0,
        )
        if paused:
            message = (
                f"{turns} turns in a row ended ok without changing the workspace, "
                "the test results or the agent's last message; resume the run to go on"
            )
            record.attention = {"reason": "no_progress", "message": message, "at": time.time()}
            self._append("attention", {"reason": "no_progress", "message": message, "turns": turns})
            log.warning("run paused: no progress", run_id=record.run_id, turns=turns)
        return paused

    # -- verdicts ---------------------------------------------------------------------------

    def _view(self) -> RunView:
        stop_file = stop_file_present(self.spec, self.record.created_at)
        return RunView.of(self.record, run_seconds=run_seconds(self.record), stop_file=stop_file)

    def _apply(self, decision: Verdict) -> bool:
        """Carry out what the verdict says; True when the driver stops driving."""
        record = self.record
        if decision.action is Action.INTERRUPTED:
            self.store.append(
                record, "run_interrupted", {"reason": "shutdown"}, turn=record.current_turn
            )
        elif decision.action is Action.COMPLETE:
            reason = decision.reason
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
        elif decision.action is Action.FAIL:
            assert decision.error is not None
            self._fail(decision.error.to_wire())
        elif decision.action is Action.PAUSE:
            assert decision.error is not None
            self._pause_for_auth(decision.error.message)
        return decision.stops

    def _append(self, type_: str, data: dict[str, Any]) -> None:
        self.progress.observe(type_, data)
        self.store.append(self.record, type_, data, turn=self.record.current_turn or None)

    def _fail(self, error: dict[str, Any], *also: State) -> None:
        if self.store.compare_and_set(
            self.record,
            {State.RUNNING, *also},
            State.FAILED,
            ("run_failed", {"error": error}),
            error=error,
            phase=Phase.IDLE,
        ):
            over_budget = error["code"] == "budget_exceeded"
            self._attention("budget_exceeded" if over_budget else "failed", error["message"])

    # -- waiting out limits (docs/protocol.md §5.10) ---------------------------------------

    def _start_wait(self, reason: str | None, result: TurnResult) -> None:
        """A rate_limited or unavailable turn: the run waits before its next turn."""
        record, account = self.record, self.spec.account_name
        now = time.time()
        if reason == Outcome.RATE_LIMITED:
            backoff = self.config.rate_limit_backoff_s
            until = rate_limit_until(result.resets_at, record.limit_streak, backoff, now)
            # The whole account waits; a later limit another run found holds this one too.
            self._own_limit = self.gates.limit(account, until)
            until = self._own_limit.until
            message = result.error_message or "the agent reported a usage limit"
            self._emit("rate_limited", {"until": until, "account": account, "message": message})
        else:
            until = unavailable_until(record.limit_streak, now)
            self._own_limit = limit_at(until)
        record.wait = {"reason": str(reason), "until": until, "account": account}
        record.phase = Phase.WAITING
        self.store.save(record)

    async def _wait_out(self) -> bool | None:
        """Wait while a limit holds the run's next turn back.

        True after a wait, False when there was none, None when the run is to be
        driven no more (paused, cancelled, or the daemon stopping: then the wait
        stays stored, and the next daemon waits out the rest of it).
        """
        record = self.record
        waited = False
        while (hold := self._holding()) is not None:
            limit, wait = hold
            waited = True
            if record.wait != wait or record.phase is not Phase.WAITING:
                record.wait, record.phase = wait, Phase.WAITING
                self.store.save(record)
            self._attend_long_wait(limit)
            self._wake = trio.Event()
            started = trio.current_time()
            with trio.move_on_at(limit.deadline):
                await self._wake.wait()
            record.waited_s += trio.current_time() - started
            if self._stopped():
                return None
            if record.state is not State.RUNNING:
                record.wait = None  # paused or cancelled: a resumed run looks again
                self.store.save(record)
                return None
        if record.wait is not None and record.wait.get("reason") in LIMIT_WAITS:
            record.wait, record.phase = None, Phase.BETWEEN_TURNS
            self._own_limit = None
            self.store.save(record)
        return waited

    def _holding(self) -> tuple[Limit, dict[str, Any]] | None:
        """The limit holding the next turn back now, with the run's ``wait`` for it."""
        record, account = self.record, self.spec.account_name
        wait = record.wait
        if wait is not None and wait["reason"] in (Outcome.RATE_LIMITED, Outcome.UNAVAILABLE):
            own = self._own_limit
            if own is None or own.until != wait["until"]:
                # Stored by an earlier driver (a pause, a restart): on this driver's clock now.
                own = self._own_limit = (
                    self.gates.limit(account, wait["until"])
                    if wait["reason"] == Outcome.RATE_LIMITED
                    else limit_at(wait["until"])
                )
            if own.deadline > trio.current_time():
                return own, {**wait, "until": own.until}
        limit = self.gates.limited(account)
        if limit is None:
            return None
        return limit, {"reason": "account_limited", "until": limit.until, "account": account}

    def _attend_long_wait(self, limit: Limit) -> None:
        """A run held back for more than a day asks a person to look, once per spell."""
        record = self.record
        ahead = max(0.0, limit.deadline - trio.current_time())
        if record.wait_attention or record.waited_s + ahead <= ATTENTION_AFTER_S:
            return
        record.wait_attention = True
        wait = record.wait or {}
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(limit.until))
        self._attention(
            "waiting",
            f"the run waits ({wait.get('reason')}, account {wait.get('account')}) until {until}: "
            "more than 24 h without a turn; check the account's limits, or pause or cancel "
            "the run",
        )

    # -- after a turn: sessions, streaks, budget warnings (docs/events.md §9) ----------------

    def _note_turn(self, result: TurnResult, session: str | None) -> None:
        """Streaks and sessions after a turn; ``session`` is the one it began with."""
        record, outcome = self.record, result.outcome
        if outcome in (Outcome.RATE_LIMITED, Outcome.UNAVAILABLE):
            record.limit_streak += 1
        else:
            record.limit_streak = 0
            if outcome not in (Outcome.INTERRUPTED, Outcome.ABORTED):
                record.waited_s, record.wait_attention = 0.0, False
        if outcome in UNCOUNTED_OUTCOMES:
            return  # no work done: the session goes on as it was
        record.session_turns += 1
        if session is not None and record.session_id is None:
            record.session_turns = 0  # the agent lost its session: the next one is new
        if outcome == Outcome.CONTEXT_EXHAUSTED:
            self._rotate_session("context_exhausted")
        elif (limit := self.spec.session_max_turns) is not None and record.session_turns >= limit:
            self._rotate_session("max_turns")

    def _rotate_session(self, reason: str) -> None:
        """The next turn starts a new agent session instead of resuming this one."""
        record = self.record
        self._emit("session_rotated", {"from": record.session_id, "reason": reason})
        record.session_id, record.session_turns = None, 0

    def _warn_budget(self) -> None:
        record = self.record
        view = RunView.of(record, run_seconds=run_seconds(record), stop_file=False)
        for data in verdict.budget_warnings(view, self.spec, record.budget_warned):
            record.budget_warned = [*record.budget_warned, data["kind"]]
            self._emit("budget_warning", data)

    # -- a person is needed (docs/events.md §9) --------------------------------------------

    def _pause_for_auth(self, message: str) -> None:
        """The agent's login was refused: paused until someone logs it in and resumes."""
        record = self.record
        if self.store.compare_and_set(
            record,
            {State.RUNNING},
            State.PAUSED,
            ("run_paused", {"reason": "needs_auth"}),
            phase=Phase.IDLE,
            paused_since=time.time(),
        ):
            self._attention("needs_auth", needs_auth_message(self.spec.agent, message, record))

    def _attention(self, reason: str, message: str) -> None:
        record = self.record
        record.attention = {"reason": reason, "message": message, "at": time.time()}
        self._emit("attention", {"reason": reason, "message": message})


LOGIN_ADVICE = {
    "claude": "log the claude CLI in again (`claude /login`, or give the run an ANTHROPIC_API_KEY)",
    "codex": "log the codex CLI in again (`codex login`, or give the run an OPENAI_API_KEY)",
    "command": "fix the agent's credentials",
}


def needs_auth_message(agent: str, reported: str, record: RunRecord) -> str:
    """What to do about a refused login: the agent's words, the fix, and the resume."""
    advice = LOGIN_ADVICE.get(agent, LOGIN_ADVICE["command"])
    return f"{reported.rstrip('. ')}. To go on: {advice}, then `codyctl resume {record.run_id}`"


def clear_budget_warnings(record: RunRecord, kinds: Collection[str]) -> None:
    """Let ``budget_warning`` of these kinds come again (after their limit was raised)."""
    record.budget_warned = [kind for kind in record.budget_warned if kind not in kinds]


def _innermost(exc: BaseException) -> BaseException:
    """The exception a task group wrapped (trio groups a task's error with its siblings')."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
