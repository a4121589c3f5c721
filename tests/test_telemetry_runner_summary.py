"""Tests of codyd.telemetry.runner_summary."""

from __future__ import annotations

import time

import pytest

from codyd.telemetry.runner_summary import TestSummary, TestSummaryDetector


def detect(*lines: str) -> list[TestSummary]:
    """Feed lines to a fresh detector, flush it, and return every summary in order."""
    detector = TestSummaryDetector()
    found = [summary for line in lines for summary in detector.feed(line)]
    return found + detector.flush()


def test_to_data_is_the_event_payload() -> None:
    """to_data gives the test_run_completed data."""
    assert TestSummary(5, 1, 2, "pytest").to_data() == {
        "passed": 5,
        "failed": 1,
        "skipped": 2,
        "runner": "pytest",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 failed, 5 passed in 0.12s", TestSummary(5, 1, 0, "pytest")),
        ("8 passed in 0.03s", TestSummary(8, 0, 0, "pytest")),
        ("===== 5 passed, 2 skipped, 1 warning in 0.50s =====", TestSummary(5, 0, 2, "pytest")),
        ("==== 2 failed, 1 error in 3.10s (0:00:03) ====", TestSummary(0, 3, 0, "pytest")),
        (
            "= 1 passed, 2 errors, 3 skipped, 1 xfailed, 1 xpassed, 4 deselected, 2 warnings "
            "in 12.34s =",
            TestSummary(1, 2, 3, "pytest"),
        ),
        ("3 deselected in 0.01s", TestSummary(0, 0, 0, "pytest")),
        ("5 passed in 1.23 seconds", TestSummary(5, 0, 0, "pytest")),
        ("5 passed in 7s", TestSummary(5, 0, 0, "pytest")),
        (
            "\x1b[31m1 failed\x1b[0m, \x1b[32m5 passed\x1b[0m\x1b[31m in 0.07s\x1b[0m",
            TestSummary(5, 1, 0, "pytest"),
        ),
        ("   8 passed in 0.06s   ", TestSummary(8, 0, 0, "pytest")),
        ("Tests:       1 failed, 5 passed, 6 total", TestSummary(5, 1, 0, "jest")),
        (
            "Tests:       1 failed, 1 skipped, 1 todo, 5 passed, 8 total",
            TestSummary(5, 1, 2, "jest"),
        ),
        ("Tests: 0 total", TestSummary(0, 0, 0, "jest")),
        (
            "\x1b[1mTests:\x1b[22m       \x1b[32m3 passed\x1b[39m, 3 total",
            TestSummary(3, 0, 0, "jest"),
        ),
        ("      Tests  1 failed | 5 passed (6)", TestSummary(5, 1, 0, "jest")),
        ("Tests  4 passed | 1 skipped | 2 todo (7)", TestSummary(4, 0, 3, "jest")),
        ("Tests  5 passed (5)", TestSummary(5, 0, 0, "jest")),
        (
            "test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; "
            "finished in 0.00s",
            TestSummary(5, 0, 2, "cargo"),
        ),
        (
            "test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            TestSummary(5, 1, 0, "cargo"),
        ),
        ("test result: ok. 0 passed; 0 failed; 0 ignored", TestSummary(0, 0, 0, "cargo")),
    ],
)
def test_single_line_summaries(line: str, expected: TestSummary) -> None:
    """pytest, jest, vitest and cargo summary lines give one summary each, at once."""
    detector = TestSummaryDetector()
    assert detector.feed(line) == [expected]
    assert detector.flush() == []


@pytest.mark.parametrize(
    "line",
    [
        "",
        "I ran the tests and 5 passed",
        "I ran the tests and 5 passed in 0.1s",
        "5 passed, 1 failed",
        "Before the fix pytest reported 5 passed, 1 failed (`test_divide_by_zero`). I did not "
        "re-run the suite after patching; run `python -m pytest -q` to confirm all 8 tests pass.",
        "- 5 passed, 1 failed in 0.1s",
        "5 passed, 1 failed in 0.1s and then some",
        "5 passed, 1 failed in a moment",
        "5 passed in 0.1",
        "no tests ran in 0.01s",
        "5 apples, 1 failed in 0.1s",
        "5 passed, 1 passed in 0.1s",
        "Tests: 1 passed, 2 passed, 3 total",
        "5 Passed in 0.1s",
        "٥ passed in 0.1s",
        "12345678901234567890 passed in 0.1s",
        "....F.                                                                   [100%]",
        "FAILED tests/test_ops.py::test_divide_by_zero - ZeroDivisionError: division by zero",
        "=================================== FAILURES ===================================",
        "Tests: 1 failed, 5 passed",
        "Tests: 5 passed, 1 bananas, 6 total",
        "Test Suites: 1 failed, 1 passed, 2 total",
        "Test Files  1 failed | 1 passed (2)",
        "Tests  5 passed",
        "test result: ok. 5 passed",
        "test result: maybe. 5 passed; 0 failed; 0 ignored",
        "running 6 tests",
        "5 pass",
        "1 fail",
        "ok",
        "ok so I fixed it",
        "ok, 5 passed",
        "FAIL",
        "PASS",
        "FAILED",
        "FAIL everything went wrong",
        "--- FAIL: TestDivide (0.00s)",
        "?   \texample.com/calc/cmd\t[no test files]",
        '{"__cody_event__": {"type": "test_run_completed", "passed": 5, "failed": 1}}',
    ],
)
def test_lines_that_are_not_summaries(line: str) -> None:
    """Prose, partial summaries and other runner output give nothing, even at flush."""
    assert detect(line) == []


def test_bun_pass_and_fail_lines_form_one_summary() -> None:
    """Adjacent bun count lines give one summary when the block ends."""
    detector = TestSummaryDetector()
    assert detector.feed(" 5 pass") == []
    assert detector.feed(" 1 skip") == []
    assert detector.feed(" 2 todo") == []
    assert detector.feed(" 1 fail") == []
    assert detector.feed(" 12 expect() calls") == []
    assert detector.feed("Ran 9 tests across 2 files. [42.00ms]") == [TestSummary(5, 1, 3, "bun")]
    assert detector.flush() == []


def test_bun_summary_is_emitted_at_flush() -> None:
    """A bun block still open at the end of the stream is emitted by flush."""
    detector = TestSummaryDetector()
    assert detector.feed("\x1b[32m 3 pass\x1b[0m") == []
    assert detector.feed("\x1b[31m 0 fail\x1b[0m") == []
    assert detector.flush() == [TestSummary(3, 0, 0, "bun")]
    assert detector.flush() == []


def test_bun_needs_both_pass_and_fail() -> None:
    """A lone `N pass` or `N fail` line, or one broken by other output, is no summary."""
    assert detect(" 5 pass", " 1 skip") == []
    assert detect(" 1 fail", " 12 expect() calls") == []
    assert detect(" 5 pass", "something else", " 1 fail") == []
    assert detect(" 12 expect() calls", " 1 fail") == []


def test_bun_repeated_count_starts_a_new_summary() -> None:
    """A second `pass` line closes the first block."""
    assert detect(" 5 pass", " 1 fail", " 2 pass", " 0 fail") == [
        TestSummary(5, 1, 0, "bun"),
        TestSummary(2, 0, 0, "bun"),
    ]


GO_OUTPUT = [
    "ok  \texample.com/calc\t0.012s",
    "--- FAIL: TestDivide (0.00s)",
    "    ops_test.go:12: want error, got nil",
    "FAIL",
    "FAIL\texample.com/calc/ops\t0.005s",
    "?   \texample.com/calc/cmd\t[no test files]",
    "ok  \texample.com/calc/parse\t(cached)",
    "ok  \texample.com/calc/fmt\t0.100s\tcoverage: 81.2% of statements",
    "FAIL\texample.com/calc/broken [build failed]",
    "FAIL\texample.com/calc/setup",
    "FAIL",
]


def test_go_package_lines_are_aggregated() -> None:
    """Consecutive go package lines form one summary, closed by other output or by flush."""
    detector = TestSummaryDetector()
    emitted = [detector.feed(line) for line in GO_OUTPUT]
    assert emitted == [[], [TestSummary(1, 0, 0, "go")], [], [], [], [], [], [], [], [], []]
    assert detector.flush() == [TestSummary(2, 3, 0, "go")]


def test_go_summary_is_emitted_before_the_next_summary() -> None:
    """A pending go block is emitted first when another runner's summary line closes it."""
    assert detect("ok  \texample.com/a\t0.1s", "8 passed in 0.06s") == [
        TestSummary(1, 0, 0, "go"),
        TestSummary(8, 0, 0, "pytest"),
    ]
    assert detect("ok  \texample.com/a\t0.1s", " 1 pass", " 0 fail") == [
        TestSummary(1, 0, 0, "go"),
        TestSummary(1, 0, 0, "bun"),
    ]


def test_bun_summary_is_emitted_before_a_following_summary() -> None:
    """A bun block is closed, and emitted first, by the next line whatever it is."""
    assert detect(" 1 pass", " 1 fail", "1 passed in 0.1s") == [
        TestSummary(1, 1, 0, "bun"),
        TestSummary(1, 0, 0, "pytest"),
    ]
    assert detect(" 1 pass", " 1 fail", "ok  \texample.com/a\t0.1s") == [
        TestSummary(1, 1, 0, "bun"),
        TestSummary(1, 0, 0, "go"),
    ]


def test_go_neutral_lines_alone_give_nothing() -> None:
    """Bare FAIL/PASS and `[no test files]` lines count no package."""
    assert detect("PASS", "FAIL", "?   \texample.com/x\t[no test files]") == []


def test_every_pytest_line_is_its_own_summary() -> None:
    """Each summary line in a stream is reported; nothing is remembered across them."""
    assert detect("1 failed, 5 passed in 0.07s", "noise", "8 passed in 0.06s") == [
        TestSummary(5, 1, 0, "pytest"),
        TestSummary(8, 0, 0, "pytest"),
    ]


PATHOLOGICAL_UNITS = [
    "1 ",
    "0123456789",
    "= ",
    "1 passed, ",
    "1 passed ",
    "1 passed, 2 x",
    "Tests: 1 a, ",
    "Tests  1 a | ",
    "ok ",
    "ok x ",
    "FAIL x ",
    "FAIL\t",
    "test result: ok. ",
    " in 1",
    "[",
]


@pytest.mark.parametrize("unit", PATHOLOGICAL_UNITS)
def test_mebibyte_lines_are_rejected_quickly(unit: str) -> None:
    """Near-miss lines of 1 MiB are rejected in linear time."""
    line = unit * (1024 * 1024 // len(unit))
    for candidate in (line, "Tests: " + line, "Tests  " + line, "ok " + line, "FAIL " + line):
        started = time.perf_counter()
        assert detect(candidate) == []
        assert time.perf_counter() - started < 2.0
