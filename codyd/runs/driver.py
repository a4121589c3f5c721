"""The run driver: one task that drives a running run turn after turn (docs/events.md §4).

What a turn's output means is :mod:`codyd.runs.pipeline`'s; how the run goes
on after a turn is :mod:`codyd.runs.verdict`'s. The driver runs the turns,
reads the facts for the verdict and applies it through the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from codyd.config import Config
from codyd.leases import Leases
from codyd.model.record import RunRecord
from codyd.model.state import Outcome, Phase, State
from codyd.redact import secret_values
from codyd.runs import verdict
from codyd.runs.pipeline import Redactor, RunEvents
from codyd.runs.turn import Turn
from codyd.runs.turn_runner import TurnRunner, run_seconds
from codyd.runs.verdict import Action, RunView, Verdict
from codyd.runs.watch import stop_file_present
from codyd.spec import RunSpec
from codyd.store import Store

log = structlog.get_logger("codyd.run")


class RunDriver:
    def __init__(
        self,
        record: RunRecord,
        store: Store,
        leases: Leases,
        config: Config,
        turn_dir: Callable[[str, int], Path],
    ) -> None:
        self.record = record
        self.store, self.leases, self.config = store, leases, config
        self.interrupted = False
        self.lease_holder: str | None = None  # set when another daemon took the lease
        self.pause_reason: str | None = None
        self.cancel_reason: str | None = None
        self._wake = trio.Event()
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
        while record.state is State.RUNNING and not self._stopped():
            if not await self._hold_lease() or self._stopped():
                break
            if self._apply(verdict.before_turn(self._view(), self.spec)):
                break
            # No new turn while the store cannot record it.
            await self.store.wait_writable(
                record.run_id, lambda: self._stopped() or record.state is not State.RUNNING
            )
            if self._stopped() or record.state is not State.RUNNING:
                break
            result = await self.turns.run()
            self.turns.record_end(result)
            decision = verdict.after_turn(
                self._view(),
                self.spec,
                result,
                interrupted=self.interrupted,
                lease_lost=self.lease_holder is not None,
            )
            if decision.action is Action.BACK_OFF:
                await self._backoff(decision.delay_s)
            elif self._apply(decision):
                break
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
        return decision.stops

    def _append(self, type_: str, data: dict[str, Any]) -> None:
        self.store.append(self.record, type_, data, turn=self.record.current_turn or None)

    def _fail(self, error: dict[str, Any], *also: State) -> None:
        self.store.compare_and_set(
            self.record,
            {State.RUNNING, *also},
            State.FAILED,
            ("run_failed", {"error": error}),
            error=error,
            phase=Phase.IDLE,
        )


def _innermost(exc: BaseException) -> BaseException:
    """The exception a task group wrapped (trio groups a task's error with its siblings')."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
