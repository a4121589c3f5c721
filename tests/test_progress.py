"""The workspace fingerprint and the progress guard's count, without a daemon."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from codyd.model.record import RunRecord
from codyd.model.state import Outcome
from codyd.runs.progress import ProgressGuard, fingerprint, stagnation_limit
from codyd.spec import parse_run_spec

STOP = ".cody-harness/current-epic/.stop"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def digest(path: Path, **kwargs: int) -> str:
    ignore = [str(path / STOP)]
    return fingerprint(str(path), ignore, **kwargs).digest


def test_git_fingerprint_sees_content_untracked_files_and_commits(repo: Path) -> None:
    """HEAD, the status and the changed files' content each change the fingerprint."""
    found = fingerprint(str(repo))
    assert found.kind == "git" and found.files == 0 and not found.partial
    clean = found.digest
    assert digest(repo) == clean

    (repo / "a.txt").write_text("two\n")
    modified = digest(repo)
    assert modified != clean
    (repo / "a.txt").write_text("three\n")  # still " M a.txt": only the content differs
    rewritten = digest(repo)
    assert rewritten != modified

    (repo / "new.txt").write_text("x")
    untracked = digest(repo)
    assert untracked != rewritten

    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    committed = digest(repo)
    assert committed not in (clean, modified, rewritten, untracked)


def test_git_fingerprint_ignores_the_stop_file_and_leaves_the_index_alone(repo: Path) -> None:
    """codyd's own stop file is no progress; a fingerprint never takes the index lock."""
    clean = digest(repo)
    stop = repo / STOP
    stop.parent.mkdir(parents=True)
    stop.write_text("")
    assert digest(repo) == clean
    (repo / "a.txt").touch()  # a stat change only: git status refreshes, content is equal
    before = (repo / ".git" / "index").stat().st_mtime_ns
    assert digest(repo) == clean
    assert (repo / ".git" / "index").stat().st_mtime_ns == before


def test_git_fingerprint_of_a_subdirectory_workspace(repo: Path) -> None:
    """A workspace inside a repository sees its own changes, with paths from the top."""
    sub = repo / "sub"
    sub.mkdir()
    clean = digest(sub)
    (sub / "f.txt").write_text("f")
    assert digest(sub) != clean
    (repo / "outside.txt").write_text("o")
    changed = digest(sub)
    assert fingerprint(str(sub)).files == 1
    assert digest(sub) == changed


def test_plain_directory_fingerprint_is_size_and_mtime(tmp_path: Path) -> None:
    """Outside git, a file's size or mtime changes the fingerprint; .git and the stop file not."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    found = fingerprint(str(tmp_path))
    assert found.kind == "files" and found.files == 1
    clean = found.digest
    assert digest(tmp_path) == clean
    stop = tmp_path / STOP
    stop.parent.mkdir(parents=True)
    stop.write_text("")
    assert digest(tmp_path) == clean
    os.utime(tmp_path / "d" / "f", ns=(1, 1))
    touched = digest(tmp_path)
    assert touched != clean
    (tmp_path / "d" / "f").write_text("xy")
    assert digest(tmp_path) != touched


def test_plain_directory_fingerprint_is_bounded(tmp_path: Path) -> None:
    """Past max_files files the fingerprint is partial, and later files are not seen."""
    for name in "abcde":
        (tmp_path / name).write_text(name)
    found = fingerprint(str(tmp_path), max_files=3)
    assert found.partial and found.files == 3
    (tmp_path / "e").write_text("changed")
    assert fingerprint(str(tmp_path), max_files=3).digest == found.digest
    (tmp_path / "a").write_text("changed")
    assert fingerprint(str(tmp_path), max_files=3).digest != found.digest
    assert not fingerprint(str(tmp_path), max_files=5).partial


def record_for(workspace: Path, **spec: object) -> RunRecord:
    params = {"workspace": str(workspace), "prompt": "p", "command": ["true"], **spec}
    return RunRecord(spec=parse_run_spec(params), node="n", created_at=0.0)


def test_stagnation_turns_default_per_agent(tmp_path: Path) -> None:
    assert stagnation_limit(record_for(tmp_path).spec) == 0
    assert stagnation_limit(record_for(tmp_path, stagnation_turns=3).spec) == 3
    claude = parse_run_spec({"workspace": str(tmp_path), "prompt": "p", "agent": "claude"})
    assert stagnation_limit(claude) == 5


def test_guard_counts_ok_turns_without_progress(tmp_path: Path) -> None:
    """Only ok turns count; a file event, new test results or a new message are progress."""
    record = record_for(tmp_path, stagnation_turns=3)
    guard = ProgressGuard(record, max_files=2)

    async def main() -> list[tuple[bool, int, bool]]:
        seen = []
        assert await guard.start() is None
        for outcome, event in [
            (Outcome.OK, None),
            (Outcome.INTERRUPTED, None),  # neither counts nor breaks the count
            (Outcome.OK, ("file_written", {"path": "x"})),
            (Outcome.OK, ("test_run_completed", {"passed": 1, "failed": 0, "skipped": 0})),
            (Outcome.OK, ("test_run_completed", {"passed": 1, "failed": 0, "skipped": 0})),
            (Outcome.OK, ("message", {"role": "assistant", "text": "hello"})),
            (Outcome.OK, ("message", {"role": "assistant", "text": "hello"})),
            (Outcome.ERROR, None),  # breaks it
            (Outcome.OK, None),
            (Outcome.OK, None),
            (Outcome.OK, None),
        ]:
            if event is not None:
                guard.observe(*event)
            judged = await guard.judge(outcome)
            seen.append((judged.progressed, judged.stagnant_turns, judged.stalled))
        return seen

    seen = trio.run(main)
    assert [count for _, count, _ in seen] == [1, 1, 0, 0, 1, 0, 1, 0, 1, 2, 3]
    assert [stalled for *_, stalled in seen] == [False] * 10 + [True]
    assert record.stagnant_turns == 3 and record.progress_marks is not None


def test_guard_warns_once_when_the_fingerprint_is_partial(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).write_text(name)
    record = record_for(tmp_path, stagnation_turns=2)
    guard = ProgressGuard(record, max_files=2)

    async def main() -> list[str | None]:
        warnings = [await guard.start()]
        for _ in range(2):
            warnings.append((await guard.judge(Outcome.OK)).warning)
        # A new driver (a restart) with the stored marks says nothing again.
        again = ProgressGuard(record, max_files=2)
        warnings.append(await again.start())
        return warnings

    first, *rest = trio.run(main)
    assert first is not None and "first 2 files" in first
    assert rest == [None, None, None]


def test_the_count_and_marks_are_stored_with_the_record(tmp_path: Path) -> None:
    """A restarted daemon reads the count back: it does not start again from zero."""
    import json

    record = record_for(tmp_path, stagnation_turns=4)
    record.stagnant_turns = 2
    record.progress_marks = {"tests": [1, 0, 0], "message": None}
    again = RunRecord.from_store(json.loads(record.to_store_json()))
    assert again.stagnant_turns == 2 and again.progress_marks == record.progress_marks
    assert again.spec.stagnation_turns == 4
