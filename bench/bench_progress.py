"""What the progress guard's workspace fingerprint costs on a git repository of 10,000 files.

The repository is made in a temporary directory (files of about 1 KiB in 100
directories, one commit). Measured: :func:`codyd.runs.progress.fingerprint` on
the clean tree and with 100 tracked files changed. The floor is ``git status
--porcelain=v2 -z --untracked-files=all`` alone, run the same way (same
environment, no optional locks) in the same rounds; the fingerprint adds
``git rev-parse --show-toplevel`` and the hashing of the changed files. For
information, the file scan used outside git (size and mtime of every file) on
the same tree. ``python -m bench.bench_progress``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import BenchResult, Row, report, short_tempdir
from codyd.runs.progress import fingerprint

FILES = 10_000
DIRECTORIES = 100
CHANGED = 100
ROUNDS = 15
# The fingerprint runs one more git process and hashes what changed: it may cost that much.
TARGET_CLEAN = 1.5
TARGET_CHANGED = 1.5
GIT_ENV = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        env=GIT_ENV,
    )


def make_repo(repo: Path) -> list[Path]:
    """A committed repository of FILES files; returns their paths."""
    repo.mkdir()
    paths = []
    for number in range(FILES):
        directory = repo / f"d{number % DIRECTORIES:03d}"
        directory.mkdir(exist_ok=True)
        path = directory / f"f{number:05d}.txt"
        path.write_text(f"file {number}\n" + "x" * 1000 + "\n")
        paths.append(path)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "files")
    git(repo, "status")  # refreshes the index: the clean tree is really clean
    return paths


def git_status(repo: Path) -> None:
    subprocess.run(
        ["git", "status", "--porcelain=v2", "-z", "--untracked-files=all"],
        cwd=repo,
        check=True,
        capture_output=True,
        env=GIT_ENV,
    )


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def alternate(first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """Medians of ROUNDS timings of each, alternating which goes first (after a warm-up)."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(ROUNDS):
        if round_ % 2:
            times[1].append(timed(second))
            times[0].append(timed(first))
        else:
            times[0].append(timed(first))
            times[1].append(timed(second))
    return statistics.median(times[0]), statistics.median(times[1])


def files_scan_floor(repo: Path) -> None:
    """os.walk with an lstat of every file: the least a size-and-mtime scan must do."""
    for directory, subdirectories, names in os.walk(repo):
        subdirectories[:] = [name for name in subdirectories if name != ".git"]
        for name in names:
            os.lstat(os.path.join(directory, name))


def run() -> BenchResult:
    root = short_tempdir()
    try:
        repo = root / "repo"
        paths = make_repo(repo)
        clean = fingerprint(str(repo))
        clean_s, clean_floor_s = alternate(lambda: fingerprint(str(repo)), lambda: git_status(repo))
        for path in paths[:: FILES // CHANGED][:CHANGED]:
            path.write_text(path.read_text() + "changed\n")
        changed = fingerprint(str(repo))
        changed_s, changed_floor_s = alternate(
            lambda: fingerprint(str(repo)), lambda: git_status(repo)
        )
        plain = root / "plain"
        shutil.copytree(repo, plain, ignore=shutil.ignore_patterns(".git"))
        scan = fingerprint(str(plain))
        scan_s, scan_floor_s = alternate(
            lambda: fingerprint(str(plain)), lambda: files_scan_floor(plain)
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if clean.digest == changed.digest or changed.files != CHANGED or scan.kind != "files":
        raise RuntimeError(f"fingerprints are wrong: {clean}, {changed}, {scan}")
    rows = [
        Row(
            "progress: fingerprint, clean 10k-file repo",
            clean_s,
            clean_floor_s,
            "s",
            f"≤ {TARGET_CLEAN:g}× git status",
            clean_s <= TARGET_CLEAN * clean_floor_s,
        ),
        Row(
            f"progress: fingerprint, {CHANGED} files changed",
            changed_s,
            changed_floor_s,
            "s",
            f"≤ {TARGET_CHANGED:g}× git status",
            changed_s <= TARGET_CHANGED * changed_floor_s,
        ),
        Row("progress: file scan (not git), 10k files", scan_s, scan_floor_s, "s"),
    ]
    details: dict[str, Any] = {
        "files": FILES,
        "directories": DIRECTORIES,
        "changed": CHANGED,
        "rounds": ROUNDS,
        "clean": {"fingerprint_s": clean_s, "git_status_s": clean_floor_s},
        "changed_files": {"fingerprint_s": changed_s, "git_status_s": changed_floor_s},
        "file_scan": {"fingerprint_s": scan_s, "walk_lstat_s": scan_floor_s},
    }
    return BenchResult("progress", rows, details)


def main() -> int:
    return report([run()], "progress")


if __name__ == "__main__":
    sys.exit(main())
