"""The stored record of one run, and the snapshot it shows to clients (docs/protocol.md §5.3)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgpack

from codyd.model.state import TERMINAL, Phase, State
from codyd.spec import RunSpec


@dataclass(slots=True)
class Tokens:
    input: int = 0
    output: int = 0
    cached: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output

    def add(self, other: Tokens) -> None:
        self.input += other.input
        self.output += other.output
        self.cached += other.cached

    def to_wire(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output, "cached": self.cached}


@dataclass(slots=True)
class Stats:
    turns: int = 0
    failed_turns: int = 0
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float = 0.0
    files_read: int = 0
    files_written: int = 0
    files_deleted: int = 0
    test_runs: int = 0
    tests_passed: int = 0
    tests_failed: int = 0

    def to_wire(self) -> dict[str, Any]:
        tokens = self.tokens
        return {
            "turns": self.turns,
            "failed_turns": self.failed_turns,
            "tokens": {
                "input": tokens.input,
                "output": tokens.output,
                "cached": tokens.cached,
                "total": tokens.input + tokens.output,
            },
            "cost_usd": self.cost_usd,
            "files": {
                "read": self.files_read,
                "written": self.files_written,
                "deleted": self.files_deleted,
            },
            "tests": {
                "runs": self.test_runs,
                "passed": self.tests_passed,
                "failed": self.tests_failed,
            },
        }

    def account(self, type_: str, data: dict[str, Any]) -> None:
        """Add what one telemetry event reports (its data already normalized)."""
        if type_ == "token_usage":
            self.tokens.add(Tokens(data["input"], data["output"], data["cached"]))
        elif type_ == "cost":
            self.cost_usd += data["usd"]
        elif type_ == "file_read":
            self.files_read += 1
        elif type_ == "file_written":
            self.files_written += 1
        elif type_ == "file_deleted":
            self.files_deleted += 1
        elif type_ == "test_run_completed":
            self.test_runs += 1
            self.tests_passed += data["passed"]
            self.tests_failed += data["failed"]

    def to_store(self) -> dict[str, Any]:
        tokens = self.tokens
        return {
            "turns": self.turns,
            "failed_turns": self.failed_turns,
            "tokens": {"input": tokens.input, "output": tokens.output, "cached": tokens.cached},
            "cost_usd": self.cost_usd,
            "files_read": self.files_read,
            "files_written": self.files_written,
            "files_deleted": self.files_deleted,
            "test_runs": self.test_runs,
            "tests_passed": self.tests_passed,
            "tests_failed": self.tests_failed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        tokens = Tokens(**data.pop("tokens", {}))
        return cls(tokens=tokens, **data)


@dataclass(slots=True)
class RunRecord:
    """Everything codyd keeps about a run. Changed only through the store."""

    spec: RunSpec
    node: str
    created_at: float
    state: State = State.QUEUED
    phase: Phase = Phase.IDLE
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    last_activity: float | None = None
    pid: int | None = None
    current_turn: int = 0
    session_id: str | None = None
    stats: Stats = field(default_factory=Stats)
    completion_detected: bool = False
    completion_reason: str | None = None
    completion_line: str | None = None
    error: dict[str, Any] | None = None
    last_seq: int = 0
    oldest_seq: int = 1
    consecutive_failures: int = 0
    # Turns that do not count toward max_turns: ended by the daemon itself (interrupted,
    # lost) or never started (spawn_failed) (docs/events.md §4.1).
    uncounted_turns: int = 0
    # Once a sentinel reported test results, text summaries no longer count (docs/events.md §6).
    sentinel_tests: bool = False
    # agents.<name>.usage = "session_total": the last totals reported by the session.
    usage_baseline: dict[str, Any] | None = None
    # Seconds spent paused, so budget.max_duration_s counts running time only.
    paused_total_s: float = 0.0
    paused_since: float | None = None
    # Why the next turn is held back, while phase is "waiting": {reason, until, account}.
    wait: dict[str, Any] | None = None
    # The last thing the run asked a person for: {reason, message, at}; None once resolved.
    attention: dict[str, Any] | None = None
    # The progress guard (codyd.runs.progress): consecutive ok turns without progress, and
    # the last test results and assistant message reported, so a restart goes on counting.
    stagnant_turns: int = 0
    progress_marks: dict[str, Any] | None = None
    # Long runs (docs/events.md §9): the turns taken in the current agent session; the
    # rate_limited/unavailable turns in a row; seconds waited since the last turn that was
    # not held by a limit, and whether that already asked for attention; the budget kinds
    # (cost, tokens, duration) whose budget_warning is out.
    session_turns: int = 0
    limit_streak: int = 0
    waited_s: float = 0.0
    wait_attention: bool = False
    budget_warned: list[str] = field(default_factory=list)
    # run.say texts for the next turn's prompt, oldest first; dropped once that turn started.
    operator_messages: list[str] = field(default_factory=list)
    # The newest run.update that changed something: {at, changes}.
    last_update: dict[str, Any] | None = None
    # The spec changes only by run.update (Store.update_spec drops this): its JSON is made
    # once per spec, for every commit of the record.
    _spec_json: str | None = field(default=None, repr=False, compare=False)
    # The summary as msgpack, kept until a field changes (see __setattr__).
    _packed_summary: bytes | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name != "_packed_summary":
            object.__setattr__(self, "_packed_summary", None)

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def snapshot(self) -> dict[str, Any]:
        summary = self.summary()
        summary["labels"] = dict(self.spec.labels)
        return summary

    def summary(self) -> dict[str, Any]:
        # run.list builds hundreds of these per call: plain attribute reads, and the
        # enums' _value_ rather than the slower .value property.
        spec = self.spec
        return {
            "run_id": spec.run_id,
            "name": spec.name,
            "state": self.state._value_,
            "phase": self.phase._value_,
            "workspace": spec.workspace,
            "agent": spec.agent,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "last_activity": self.last_activity,
            "pid": self.pid,
            "current_turn": self.current_turn,
            "session_id": self.session_id,
            "stats": self.stats.to_wire(),
            "completion": {
                "detected": self.completion_detected,
                "reason": self.completion_reason,
                "line": self.completion_line,
            },
            "error": self.error,
            "wait": self.wait,
            "attention": self.attention,
            "operator_messages_queued": len(self.operator_messages),
            "last_update": self.last_update,
            "node": self.node,
            "last_seq": self.last_seq,
        }

    def packed_summary(self) -> bytes:
        """:meth:`summary` encoded as msgpack, made again only after the record changed.

        Every field assignment drops it; changes inside ``stats`` always come with
        an event or a save, and :meth:`Store.save` sets ``updated_at``.
        """
        packed = self._packed_summary
        if packed is None:
            packed = msgpack.packb(self.summary(), use_bin_type=True)
            self._packed_summary = packed
        return packed

    def to_store_json(self) -> str:
        """The record as the store keeps it: JSON, with the spec's env unredacted.

        Runs are committed many times in their life, hundreds at once when many
        start together: the unchanging spec is encoded once, the rest by hand.
        """
        if self._spec_json is None:
            self._spec_json = json.dumps(self.spec.to_wire(redact_env=False))
        data = {name: getattr(self, name) for name in _PLAIN_FIELDS}
        data["state"] = self.state._value_
        data["phase"] = self.phase._value_
        data["stats"] = self.stats.to_store()
        return f'{json.dumps(data)[:-1]}, "spec": {self._spec_json}}}'

    @classmethod
    def from_store(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        spec = RunSpec.from_wire(data.pop("spec"))
        stats = Stats.from_dict(data.pop("stats"))
        state = State(data.pop("state"))
        phase = Phase(data.pop("phase"))
        return cls(spec=spec, stats=stats, state=state, phase=phase, **data)


_PLAIN_FIELDS = tuple(
    name
    for name in RunRecord.__slots__
    if name not in ("spec", "stats", "state", "phase", "_spec_json", "_packed_summary")
)
