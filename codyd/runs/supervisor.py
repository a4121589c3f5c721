"""The supervisor: every run's life, from start to its terminal state.

It owns the run drivers (one task per running run, in one nursery), the queue
of runs waiting for a slot of ``max_active_runs``, the control calls (pause,
resume, cancel), start-up recovery and the stop of every turn at shutdown.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from functools import partial
from typing import Any

import structlog
import trio

from codyd.agents.usage import check_budget_enforceable
from codyd.config import Config
from codyd.errors import Conflict, InvalidState, NotFound, ShuttingDown
from codyd.leases import Leases, LocalLeases, RedisLeases
from codyd.model.layout import PID_FILE, StateLayout
from codyd.model.record import RunRecord
from codyd.model.state import TERMINAL, Outcome, Phase, State
from codyd.runs import procs
from codyd.runs.disk import DiskMonitor
from codyd.runs.driver import RunDriver, clear_budget_warnings
from codyd.runs.gates import AccountGates
from codyd.runs.operator import check_text
from codyd.runs.spawn import CHILDREN
from codyd.runs.turn import read_pid_file
from codyd.spec import parse_run_spec, parse_update, validate_run_id
from codyd.store import Store

log = structlog.get_logger("codyd.supervisor")

ACTIVE = frozenset({State.RUNNING, State.PAUSING, State.CANCELLING})
# Shutdown waits this long for the store's last commit (a full disk must not hold it).
SHUTDOWN_FLUSH_S = 2.0
# Processes re-parented to codyd that no live turn claims are looked for once a child
# of codyd has exited (an agent's exit is when its escapees come to codyd) and at least
# every STRAY_SWEEP_S; each look walks /proc (about 11 ms with 700 processes), so it is
# never a fast timer. STRAY_SETTLE_S gathers a burst of exits into one look.
STRAY_SWEEP_S = 30.0
STRAY_SETTLE_S = 1.0
STRAY_SIGKILL_DELAY_S = 2.0
STRAY_SHUTDOWN_DELAY_S = 0.5


class Supervisor:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.drivers: dict[str, RunDriver] = {}
        self.leases: Leases = (
            RedisLeases(config.redis_url, config.key_prefix, config.node, config.lease_ttl_s)
            if config.redis_url
            else LocalLeases(store, config.node, config.lease_ttl_s)
        )
        self.layout = StateLayout(config.state_dir)
        self.queue: deque[str] = deque()
        self.gates = AccountGates()  # one per account: the limits its runs wait out
        self.shutting_down = False
        self._nursery: trio.Nursery | None = None
        self._all_done = trio.Event()
        self._all_done.set()
        self.disk = DiskMonitor(
            config.state_dir, config.min_free_bytes, check_s=config.disk_check_s
        )

    # -- the task ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.disk.run)  # its first check before any turn
            await self._recover()
            self._fill_slots()
            nursery.start_soon(self._sweep_strays)
            task_status.started()
            await trio.sleep_forever()

    async def shutdown(self, grace_s: float) -> None:
        """Stop every live turn (outcome interrupted) and wait for the drivers to end."""
        self.shutting_down = True
        self.queue.clear()
        for driver in list(self.drivers.values()):
            driver.interrupt()
        with trio.move_on_after(grace_s):
            await self._all_done.wait()
        # Whatever escaped the turns goes with the daemon.
        with trio.move_on_after(STRAY_SHUTDOWN_DELAY_S * 2 + 0.2):
            async with trio.open_nursery() as nursery:
                self._stop_strays(nursery, set(), STRAY_SHUTDOWN_DELAY_S)
        with trio.move_on_after(2.0):
            for run_id in list(self.leases.held):
                await self.leases.release(run_id)
        await self.store.flush_within(SHUTDOWN_FLUSH_S)

    async def _sweep_strays(self) -> None:
        """Stop every process re-parented to codyd that is no live turn's (escapee policy).

        codyd is a subreaper, so a descendant whose parent exits comes to it. One
        that left its turn's process group and wiped its environment
        (``setsid env -i ...``) cannot be found by its turn's stop; here it is
        found by its parent instead, a moment after a child of codyd exited and at
        least every ``STRAY_SWEEP_S``: every child of codyd that is not an agent
        codyd started (``spawn.CHILDREN``) and not in a live turn's group or
        marked with a live turn's CODYD_RUN_ID/CODYD_TURN gets SIGTERM, then
        SIGKILL after ``STRAY_SIGKILL_DELAY_S``.
        """
        stopping: set[int] = set()
        async with trio.open_nursery() as nursery:
            while True:
                with trio.move_on_after(STRAY_SWEEP_S):
                    await procs.CHILD_EXITS.wait()
                await trio.sleep(STRAY_SETTLE_S)
                self._stop_strays(nursery, stopping, STRAY_SIGKILL_DELAY_S)

    def _stop_strays(self, nursery: trio.Nursery, stopping: set[int], delay: float) -> None:
        groups: set[int] = set()
        marks: set[procs.MarkKey] = set()
        for driver in self.drivers.values():
            turn = driver.turn
            if turn is not None:
                marks.add(procs.TurnMark(turn.plan.run_id, turn.plan.n, turn.plan.cwd).key)
                if turn.pid is not None:
                    groups.add(turn.pid)
        try:
            found = procs.strays(os.getpid(), CHILDREN.owns, groups, marks)
        except OSError as exc:
            log.warning("cannot look for stray processes now", error=str(exc))
            return
        for pid, ticks in found:
            if pid not in stopping:
                stopping.add(pid)
                log.warning("stopping a stray process re-parented to codyd", pid=pid)
                nursery.start_soon(self._stop_stray, pid, ticks, delay, stopping)

    async def _stop_stray(self, pid: int, ticks: int, delay: float, stopping: set[int]) -> None:
        try:
            await procs.stop_stray(pid, ticks, delay)
        finally:
            stopping.discard(pid)

    def max_sigkill_delay(self) -> float:
        return max((d.spec.sigkill_delay_s for d in self.drivers.values()), default=0.0)

    # -- lookups ----------------------------------------------------------------------------------

    def get(self, run_id: Any) -> RunRecord:
        run_id = validate_run_id(run_id)
        record = self.store.runs.get(run_id)
        if record is None:
            raise NotFound(f"no run {run_id!r}", run_id=run_id)
        return record

    def _refuse_if_shutting_down(self) -> None:
        if self.shutting_down:
            raise ShuttingDown("codyd is shutting down; retry against the restarted daemon")

    # -- start -------------------------------------------------------------------------------------

    async def start(self, params: dict[str, Any]) -> dict[str, Any]:
        self._refuse_if_shutting_down()
        spec = parse_run_spec(
            params,
            defaults=self.config.defaults,
            workspace_roots=self.config.workspace_roots,
        )
        check_budget_enforceable(spec, self.config.agents.get(spec.agent))
        existing = self.store.runs.get(spec.run_id)
        if existing is not None:
            if existing.spec.identity() != spec.identity():
                raise Conflict(
                    f"run {spec.run_id!r} exists with a different spec", run_id=spec.run_id
                )
            await self.store.sync()
            return existing.snapshot()
        for other in self.store.live.values():
            if other.spec.workspace == spec.workspace:
                raise Conflict(
                    f"workspace {spec.workspace} is busy with run {other.run_id!r} "
                    f"({other.state.value})",
                    run_id=other.run_id,
                )
        record = RunRecord(spec=spec, node=self.config.node, created_at=time.time())
        self.store.add_run(record)
        self.store.append(record, "run_queued", {"spec": spec.to_wire(redact_env=True)})
        log.info("run queued", run_id=record.run_id, workspace=spec.workspace, agent=spec.agent)
        snapshot = record.snapshot()
        self.queue.append(record.run_id)
        try:
            await self.store.sync()
        finally:
            # Queued whatever the store answers: a run whose commit failed still starts
            # once the store writes again (its driver waits for that), not never.
            self._fill_slots()
        return snapshot

    def _fill_slots(self) -> None:
        while self.queue and len(self.drivers) < self.config.max_active_runs:
            if self.shutting_down or self._nursery is None:
                return
            record = self.store.runs[self.queue.popleft()]
            if record.state is not State.QUEUED:
                continue
            first = record.started_at is None
            changed = self.store.compare_and_set(
                record,
                {State.QUEUED},
                State.RUNNING,
                ("run_started" if first else "run_resumed", {}),
                started_at=record.started_at or time.time(),
                phase=Phase.BETWEEN_TURNS,
            )
            if changed:
                self._spawn_driver(record)

    def _spawn_driver(self, record: RunRecord) -> None:
        assert self._nursery is not None
        driver = RunDriver(
            record,
            self.store,
            self.leases,
            self.config,
            self.layout.turn_dir,
            self.gates,
            disk=self.disk,
        )
        self.drivers[record.run_id] = driver
        self._all_done = trio.Event()
        self._nursery.start_soon(self._drive, driver)

    async def _drive(self, driver: RunDriver) -> None:
        """Drive one run; a fault met on the way is that run's, never the daemon's.

        An unexpected exception from the run's driver, its turn or its agent's
        output parser (a bug of codyd's) fails that run alone: ``error = {code:
        "internal", message, retryable: true}`` (the run itself may well succeed
        when started again; the bug is ours), its traceback logged with the run
        id. The turn has stopped its agent's processes on the way out. Every other
        run, connection and task goes on. Cancellation (the daemon ending) is
        not a fault and passes through.
        """
        run_id = driver.record.run_id
        try:
            await driver.drive()
        except Exception as exc:
            log.error("run failed on an internal error", run_id=run_id, exc_info=exc)
            try:
                driver.fail_internal(exc)
            except Exception:
                log.exception("cannot record the run's internal error", run_id=run_id)
        finally:
            try:
                driver.park()
            except Exception:
                log.exception("cannot save the run as its driver ends", run_id=run_id)
            self._driver_done(driver)

    def _driver_done(self, driver: RunDriver) -> None:
        self.drivers.pop(driver.record.run_id, None)
        if self._nursery is not None and not self.shutting_down:
            self._nursery.start_soon(self.leases.release, driver.record.run_id)
        if not self.drivers:
            self._all_done.set()
        self._fill_slots()

    # -- control ----------------------------------------------------------------------------------

    def _control(self, record: RunRecord, action: str, reason: str | None, source: str) -> None:
        self.store.append(
            record,
            "control_received",
            {"action": action, "source": source, "reason": reason},
            turn=record.current_turn or None,
        )

    def _refuse_terminal(self, record: RunRecord, action: str) -> None:
        if record.terminal:
            raise InvalidState(
                f"cannot {action} run {record.run_id!r}: it is {record.state.value}",
                state=record.state.value,
            )

    async def pause(
        self, run_id: Any, reason: str | None, now: bool, source: str = "rpc"
    ) -> dict[str, Any]:
        self._refuse_if_shutting_down()
        record = self.get(run_id)
        self._refuse_terminal(record, "pause")
        if record.state in (State.PAUSING, State.PAUSED, State.CANCELLING):
            if record.state is State.CANCELLING:
                raise InvalidState(f"run {record.run_id!r} is being cancelled", state="cancelling")
            return record.snapshot()
        driver = self.drivers.get(record.run_id)
        self._control(record, "pause", reason, source)
        if record.state is State.QUEUED or driver is None:
            self._pause_now(record, reason)
        elif record.phase is Phase.IN_TURN:
            driver.pausing(reason)
            self.store.compare_and_set(
                record, {State.RUNNING}, State.PAUSING, ("run_pausing", {"reason": reason})
            )
            if now:
                driver.stop_turn(Outcome.ABORTED)
        else:
            self._pause_now(record, reason)
            driver.wake()
        return await self._answer(record)

    async def _answer(self, record: RunRecord) -> dict[str, Any]:
        """The snapshot as this call left the run, sent once its changes are durable."""
        snapshot = record.snapshot()
        await self.store.sync()
        return snapshot

    def _pause_now(self, record: RunRecord, reason: str | None) -> None:
        if record.run_id in self.queue:
            self.queue.remove(record.run_id)
        self.store.compare_and_set(
            record,
            {State.QUEUED, State.RUNNING},
            State.PAUSED,
            ("run_paused", {"reason": reason}),
            phase=Phase.IDLE,
            paused_since=time.time(),
        )

    async def resume(self, run_id: Any, source: str = "rpc") -> dict[str, Any]:
        self._refuse_if_shutting_down()
        record = self.get(run_id)
        self._refuse_terminal(record, "resume")
        if record.state in (State.RUNNING, State.QUEUED):
            return record.snapshot()
        if record.state is State.CANCELLING:
            raise InvalidState(f"run {record.run_id!r} is being cancelled", state="cancelling")
        self._control(record, "resume", None, source)
        if record.state is State.PAUSING:
            self.store.compare_and_set(record, {State.PAUSING}, State.RUNNING, ("run_resumed", {}))
        else:
            paused_for = time.time() - (record.paused_since or time.time())
            record.paused_total_s += paused_for if record.started_at is not None else 0.0
            record.paused_since = None
            record.attention = None  # whoever resumes it has seen to what it asked for
            if record.started_at is None or len(self.drivers) >= self.config.max_active_runs:
                self.store.compare_and_set(record, {State.PAUSED}, State.QUEUED)
                self.queue.append(record.run_id)
                self._fill_slots()
            elif self.store.compare_and_set(
                record,
                {State.PAUSED},
                State.RUNNING,
                ("run_resumed", {}),
                phase=Phase.BETWEEN_TURNS,
            ):
                self._spawn_driver(record)
        return await self._answer(record)

    async def retry(self, run_id: Any, reason: str | None) -> dict[str, Any]:
        """A failed run drives again: its failure count and error cleared, its session kept."""
        self._refuse_if_shutting_down()
        record = self.get(run_id)
        if record.state is not State.FAILED:
            raise InvalidState(
                f"cannot retry run {record.run_id!r}: it is {record.state.value}, not failed",
                state=record.state.value,
            )
        fresh = {"error": None, "consecutive_failures": 0, "finished_at": None, "attention": None}
        event = ("run_retried", {"reason": reason or "retried"})
        # A driver still winding down, or every slot taken: it waits like a new run.
        if record.run_id in self.drivers or len(self.drivers) >= self.config.max_active_runs:
            self.store.compare_and_set(record, {State.FAILED}, State.QUEUED, event, **fresh)
            self.queue.append(record.run_id)
            self._fill_slots()
        elif self.store.compare_and_set(
            record, {State.FAILED}, State.RUNNING, event, phase=Phase.BETWEEN_TURNS, **fresh
        ):
            self._spawn_driver(record)
        return await self._answer(record)

    # -- update and say -------------------------------------------------------------------------

    async def update(self, run_id: Any, params: dict[str, Any]) -> dict[str, Any]:
        """Change the run's limits, labels or name from its next check on (docs/protocol.md)."""
        self._refuse_if_shutting_down()
        record = self.get(run_id)
        if record.state in (State.COMPLETED, State.CANCELLED):
            raise InvalidState(
                f"cannot update run {record.run_id!r}: it is {record.state.value}",
                state=record.state.value,
            )
        spec, changes = parse_update(params, record.spec)
        check_budget_enforceable(spec, self.config.agents.get(spec.agent))
        allowed = {state for state in State if state not in TERMINAL} | {State.FAILED}
        if changes and self.store.update_spec(record, allowed, spec, changes):
            log.info("run updated", run_id=record.run_id, changes=sorted(changes))
            warned_again = _budget_kinds_changed(changes)
            if warned_again & set(record.budget_warned):
                clear_budget_warnings(record, warned_again)
                self.store.save(record)
            driver = self.drivers.get(record.run_id)
            if driver is not None:
                driver.spec_changed()
        return await self._answer(record)

    async def say(self, run_id: Any, text: Any) -> dict[str, Any]:
        """Queue an operator message for the run's next turn; answer how many wait."""
        self._refuse_if_shutting_down()
        record = self.get(run_id)
        self._refuse_terminal(record, "say anything to")
        text = check_text(text, len(record.operator_messages))
        live = {state for state in State if state not in TERMINAL}
        self.store.queue_message(record, live, text)
        queued = len(record.operator_messages)
        await self.store.sync()
        return {"queued": queued}

    async def cancel(self, run_id: Any, reason: str | None, source: str = "rpc") -> dict[str, Any]:
        self._refuse_if_shutting_down()
        record = self.get(run_id)
        if record.state in (State.CANCELLED, State.CANCELLING):
            return record.snapshot()
        self._refuse_terminal(record, "cancel")
        self._control(record, "cancel", reason, source)
        self.store.compare_and_set(
            record,
            {State.QUEUED, State.RUNNING, State.PAUSING, State.PAUSED},
            State.CANCELLING,
            ("run_cancelling", {"reason": reason}),
        )
        driver = self.drivers.get(record.run_id)
        if driver is None:
            if record.run_id in self.queue:
                self.queue.remove(record.run_id)
            self.store.compare_and_set(
                record,
                {State.CANCELLING},
                State.CANCELLED,
                ("run_cancelled", {"reason": reason}),
                phase=Phase.IDLE,
            )
        else:
            driver.cancel(reason)
        return await self._answer(record)

    # -- forget ------------------------------------------------------------------------------------

    async def forget(self, run_id: Any) -> dict[str, Any]:
        """Delete a terminal run: its rows (durably, before the answer), then its files."""
        record = self.get(run_id)
        if not record.terminal or record.run_id in self.drivers:
            # A driver still winding down a terminal run may save it again: not yet.
            raise InvalidState(
                f"cannot forget run {record.run_id!r}: it is {record.state.value}",
                state=record.state.value,
            )
        self.store.forget(record)
        await self.store.sync()
        run_dir = self.layout.run_dir(record.run_id)
        try:
            await trio.to_thread.run_sync(shutil.rmtree, run_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # The rows are gone; what is left on disk is only space (docs/operations.md).
            log.warning(
                "forgotten run's files not all deleted", run_id=record.run_id, error=str(exc)
            )
        log.info("run forgotten", run_id=record.run_id, state=record.state.value)
        return {"ok": True}

    # -- recovery ---------------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Bring runs left by a previous daemon to a consistent state (docs/operations.md §2.3)."""
        await self._bury_lost_turns()
        self._restore_gates()
        for record in sorted(self.store.runs.values(), key=lambda r: r.created_at):
            if record.terminal:
                continue
            record.pid = None
            if record.state is State.RUNNING:
                record.phase = Phase.BETWEEN_TURNS
                self.store.append(record, "run_recovered", {})
                log.info("run recovered", run_id=record.run_id, turn=record.current_turn)
                self._spawn_driver(record)
            elif record.state is State.PAUSING:
                self.store.compare_and_set(
                    record,
                    {State.PAUSING},
                    State.PAUSED,
                    ("run_paused", {"reason": "recovered while pausing"}),
                    phase=Phase.IDLE,
                    paused_since=time.time(),
                )
            elif record.state is State.CANCELLING:
                self.store.compare_and_set(
                    record,
                    {State.CANCELLING},
                    State.CANCELLED,
                    ("run_cancelled", {"reason": "recovered while cancelling"}),
                    phase=Phase.IDLE,
                )
            elif record.state is State.QUEUED:
                self.queue.append(record.run_id)
        # A store that fails after the start-up probe stops new turns, not the daemon.
        await self.store.settle()

    async def _bury_lost_turns(self) -> None:
        """Stop what is left of turns a crashed daemon was running, and record them lost.

        A lost turn is known by its turns row (never ended) or its ``turn.pid`` file
        (removed when a turn ends). Its process group is killed only if the pid
        still names the process that was started (same start time): a reused pid is
        left alone. Processes carrying the turn's CODYD_RUN_ID/CODYD_TURN are
        stopped too, wherever they went.
        """
        lost: dict[tuple[str, int], tuple[int | None, int | None]] = {}
        for run_id, n, pid, ticks in await self.store.open_turns():
            lost[(run_id, n)] = (pid, ticks)
        known = set(lost)
        for live in self.store.live.values():
            for pid_file in self.layout.turns_dir(live.run_id).glob(f"*/{PID_FILE}"):
                found = read_pid_file(pid_file)
                if found is not None and pid_file.parent.name.isdigit():
                    lost.setdefault((live.run_id, int(pid_file.parent.name)), found)
        # All at once, sharing walks of /proc: start-up waits on this.
        requested_at = time.monotonic()  # /proc snapshots are shared across threads on this clock
        async with trio.open_nursery() as nursery:
            for (run_id, n), (pid, ticks) in sorted(lost.items()):
                record = self.store.runs.get(run_id)
                # A crash is no time for long goodbyes.
                delay = min(record.spec.sigkill_delay_s if record is not None else 2.0, 2.0)
                identity = procs.identify(pid, ticks) if pid is not None else "dead"
                same = identity == "same"
                if pid is not None and not same:
                    log.info(
                        "lost turn's agent is dead"
                        if identity == "dead"
                        else "lost turn's pid names another process now; leaving it",
                        run_id=run_id,
                        turn=n,
                        pid=pid,
                    )
                log.warning("stopping what is left of a lost turn", run_id=run_id, turn=n, pid=pid)
                nursery.start_soon(
                    partial(
                        procs.stop_group,
                        pid if same else None,
                        delay,
                        mark=procs.TurnMark(
                            run_id, n, record.spec.workspace if record is not None else ""
                        ),
                        requested_at=requested_at,
                    )
                )
        for run_id, n in sorted(lost):
            record = self.store.runs.get(run_id)
            self.layout.turn_pid(run_id, n).unlink(missing_ok=True)
            if (run_id, n) in known:
                self.store.save_turn(run_id, n, ended_at=time.time(), outcome=Outcome.LOST)
                if record is not None:
                    self._record_lost(record, n)

    def _record_lost(self, record: RunRecord, n: int) -> None:
        record.stats.turns += 1
        record.uncounted_turns += 1  # the daemon's loss, not the run's turn (docs/events.md §4.1)
        data = {
            "outcome": Outcome.LOST,
            "exit_code": None,
            "duration_ms": None,
            "tokens": {"input": 0, "output": 0, "cached": 0},
            "cost_usd": 0.0,
            "stderr_tail": None,
            "error": None,
        }
        self.store.append(record, "turn_completed", data, turn=n)

    # -- accounts (docs/protocol.md §5.10) ---------------------------------------------------

    def _restore_gates(self) -> None:
        """The limits stored with waiting runs hold their accounts again after a restart."""
        now = time.time()
        for record in self.store.live.values():
            wait = record.wait or {}
            until = wait.get("until")
            held = wait.get("reason") in ("rate_limited", "account_limited")
            if held and isinstance(until, float | int) and until > now:
                self.gates.limit(wait["account"], float(until))

    def accounts(self) -> dict[str, dict[str, Any]]:
        """``daemon.info.accounts``: per account, its limit and its runs not yet ended."""
        runs: dict[str, int] = dict.fromkeys(self.gates.accounts(), 0)
        for record in self.store.live.values():
            account = record.spec.account_name
            runs[account] = runs.get(account, 0) + 1
        return {
            account: {"limited_until": self.gates.limited_until(account), "runs": count}
            for account, count in sorted(runs.items())
        }

    def lease_lost(self, run_id: str, holder: str) -> None:
        """Another daemon holds the run's lease now: stop its turn and stop driving it."""
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.lose_lease(holder)

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in State}
        for record in self.store.runs.values():
            counts[record.state.value] += 1
        return counts

    def active_runs(self) -> int:
        return sum(1 for r in self.store.live.values() if r.state in ACTIVE)


_BUDGET_KINDS = {
    "budget.max_cost_usd": "cost",
    "budget.max_tokens": "tokens",
    "budget.max_duration_s": "duration",
}


def _budget_kinds_changed(changes: dict[str, Any]) -> set[str]:
    """The budget kinds whose warning may come again after an update: their limit changed."""
    if "budget.warn_fraction" in changes:
        return set(_BUDGET_KINDS.values())
    return {kind for key, kind in _BUDGET_KINDS.items() if key in changes}
