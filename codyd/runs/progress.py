"""The progress guard: a run whose turns change nothing is paused (docs/operations.md).

After each turn the workspace is fingerprinted off the event loop. A turn made
progress when its fingerprint differs from the one before it, when it reported
a ``file_written`` or ``file_deleted``, or when its test results or its last
assistant message differ from the last ones reported. After
``stagnation_turns`` consecutive ``ok`` turns without progress the driver
pauses the run with reason ``no_progress``.

A git repository is fingerprinted by ``git status --porcelain=v2`` (its
``branch.oid`` line is ``HEAD``; untracked files included) and the content of
every file it lists; any other directory by the size and mtime of its files,
at most ``max_files`` of them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from codyd.model.record import RunRecord
from codyd.model.state import UNCOUNTED_OUTCOMES, Outcome
from codyd.runs.spawn import run_helper
from codyd.spec import RunSpec

# The bound on a directory that is not a git repository: files looked at, in name order.
MAX_FILES = 20_000
# Of a changed file, at most this much content is read; the rest counts by size and mtime.
MAX_CONTENT_BYTES = 4 * 1024 * 1024
GIT_TIMEOUT_S = 60.0
# What stagnation_turns = null means, per agent: off for plain commands.
DEFAULT_STAGNATION_TURNS = {"codex": 5, "claude": 5}
_READ_CHUNK = 1024 * 1024


def stagnation_limit(spec: RunSpec) -> int:
    """The spec's ``stagnation_turns``, its null resolved for the agent; 0 is off."""
    if spec.stagnation_turns is not None:
        return spec.stagnation_turns
    return DEFAULT_STAGNATION_TURNS.get(spec.agent, 0)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The workspace's state at one moment; only ``digest`` is compared."""

    digest: str
    kind: str  # "git" or "files"
    files: int  # the files whose content (git) or size and mtime (files) went into it
    partial: bool = False  # the files bound was reached: later files are not looked at


def fingerprint(
    workspace: str, ignore: Collection[str] = (), *, max_files: int = MAX_FILES
) -> Fingerprint:
    """The workspace's fingerprint (blocking: run it in a worker thread).

    ``ignore`` holds absolute paths left out (codyd's stop file). A git
    repository falls back to the file scan when git cannot tell (no git, a
    repository git refuses, a timeout).
    """
    found = _git_fingerprint(workspace, frozenset(ignore))
    if found is not None:
        return found
    return _files_fingerprint(workspace, frozenset(ignore), max_files)


# -- git -------------------------------------------------------------------------------------


def _git(workspace: str, *args: str) -> bytes | None:
    # No optional locks: a fingerprint never writes the index the agent may be using.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = run_helper(["git", *args], workspace, GIT_TIMEOUT_S, env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_fingerprint(workspace: str, ignore: frozenset[str]) -> Fingerprint | None:
    top = _git(workspace, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    root = os.fsdecode(top.rstrip(b"\n"))
    status = _git(
        workspace, "status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all", "--", "."
    )
    if status is None:
        return None
    digest = hashlib.sha256()
    files = 0
    for record, path in _status_entries(status):
        if path is None:
            if record.startswith((b"# branch.oid ", b"# branch.head ")):
                digest.update(record + b"\0")  # HEAD, and the branch it is on
            continue
        full = os.path.join(root, os.fsdecode(path))
        if _ignored(path, full, ignore):
            continue
        files += 1
        digest.update(record + b"\0" + _content_digest(full) + b"\0")
    return Fingerprint(digest.hexdigest(), "git", files)


def _status_entries(output: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """``git status --porcelain=v2 -z`` as (record, path); headers have no path."""
    items = iter(output.split(b"\0"))
    for item in items:
        if not item:
            continue
        kind = item[:1]
        if kind == b"#":
            yield item, None
        elif kind == b"1":
            yield item, item.split(b" ", 8)[-1]
        elif kind == b"2":
            origin = next(items, b"")  # a rename's original path follows it
            yield item + b"\0" + origin, item.split(b" ", 9)[-1]
        elif kind == b"u":
            yield item, item.split(b" ", 10)[-1]
        elif kind in (b"?", b"!"):
            yield item, item[2:]


def _ignored(relative: bytes, full: str, ignore: frozenset[str]) -> bool:
    return b".git" in relative.split(b"/") or os.path.normpath(full) in ignore


def _content_digest(path: str) -> bytes:
    """What a changed file holds: its bytes (up to MAX_CONTENT_BYTES), a link's target."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            return b"link:" + os.fsencode(os.readlink(path))
        if not stat.S_ISREG(info.st_mode):
            return f"mode:{info.st_mode}:{info.st_size}:{info.st_mtime_ns}".encode()
        digest = hashlib.sha256(f"{info.st_size}".encode())
        with open(path, "rb") as handle:
            left = MAX_CONTENT_BYTES
            while left > 0:
                chunk = handle.read(min(_READ_CHUNK, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        if info.st_size > MAX_CONTENT_BYTES:
            digest.update(f":{info.st_mtime_ns}".encode())
        return digest.hexdigest().encode()
    except OSError as exc:
        return f"unreadable:{exc.errno}".encode()


# -- any other directory ----------------------------------------------------------------------


def _files_fingerprint(workspace: str, ignore: frozenset[str], max_files: int) -> Fingerprint:
    """Size and mtime of the workspace's files, in name order, at most ``max_files``."""
    digest = hashlib.sha256()
    files = 0
    pending = [workspace]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            digest.update(f"unreadable:{exc.errno}:".encode() + os.fsencode(directory) + b"\0")
            continue
        subdirectories = []
        for entry in entries:
            if entry.name == ".git" or os.path.normpath(entry.path) in ignore:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                subdirectories.append(entry.path)
                continue
            if files >= max_files:
                return Fingerprint(digest.hexdigest(), "files", files, partial=True)
            files += 1
            relative = os.fsencode(os.path.relpath(entry.path, workspace))
            digest.update(relative + f"\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
        pending.extend(reversed(subdirectories))
    return Fingerprint(digest.hexdigest(), "files", files)


# -- the guard ----------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnFacts:
    """What one turn reported that tells of progress."""

    files_changed: bool = False
    tests: list[int] | None = None  # the last test_run_completed: [passed, failed, skipped]
    message: str | None = None  # the last assistant message, as a sha256 hex digest

    def observe(self, type_: str, data: dict[str, Any]) -> None:
        if type_ in ("file_written", "file_deleted"):
            self.files_changed = True
        elif type_ == "test_run_completed":
            self.tests = [data.get("passed", 0), data.get("failed", 0), data.get("skipped", 0)]
        elif type_ == "message" and data.get("role") == "assistant":
            text = data.get("text")
            if isinstance(text, str):
                self.message = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Judgement:
    """The guard's word on one turn."""

    progressed: bool
    stagnant_turns: int  # consecutive ok turns without progress, this one included
    stalled: bool  # stagnant_turns reached the limit: the run is to pause
    warning: str | None = None  # once per run: the fingerprint is partial


@dataclass(slots=True)
class ProgressGuard:
    """One run's progress, turn after turn; the count and marks live in the record.

    ``record.stagnant_turns`` is the count, ``record.progress_marks`` the last
    test results and assistant message reported (``{"tests", "message",
    "partial_warned"}``), both stored, so a restarted daemon goes on counting.
    The workspace fingerprint is taken again whenever a driver starts.
    """

    record: RunRecord
    max_files: int = MAX_FILES
    _workspace: Fingerprint | None = field(default=None, init=False)
    _turn: TurnFacts = field(default_factory=TurnFacts, init=False)

    @property
    def limit(self) -> int:
        """From the spec as it is now: run.update may change ``stagnation_turns`` mid-run."""
        return stagnation_limit(self.record.spec)

    @property
    def on(self) -> bool:
        return self.limit > 0

    def observe(self, type_: str, data: dict[str, Any]) -> None:
        """Every event of the run goes by here."""
        if self.on:
            self._turn.observe(type_, data)

    async def start(self) -> str | None:
        """The fingerprint before the driver's first turn; a warning if it is partial."""
        self._turn = TurnFacts()
        if not self.on:
            return None
        self._workspace = await self._take()
        return self._partial_warning(self._workspace)

    async def judge(self, outcome: Outcome) -> Judgement:
        """After a turn whose end is recorded: did it progress, and is it time to pause?"""
        record = self.record
        facts, self._turn = self._turn, TurnFacts()
        before, now = self._workspace, await self._take()
        self._workspace = now
        marks = dict(record.progress_marks or {})
        progressed = before is None or before.digest != now.digest or facts.files_changed
        for name in ("tests", "message"):
            value = getattr(facts, name)
            if value is not None:
                progressed = progressed or value != marks.get(name)
                marks[name] = value
        warning = self._partial_warning(now, marks)
        record.progress_marks = marks
        if outcome == Outcome.OK:
            record.stagnant_turns = 0 if progressed else record.stagnant_turns + 1
        elif outcome not in UNCOUNTED_OUTCOMES:
            record.stagnant_turns = 0  # a failed turn breaks the run of ok ones
        stalled = outcome == Outcome.OK and record.stagnant_turns >= self.limit
        return Judgement(progressed, record.stagnant_turns, stalled, warning)

    async def _take(self) -> Fingerprint:
        spec = self.record.spec
        stop_file = spec.completion.stop_file
        ignore = [] if stop_file is None else [str(spec.resolve(stop_file))]
        return await trio.to_thread.run_sync(
            lambda: fingerprint(spec.workspace, ignore, max_files=self.max_files)
        )

    def _partial_warning(
        self, found: Fingerprint, marks: dict[str, Any] | None = None
    ) -> str | None:
        record = self.record
        if marks is None:
            marks = dict(record.progress_marks or {})
        if not found.partial or marks.get("partial_warned"):
            return None
        marks["partial_warned"] = True
        record.progress_marks = marks
        return (
            f"the progress guard looks at the first {self.max_files} files of the workspace "
            "only (it is not a git repository): changes to the others are not seen"
        )
