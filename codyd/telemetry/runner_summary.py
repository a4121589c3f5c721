"""Test-runner summaries found in plain output: pytest, jest/vitest, bun, cargo and go.

What is detected and how it is counted: docs/events.md §7.

Every pattern is anchored and matched against the whole line (ANSI codes and surrounding
whitespace removed), so prose that merely mentions test counts does not match. Counts
are at most 18 digits, so they always fit in 64 bits, and no pattern can backtrack
more than linearly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from codyd.telemetry.ansi import strip_ansi

_COUNT: Final = r"\d{1,18}"
_SECONDS: Final = rf"{_COUNT}(?:\.{_COUNT})?"

# `===== 1 failed, 5 passed, 1 warning in 0.50s (0:00:00) =====`; older pytest: `in 0.50 seconds`.
_PYTEST_RE = re.compile(
    rf"=*\s*(?P<counts>{_COUNT} [a-z]+(?:,\s*{_COUNT} [a-z]+)*)"
    rf"\s+in\s+{_SECONDS}(?:s| seconds)(?:\s+\({_COUNT}:\d\d:\d\d(?:\.{_COUNT})?\))?\s*=*",
    re.ASCII,
)
_PYTEST_WORDS: Final = frozenset(
    {
        "passed",
        "failed",
        "error",
        "errors",
        "skipped",
        "xfailed",
        "xpassed",
        "deselected",
        "warning",
        "warnings",
    }
)

# jest: `Tests:       1 failed, 1 skipped, 5 passed, 7 total`
_JEST_RE = re.compile(
    rf"Tests:\s+(?:(?P<counts>{_COUNT} [a-z]+(?:,\s*{_COUNT} [a-z]+)*),\s*)?{_COUNT} total",
    re.ASCII,
)
# vitest: `Tests  1 failed | 5 passed (6)`
_VITEST_RE = re.compile(
    rf"Tests\s+(?P<counts>{_COUNT} [a-z]+(?:\s*\|\s*{_COUNT} [a-z]+)*)\s+\({_COUNT}\)",
    re.ASCII,
)
_JEST_WORDS: Final = frozenset({"passed", "failed", "skipped", "todo"})
_COUNT_WORD_RE = re.compile(rf"({_COUNT}) ([a-z]+)", re.ASCII)

# cargo: `test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; ...`
_CARGO_RE = re.compile(
    rf"test result: (?:ok|FAILED)\. (?P<passed>{_COUNT}) passed; (?P<failed>{_COUNT}) failed; "
    rf"(?P<ignored>{_COUNT}) ignored(?:;.*)?",
    re.ASCII,
)

# bun: ` 5 pass`, ` 1 fail`, ` 0 skip`, ` 1 todo`, ` 9 expect() calls`; other lines end a block.
_BUN_COUNT_RE = re.compile(rf"(?P<count>{_COUNT})\s+(?P<kind>pass|fail|skip|todo)", re.ASCII)
_BUN_EXPECT_RE = re.compile(rf"{_COUNT}\s+expect\(\) calls?", re.ASCII)

# go: `ok  \tpkg\t0.012s`, `ok  \tpkg\t(cached)`, `FAIL\tpkg\t0.012s`, `FAIL\tpkg [build failed]`,
# `FAIL\tpkg`; `?   \tpkg\t[no test files]` and bare `FAIL` / `PASS` belong to the block too.
_GO_OK_RE = re.compile(rf"ok\s+\S+\s+(?:{_SECONDS}s|\(cached\))(?:\s.*)?", re.ASCII)
_GO_FAIL_RE = re.compile(
    rf"FAIL(?:\s+\S+\s+(?:{_SECONDS}s|\(cached\)|\[[^\]]*\])(?:\s.*)?|\t\S+)",
    re.ASCII,
)
_GO_NEUTRAL_RE = re.compile(r"(?:FAIL|PASS|\?\s+\S+\s+\[no test files\])", re.ASCII)


@dataclass(frozen=True, slots=True)
class TestSummary:
    """The counts of one test run, as reported by a runner's summary line(s)."""

    __test__: ClassVar[bool] = False  # a domain class, not a pytest test class

    passed: int
    failed: int
    skipped: int
    runner: str

    def to_data(self) -> dict[str, Any]:
        """The ``test_run_completed`` event data."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "runner": self.runner,
        }


@dataclass(slots=True)
class _BunBlock:
    """Adjacent ``N pass`` / ``N fail`` / ``N skip`` / ``N todo`` lines of one bun summary."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, count: int) -> list[TestSummary]:
        summaries = self.close() if kind in self.counts else []
        self.counts[kind] = count
        return summaries

    def close(self) -> list[TestSummary]:
        counts, self.counts = self.counts, {}
        if "pass" not in counts or "fail" not in counts:
            return []
        skipped = counts.get("skip", 0) + counts.get("todo", 0)
        return [TestSummary(counts["pass"], counts["fail"], skipped, "bun")]


@dataclass(slots=True)
class _GoBlock:
    """Consecutive ``ok <pkg>`` / ``FAIL <pkg>`` lines, one package each."""

    passed: int = 0
    failed: int = 0

    def close(self) -> list[TestSummary]:
        passed, failed = self.passed, self.failed
        self.passed = self.failed = 0
        if passed == 0 and failed == 0:
            return []
        return [TestSummary(passed, failed, 0, "go")]


# Every summary line of every runner holds one of these words, or starts like go's
# package lines: a cheap test that spares the full patterns for ordinary output.
_HINT_RE = re.compile(r"pass|fail|FAIL|PASS|Tests|test result|error|skip|select|warn|todo|ok|\?")


def _may_be_summary(text: str) -> bool:
    return _HINT_RE.search(text) is not None


class TestSummaryDetector:
    """Finds the test summaries of one output stream, fed line by line.

    Stateful per stream: bun's adjacent `N pass` / `N fail` lines form one summary, and
    consecutive go `ok <pkg>` / `FAIL <pkg>` lines (one package each) form another.
    """

    __test__: ClassVar[bool] = False  # a domain class, not a pytest test class

    def __init__(self) -> None:
        self._bun = _BunBlock()
        self._go = _GoBlock()

    def feed(self, line: str) -> list[TestSummary]:
        """Return the summaries completed by this line (a pending bun/go block comes first)."""
        text = strip_ansi(line).strip()
        if not (self._bun.counts or self._go.passed or self._go.failed) and not _may_be_summary(
            text
        ):
            return []
        if match := _BUN_COUNT_RE.fullmatch(text):
            return self._go.close() + self._bun.add(match["kind"], int(match["count"]))
        if self._bun.counts and _BUN_EXPECT_RE.fullmatch(text):
            return []
        summaries = self._bun.close()
        if self._feed_go(text):
            return summaries
        summaries += self._go.close()
        single = _single_line_summary(text)
        if single is not None:
            summaries.append(single)
        return summaries

    def flush(self) -> list[TestSummary]:
        """At the end of the stream: return a pending bun or go summary."""
        return self._bun.close() + self._go.close()

    def _feed_go(self, text: str) -> bool:
        """Count a go package line; False when the line is not part of go's package list."""
        if _GO_OK_RE.fullmatch(text):
            self._go.passed += 1
        elif _GO_FAIL_RE.fullmatch(text):
            self._go.failed += 1
        elif not _GO_NEUTRAL_RE.fullmatch(text):
            return False
        return True


def _single_line_summary(text: str) -> TestSummary | None:
    """A pytest, jest, vitest or cargo summary line, or None."""
    if match := _PYTEST_RE.fullmatch(text):
        counts = _word_counts(match["counts"], _PYTEST_WORDS)
        if counts is None:
            return None
        failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
        return TestSummary(counts.get("passed", 0), failed, counts.get("skipped", 0), "pytest")
    match = _JEST_RE.fullmatch(text) or _VITEST_RE.fullmatch(text)
    if match:
        counts = _word_counts(match["counts"] or "", _JEST_WORDS)
        if counts is None:
            return None
        skipped = counts.get("skipped", 0) + counts.get("todo", 0)
        return TestSummary(counts.get("passed", 0), counts.get("failed", 0), skipped, "jest")
    if match := _CARGO_RE.fullmatch(text):
        passed, failed, ignored = int(match["passed"]), int(match["failed"]), int(match["ignored"])
        return TestSummary(passed, failed, ignored, "cargo")
    return None


def _word_counts(counts: str, words: frozenset[str]) -> dict[str, int] | None:
    """Parse `5 passed, 1 failed` into a map; None if a word is unknown or repeated."""
    result: dict[str, int] = {}
    for number, word in _COUNT_WORD_RE.findall(counts):
        if word not in words or word in result:
            return None
        result[word] = int(number)
    return result
