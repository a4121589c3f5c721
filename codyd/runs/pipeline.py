"""What a turn's output means: bytes in, events out (docs/agents.md §3).

A chain of small processors, each configured once and acting on one line at
a time, the way structlog composes its processors: split-line warning →
sentinels → the agent's adapter → text test summaries → completion pattern →
paced ``subprocess_output``. A processor returns the line to pass it on, or
None when it has used it up (a sentinel is shown as nothing else).

The pipeline reads bytes it is handed from a source it does not own (today a
turn's pipes) and says how far it got as a byte offset per stream: everything
before the offset has been read as whole lines, so reading can resume there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from codyd.agents import Adapter, Parsed
from codyd.agents.base import AgentReport
from codyd.agents.usage import PER_TURN, UsageRules, estimated_cost, price_for
from codyd.config import AgentConfig, Price, UsageRule
from codyd.model.events import LIFECYCLE_TYPES
from codyd.model.record import RunRecord, Tokens
from codyd.model.state import Outcome
from codyd.redact import redact_text, redact_value
from codyd.runs.output import LineSplitter, OutputThrottle
from codyd.runs.turn import TurnResult
from codyd.spec import RunSpec
from codyd.telemetry.ansi import strip_ansi
from codyd.telemetry.runner_summary import TestSummaryDetector
from codyd.telemetry.sentinel import parse_sentinel, report_of

USAGE_EVENTS = frozenset({"token_usage", "cost"})
# A stalled turn whose agent was only retrying its service ends with what stopped it.
STALL_EXPLAINED = frozenset({Outcome.UNAVAILABLE, Outcome.RATE_LIMITED, Outcome.AUTH_FAILED})
PATH_EVENTS = frozenset({"file_read", "file_written", "file_deleted", "log_updated"})

Emit = Callable[[str, dict[str, Any]], None]
# Outcomes a report sentinel replaces: the agent's own ends, not the daemon's (aborted, ...).
SENTINEL_OVERRIDES = frozenset({Outcome.OK, Outcome.ERROR, Outcome.STALLED, Outcome.TIMED_OUT})


class RunNotes(Protocol):
    """What output may change on its run (a :class:`~codyd.model.record.RunRecord`)."""

    sentinel_tests: bool
    completion_detected: bool
    completion_reason: str | None
    completion_line: str | None
    session_id: str | None
    usage_baseline: dict[str, Any] | None


@dataclass(slots=True)
class OutputLine:
    stream: str
    raw: bytes
    split: bool  # cut at max_line_bytes: more of the same line follows
    text: str
    parsed: Parsed

    @property
    def plain(self) -> str:
        return strip_ansi(self.text) if "\x1b" in self.text else self.text


Processor = Callable[[OutputLine], "OutputLine | None"]
NOT_PARSED = Parsed()  # a line no adapter read (yet): nothing consumed, no text


class Redactor:
    """An emit that keeps the run's secrets out of every event but the lifecycle's."""

    def __init__(self, secrets: Sequence[str], emit: Emit) -> None:
        self.secrets = tuple(secrets)
        self._emit = emit

    def text(self, text: str) -> str:
        return redact_text(text, self.secrets)

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        if self.secrets and type_ not in LIFECYCLE_TYPES:
            data = redact_value(data, self.secrets)
        self._emit(type_, data)


class RunEvents:
    """The end of every emit: paths made workspace-relative, counted in the run's stats, appended.

    Also keeps what the current turn's ``turn_completed`` reports of usage.
    """

    def __init__(self, record: RunRecord, append: Callable[[str, dict[str, Any]], object]):
        self._record = record
        self._append = append
        self.turn_tokens = Tokens()
        self.turn_cost = 0.0

    def new_turn(self) -> None:
        self.turn_tokens, self.turn_cost = Tokens(), 0.0

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        if type_ in PATH_EVENTS and isinstance(data.get("path"), str):
            data["path"] = workspace_relative(data["path"], self._record.spec.workspace)
        self._record.stats.account(type_, data)
        if type_ == "token_usage":
            self.turn_tokens.add(Tokens(data["input"], data["output"], data["cached"]))
        elif type_ == "cost":
            self.turn_cost += data["usd"]
        self._append(type_, data)


def workspace_relative(path: str, workspace: str) -> str:
    """Paths in events: workspace-relative when inside it, else absolute (docs/events.md §6)."""
    if not os.path.isabs(path):
        return os.path.normpath(path)
    normalized = os.path.normpath(path)
    if normalized == workspace or normalized.startswith(workspace.rstrip("/") + "/"):
        return os.path.relpath(normalized, workspace)
    return normalized


class SplitWarning:
    """Says once per turn that a line was too long to be one event."""

    def __init__(self, emit: Emit, max_line_bytes: int) -> None:
        self._emit = emit
        self._max_line_bytes = max_line_bytes
        self._warned = False

    def __call__(self, line: OutputLine) -> OutputLine:
        if line.split and not self._warned:
            self._warned = True
            self._emit(
                "warning",
                {
                    "message": f"{line.stream} line longer than "
                    f"max_line_bytes={self._max_line_bytes} was split (the log file has it whole)"
                },
            )
        return line


class Sentinels:
    """A whole ``@@codyd`` line is its event and nothing else.

    A report sentinel (``rate_limited``, ``auth_failed``, ``context_exhausted``) is
    no event: the last one becomes the turn's outcome (:meth:`TurnOutput.conclude`).
    """

    def __init__(self, emit: Emit, notes: RunNotes) -> None:
        self._emit = emit
        self._notes = notes
        self.report: AgentReport | None = None

    def __call__(self, line: OutputLine) -> OutputLine | None:
        if line.split:
            return line
        sentinel = parse_sentinel(line.text)
        if sentinel is None:
            return line
        report = report_of(sentinel)
        if report is not None:
            self.report = report
            return None
        if sentinel.type == "test_run_completed":
            self._notes.sentinel_tests = True
        self._emit(sentinel.type, sentinel.data)
        return None


class Sessions:
    """The agent's session: announced once per turn; a resumed one must be the one asked for."""

    def __init__(self, emit: Emit, notes: RunNotes, requested: str | None) -> None:
        self._emit = emit
        self._notes = notes
        self.requested = requested
        self._seen: set[str] = set()

    def __call__(self, session_id: str) -> None:
        if session_id in self._seen:
            return
        self._seen.add(session_id)
        if self.requested is not None and session_id != self.requested:
            self._emit("resume_mismatch", {"requested": self.requested, "observed": session_id})
        self._notes.session_id = session_id
        self._emit("session_started", {"session_id": session_id})


class SessionTotals:
    """Rule ``session_total``: a report becomes the growth of the session's running total.

    The baseline is kept on the run (in the store), per session id: a new or mismatched
    session starts from zero. A report below the baseline adds nothing and leaves it where
    it was (a failed claude result reports a total of 0 in the middle of a session).
    """

    def __init__(self, notes: RunNotes) -> None:
        self._notes = notes

    def __call__(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        notes = self._notes
        baseline = notes.usage_baseline
        if baseline is None or baseline.get("session_id") != notes.session_id:
            baseline = {"session_id": notes.session_id}  # a new session starts from zero
        increment: dict[str, Any] = {}
        for key in _FIGURES[type_]:
            total, before = data[key], baseline.get(key, 0)
            increment[key] = _growth(key, total, before)
            baseline[key] = max(total, before)
        notes.usage_baseline = baseline
        return {**data, **increment}


class LargestReport:
    """Rule ``max_result``: the turn counts its largest report, each one covering the process."""

    def __init__(self) -> None:
        self._largest: dict[str, Any] = {}

    def __call__(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        increment: dict[str, Any] = {}
        for key in _FIGURES[type_]:
            before = self._largest.get(key, 0)
            increment[key] = _growth(key, data[key], before)
            self._largest[key] = max(before, data[key])
        return {**data, **increment}


def _growth(key: str, total: Any, before: Any) -> Any:
    """How much a figure grew; a cost's growth without the float noise of the subtraction
    (0.0048 - 0.00232 is 0.0024799999999999996), which the CLIs' own figures never carry."""
    grown = max(0, total - before)
    return round(grown, 12) if key == "usd" else grown


_FIGURES: dict[str, tuple[str, ...]] = {
    "token_usage": ("input", "output", "cached"),
    "cost": ("usd",),
}


class UsageCounter:
    """The agent's reports of tokens and cost made increments, each figure by its rule.

    With a price (codex), each token increment also becomes a ``cost`` event marked
    ``estimated`` (docs/agents.md §5.2).
    """

    def __init__(self, notes: RunNotes, rules: UsageRules, price: Price | None = None) -> None:
        self.rules = rules
        self._price = price
        self._session_totals = SessionTotals(notes)
        self._largest = LargestReport()

    def __call__(self, type_: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        rule: UsageRule = self.rules.tokens if type_ == "token_usage" else self.rules.cost
        if rule == "session_total":
            data = self._session_totals(type_, data)
        elif rule == "max_result":
            data = self._largest(type_, data)
        counted = [(type_, data)]
        if type_ == "token_usage" and self._price is not None:
            usd = estimated_cost(self._price, data["input"], data["cached"], data["output"])
            counted.append(("cost", {"usd": usd, "estimated": True}))
        return counted


class AdapterEvents:
    """Lets the agent's adapter read the line, and emits what it found."""

    def __init__(
        self,
        adapter: Adapter,
        emit: Emit,
        notes: RunNotes,
        sessions: Sessions,
        usage: UsageCounter,
    ) -> None:
        self._adapter = adapter
        self._emit = emit
        self._notes = notes
        self._sessions = sessions
        self.usage = usage
        self.resume_failed = False

    def __call__(self, line: OutputLine) -> OutputLine:
        adapter = self._adapter
        parsed = (
            adapter.parse_stdout(line.text)
            if line.stream == "stdout"
            else adapter.parse_stderr(line.text)
        )
        line.parsed = parsed
        if parsed.session_id is not None:
            self._sessions(parsed.session_id)
        if parsed.resume_failed:
            self.resume_failed = True
        for type_, data in parsed.events:
            if type_ == "test_run_completed" and self._notes.sentinel_tests:
                continue  # tests reported by sentinel are counted once (docs/events.md §6)
            if type_ in USAGE_EVENTS:
                for counted_type, counted in self.usage(type_, data):
                    self._emit(counted_type, counted)
            else:
                self._emit(type_, data)
        return line


class TestSummaries:
    """Test-runner summaries in plain output, until a sentinel reports tests (docs/events.md §6)."""

    __test__ = False  # not a pytest class

    def __init__(self, emit: Emit, notes: RunNotes) -> None:
        self._emit = emit
        self._notes = notes
        self._detectors: dict[str, TestSummaryDetector] = {}

    def __call__(self, line: OutputLine) -> OutputLine:
        if not line.parsed.consumed and not self._notes.sentinel_tests:
            detector = self._detectors.get(line.stream)
            if detector is None:
                detector = self._detectors[line.stream] = TestSummaryDetector()
            for summary in detector.feed(line.plain):
                self._summary(summary.to_data())
        return line

    def flush(self) -> None:
        for detector in self._detectors.values():
            for summary in detector.flush():
                self._summary(summary.to_data())

    def _summary(self, data: dict[str, Any]) -> None:
        if not self._notes.sentinel_tests:
            self._emit("test_run_completed", data)


class CompletionPattern:
    """``completion.pattern`` met in the agent's text (its messages, or a command's output)."""

    def __init__(
        self, pattern: str, plain_output: bool, notes: RunNotes, save: Callable[[], None]
    ) -> None:
        self._pattern = re.compile(pattern)
        self._plain_output = plain_output
        self._notes = notes
        self._save = save

    def __call__(self, line: OutputLine) -> OutputLine:
        if self._notes.completion_detected:
            return line
        candidate = line.plain if self._plain_output else line.parsed.message_text
        if candidate is None:
            return line
        for text in candidate.splitlines() or [candidate]:
            if self._pattern.search(text):
                notes = self._notes
                notes.completion_detected = True
                notes.completion_reason = "pattern"
                notes.completion_line = text[:4096]
                self._save()
                break
        return line


class OutputPump:
    """What no processor consumed, as paced ``subprocess_output`` events (docs/events.md §5)."""

    def __init__(self, redact: Callable[[str], str], append: Callable[[dict[str, Any]], object]):
        self._throttle = OutputThrottle()
        self._redact = redact
        self._append = append
        self._waiting = trio.Event()

    def __call__(self, line: OutputLine) -> OutputLine:
        if not line.parsed.consumed:
            self._throttle.add(line.stream, line.raw if line.split else line.raw + b"\n")
            self._waiting.set()
        return line

    def has_pending(self) -> bool:
        return self._throttle.has_pending()

    async def run(self) -> None:
        while True:
            await self._waiting.wait()
            await trio.sleep_until(self._throttle.next_due())
            self._take()
            self._waiting = trio.Event()
            if self._throttle.has_pending():
                self._waiting.set()

    async def flush(self) -> None:
        while self._throttle.has_pending():
            await trio.sleep_until(self._throttle.next_due())
            self._take()

    def _take(self) -> None:
        data = self._throttle.take(trio.current_time())
        if data is not None:
            data["text"] = self._redact(data["text"])
            self._append(data)


class OutputPipeline:
    """Bytes of named streams → lines → the processors, in order."""

    def __init__(self, processors: Sequence[Processor], max_line_bytes: int) -> None:
        self.processors = list(processors)
        self._max_line_bytes = max_line_bytes
        self._splitters: dict[str, LineSplitter] = {}
        self._fed: dict[str, int] = {}

    def feed(self, stream: str, data: bytes) -> bool:
        """Read ``data`` of ``stream``; empty ``data`` is its end (an unfinished line is read).

        True if it was activity: a line that was not idle, or the start of one still open.
        """
        splitter = self._splitters.get(stream)
        if splitter is None:
            splitter = self._splitters[stream] = LineSplitter(self._max_line_bytes)
        self._fed[stream] = self._fed.get(stream, 0) + len(data)
        active = False
        for line in splitter.feed(data) if data else splitter.flush():
            active = not self.line(stream, line.text, line.split) or active
        return active or splitter.pending > 0

    def offset(self, stream: str) -> int:
        """Bytes of ``stream`` read as whole lines: where reading would resume."""
        splitter = self._splitters.get(stream)
        return self._fed.get(stream, 0) - (splitter.pending if splitter is not None else 0)

    def line(self, stream: str, raw: bytes, split: bool) -> bool:
        """Pass one line through the processors; True if the adapter found it idle."""
        first = OutputLine(stream, raw, split, raw.decode("utf-8", "replace"), NOT_PARSED)
        item: OutputLine | None = first
        for processor in self.processors:
            assert item is not None
            item = processor(item)
            if item is None:
                break
        return first.parsed.idle


@dataclass(slots=True)
class OutputSettings:
    """How one run's output is read, from its spec and its agent's configuration."""

    agent: str
    completion_pattern: str | None
    usage: UsageRules
    max_line_bytes: int
    price: Price | None = None  # codex: what its tokens cost (agents.codex.prices)

    @classmethod
    def of(cls, spec: RunSpec, agent: AgentConfig | None, max_line_bytes: int) -> OutputSettings:
        """The settings before the agent's release is known (see ``usage`` of TurnOutput)."""
        return cls(
            agent=spec.agent,
            completion_pattern=spec.completion.pattern,
            usage=PER_TURN,
            max_line_bytes=max_line_bytes,
            price=price_for(agent, spec.model) if spec.agent == "codex" else None,
        )


class TurnOutput:
    """One turn's pipeline, built from the run's settings: what the run driver feeds and drains."""

    def __init__(
        self,
        adapter: Adapter,
        settings: OutputSettings,
        notes: RunNotes,
        emit: Redactor,
        append_output: Callable[[dict[str, Any]], object],
        save: Callable[[], None],
        requested_session: str | None,
    ) -> None:
        self._adapter = adapter
        self._emit = emit
        self._notes = notes
        self.sessions = Sessions(emit, notes, requested_session)
        usage = UsageCounter(notes, settings.usage, settings.price)
        self.adapter_events = AdapterEvents(adapter, emit, notes, self.sessions, usage)
        self.test_summaries = TestSummaries(emit, notes)
        self.pump = OutputPump(emit.text, append_output)
        self.sentinels = Sentinels(emit, notes)
        processors: list[Processor] = [
            SplitWarning(emit, settings.max_line_bytes),
            self.sentinels,
            self.adapter_events,
            self.test_summaries,
        ]
        if settings.completion_pattern:
            plain = settings.agent == "command"
            processors.append(CompletionPattern(settings.completion_pattern, plain, notes, save))
        processors.append(self.pump)
        self.pipeline = OutputPipeline(processors, settings.max_line_bytes)

    def feed(self, stream: str, data: bytes) -> bool:
        """Read the agent's output; False if all it held was idle noise (not activity)."""
        return self.pipeline.feed(stream, data)

    def use_usage_rules(self, rules: UsageRules) -> None:
        """Count tokens and cost by ``rules`` (known once the agent's release is)."""
        self.adapter_events.usage.rules = rules

    async def flush(self) -> None:
        """At the turn's end: summaries still open, then the output still waiting."""
        self.test_summaries.flush()
        await self.pump.flush()

    def conclude(self, result: TurnResult) -> None:
        """The agent's last word on its turn: an error it reported, a session it lost."""
        report: AgentReport | None = None
        if result.outcome in (Outcome.OK, Outcome.ERROR, Outcome.STALLED):
            report = self._adapter.finish(result.exit_code)
            if result.outcome == Outcome.STALLED and (
                report is None or report.outcome not in STALL_EXPLAINED
            ):
                report = None  # stalled it is, unless the agent was only retrying its service
        if result.outcome in SENTINEL_OVERRIDES and self.sentinels.report is not None:
            report = self.sentinels.report  # the agent's own word, whatever its exit status
        if report is not None:
            result.outcome, result.error_message = report.outcome, report.message
            result.error_code, result.resets_at = report.code, report.resets_at
        requested = self.sessions.requested
        if self.adapter_events.resume_failed and requested is not None:
            # A session the agent no longer knows: the next turn starts a fresh one.
            self._emit(
                "warning",
                {
                    "message": f"the agent could not resume session {requested}; "
                    "the next turn starts a new session"
                },
            )
            if self._notes.session_id == requested:
                self._notes.session_id = None
