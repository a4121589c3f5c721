"""The embedded store: SQLite (WAL) in the state directory.

The in-memory :class:`RunRecord` of every run is authoritative while the daemon
lives; every change to it and every event is queued and committed by one writer
task in batches (one transaction for many events), so a chatty agent does not
cost a commit per event. Readers see only committed rows, and nothing is
announced to a client before the batch holding it is committed: ``sync()``
waits for that, and event followers wake only after a commit.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import structlog
import trio

from codyd.errors import InvalidState, Overloaded, StartupFailure
from codyd.model.events import EVENT_TYPES, Event
from codyd.model.record import RunRecord
from codyd.model.state import TERMINAL, State, can_transition
from codyd.spec import RunSpec

log = structlog.get_logger("codyd.store")

SCHEMA_VERSION = 1

# MIGRATIONS[i] takes a store from schema i to i + 1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            state TEXT NOT NULL,
            record TEXT NOT NULL
        )""",
        """CREATE TABLE events (
            gid INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            type TEXT NOT NULL,
            turn INTEGER,
            data BLOB NOT NULL
        )""",
        "CREATE UNIQUE INDEX events_run_seq ON events (run_id, seq)",
        """CREATE TABLE turns (
            run_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            pid INTEGER,
            pid_start_ticks INTEGER,
            outcome TEXT,
            exit_code INTEGER,
            PRIMARY KEY (run_id, n)
        )""",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE leases (
            run_id TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL
        )""",
    ],
]

# Above this many queued events, producers wait for a commit (back-pressure).
PENDING_HIGH_WATER = 20_000
READ_BATCH = 512
RETENTION_PASS_S = 2.0
# How often a driver waiting for the store to write again checks whether it should stop.
WRITABLE_POLL_S = 0.2
# While the store cannot write, commits are retried this often at most, backing off.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# A commit attempt in the writer task ends (shielded) within this; a disk that fails
# answers in milliseconds, so this only bounds the bookkeeping around the worker thread.
COMMIT_DEADLINE_S = 10.0
# How often an idle writer checks that codyd.db is still the file it has open (a busy one
# checks before every commit): one stat, and a wake-up of an idle daemon.
IDENTITY_CHECK_S = 5.0
# What closing the store may spend on its last commit.
CLOSE_FLUSH_S = 2.0


class StoreVersionError(StartupFailure):
    """The store on disk was written by a newer codyd."""


class StoreUnusable(StartupFailure):
    """The store cannot be opened for writing at start-up: codyd must not touch any run."""


class StoreDetached(Exception):
    """codyd.db on disk is no longer the file the daemon has open (deleted or replaced)."""


class StoreWriteFailed(Exception):
    """A commit failed; the message names SQLite's error and what the file system says."""


class StoreUnwritable(Overloaded):
    """A call that changes something, refused while the store cannot commit."""


@dataclass(slots=True)
class StoreHealth:
    """Whether commits succeed; an episode runs from the first failure to the next success."""

    writable: bool = True
    last_error: str | None = None
    since: float | None = None  # wall time of the episode's first failure
    failures: int = 0  # failed commits in this episode


@dataclass(slots=True)
class _Batch:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    turns: list[tuple[str, Any]] = field(default_factory=list)
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.events or self.runs or self.turns or self.statements)

    def then(self, later: _Batch) -> _Batch:
        """This batch (which failed to commit) followed by what was queued since."""
        return _Batch(
            events=self.events + later.events,
            runs={**self.runs, **later.runs},
            turns=self.turns + later.turns,
            statements=self.statements + later.statements,
        )


def _connect(path: Path, *, wal: bool = True, create: bool = True) -> sqlite3.Connection:
    # Without create, a missing file is an error: a reader must never make an empty
    # store where the real one was deleted.
    target = str(path) if create else f"file:{quote(str(path))}?mode=rw"
    conn = sqlite3.connect(
        target, isolation_level=None, check_same_thread=False, timeout=30, uri=not create
    )
    if not wal:
        return conn
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def check_version(path: Path) -> None:
    """Refuse a store written by a newer codyd before anything touches the file."""
    if not path.exists():
        return
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the store {path} has schema version {version}, written by a newer codyd; "
            f"this codyd understands up to version {SCHEMA_VERSION}. Upgrade codyd, or point "
            "--state-dir at another directory. The store was not modified."
        )


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the schema forward, one step per migration."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for step in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    return int(version)


def _sqlite_failure(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's error, with its code and what the file system answers to a small write.

    SQLite reports a read-only file system as a plain "disk I/O error"; the operating
    system's own error (ENOSPC, EROFS, EIO, ENOENT) names the cause.
    """
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", None)
    if code:
        text += f" [{code}]"
    probe = path.with_name(path.name + ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as os_error:
        text += f"; writing in {path.parent}: {os_error.strerror or os_error}"
    return text


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open, never hiding the error that got us here.

    SQLite ends the transaction itself on some errors (a full disk): a ROLLBACK then
    fails with "no transaction is active", which must not replace the real error.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.debug("store rollback failed", error=str(exc))


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, RunRecord] = {}
        # The runs not terminal yet: what is driven, queued or paused, however long the history.
        self.live: dict[str, RunRecord] = {}
        # (created_at, run_id) of every run, ascending: run.list pages without sorting them all.
        self._order: list[tuple[float, str]] = []
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._batch = _Batch()
        self._next_gid = 1
        self._queued_version = 0
        self._committed_version = 0
        self.committed_gid = 0
        self._work = trio.Event()
        self._committed = trio.Event()
        # Set after every commit attempt, failed or not: sync() learns of a failure at once.
        self._attempted = trio.Event()
        self._grown: set[str] = set()
        # Retention runs when there is something to trim: events appended, a run finished.
        self._retention_due = trio.Event()
        self._finished_since_retention = True
        # Each run's last_seq as of the newest commit that held a change of that run.
        self._committed_seqs: dict[str, int] = {}
        self.health = StoreHealth()
        self._writable_again = trio.Event()
        # Told of every event appended (the metrics count turns from it); None costs nothing.
        self.on_append: Callable[[RunRecord, Event], None] | None = None
        # Told of every run forgotten, in the same batch as its deletion (the mirror's keys).
        self.on_forget: Callable[[str], None] | None = None
        # Where a run's turn files are (StateLayout.run_dir): retention deletes them with the
        # run's events. None (a store alone, in tests) keeps every file.
        self.run_files: Callable[[str], Path] | None = None
        # (st_dev, st_ino) of the file the writer has open: a path naming another file
        # (deleted, replaced) must not be written through the old handle.
        self._identity: tuple[int, int] | None = None

    # -- opening ---------------------------------------------------------------

    def _open(self) -> None:
        try:
            check_version(self.path)
            conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise StoreUnusable(
                f"the store {self.path} cannot be opened: {_sqlite_failure(exc, self.path)}"
            ) from None
        try:
            from_version = migrate(conn, self.path)
            self._probe_write(conn)
            # One reader opened now: should codyd.db be deleted later, reads of what was
            # committed still work through it.
            self._readers.append(_connect(self.path, create=False))
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnusable(
                f"the store {self.path} cannot be written: {_sqlite_failure(exc, self.path)}"
            ) from None
        except BaseException:
            conn.close()
            raise
        if from_version != SCHEMA_VERSION:
            log.info("store migrated", path=str(self.path), to_version=SCHEMA_VERSION)
        self._writer = conn
        self._identity = self._file_identity()
        for (record_json,) in conn.execute("SELECT record FROM runs"):
            record = RunRecord.from_store(json.loads(record_json))
            self.runs[record.run_id] = record
            if not record.terminal:
                self.live[record.run_id] = record
        self._order = sorted((r.created_at, r.run_id) for r in self.runs.values())
        # The first retention pass looks at every run: limits may have changed since.
        self._grown = set(self.runs)
        (max_gid,) = conn.execute("SELECT MAX(gid) FROM events").fetchone()
        (kv_gid,) = conn.execute(
            "SELECT COALESCE((SELECT value FROM kv WHERE key = 'last_gid'), '0')"
        ).fetchone()
        self._next_gid = max(int(max_gid or 0), int(kv_gid)) + 1
        self.committed_gid = self._next_gid - 1

    @staticmethod
    def _probe_write(conn: sqlite3.Connection) -> None:
        """Commit one small row: an unwritable store is found before any run is touched."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO kv (key, value) VALUES ('opened_at', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (repr(time.time()),),
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)

    def _check_identity(self) -> None:
        """Raise StoreDetached if codyd.db is no longer the file we write."""
        now = self._file_identity()
        if now != self._identity:
            what = "deleted" if now is None else "replaced by another file"
            raise StoreDetached(
                f"{self.path} was {what} under the running daemon; "
                "refusing to write into the old file (restore it and restart codyd)"
            )

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for conn in self._readers:
            conn.close()
        self._readers.clear()

    # -- writing (synchronous: called from the trio thread, committed later) ----

    def _queued(self) -> None:
        self._queued_version += 1
        self._work.set()

    def add_run(self, record: RunRecord) -> None:
        if record.run_id in self.runs:
            raise ValueError(f"run {record.run_id} exists already")
        self.runs[record.run_id] = record
        self.live[record.run_id] = record
        bisect.insort(self._order, (record.created_at, record.run_id))
        self.save(record)

    def save(self, record: RunRecord) -> None:
        """Queue the record's current content for the next commit."""
        record.updated_at = time.time()
        self._batch.runs[record.run_id] = record
        self._queued()

    def append(
        self,
        record: RunRecord,
        type_: str,
        data: dict[str, Any] | None = None,
        turn: int | None = None,
    ) -> Event:
        """Give the event its seq and gid now; it is committed with the next batch.

        Only the documented types (``events.EVENT_TYPES``) are ever stored.
        """
        if type_ not in EVENT_TYPES:
            raise ValueError(f"event type {type_!r} is not one of codyd's events")
        record.last_seq += 1
        event = Event(
            gid=self._next_gid,
            run_id=record.run_id,
            seq=record.last_seq,
            ts=time.time(),
            type=type_,
            turn=turn,
            data=data if data is not None else {},
        )
        self._next_gid += 1
        self._batch.events.append(
            (
                event.gid,
                event.run_id,
                event.seq,
                event.ts,
                event.type,
                event.turn,
                msgpack.packb(event.data, use_bin_type=True),
            )
        )
        self._grown.add(record.run_id)
        self._retention_due.set()
        self.save(record)
        if self.on_append is not None:
            self.on_append(record, event)
        return event

    def compare_and_set(
        self,
        record: RunRecord,
        expected: Collection[State],
        target: State,
        event: tuple[str, dict[str, Any]] | None = None,
        **changes: Any,
    ) -> bool:
        """The one path that changes a run's state.

        Applies ``target`` only if the run is in one of ``expected`` now; the new
        state, the other field changes and the event go into the same commit.
        Returns False, changing nothing, when the run has moved on.
        """
        if record.state not in expected:
            return False
        if not can_transition(record.state, target):
            raise InvalidState(
                f"run {record.run_id} cannot go from {record.state} to {target}",
                state=record.state.value,
            )
        log.info(
            "run state changed",
            run_id=record.run_id,
            from_state=record.state.value,
            to_state=target.value,
            turn=record.current_turn,
        )
        record.state = target
        for name, value in changes.items():
            setattr(record, name, value)
        if target in TERMINAL:
            record.finished_at = time.time()
            record.pid = None
            self.live.pop(record.run_id, None)
            self._finished_since_retention = True
            self._retention_due.set()
        else:
            # A failed run retried is live again.
            self.live[record.run_id] = record
        if event is not None:
            self.append(record, event[0], event[1], turn=record.current_turn or None)
        else:
            self.save(record)
        return True

    def update_spec(
        self,
        record: RunRecord,
        allowed: Collection[State],
        spec: RunSpec,
        changes: dict[str, dict[str, Any]],
    ) -> bool:
        """Give the run a new spec (run.update) if it is in one of ``allowed`` now.

        The spec, ``last_update`` and the ``run_updated`` event go into one commit;
        False, changing nothing, when the run has moved on.
        """
        if record.state not in allowed:
            return False
        record.spec = spec
        record._spec_json = None  # made again from the new spec at the next commit
        record.last_update = {"at": time.time(), "changes": changes}
        self.append(record, "run_updated", {"changes": changes}, turn=record.current_turn or None)
        return True

    def queue_message(self, record: RunRecord, allowed: Collection[State], text: str) -> bool:
        """Queue an operator message for the run's next turn (run.say) if it is in ``allowed``."""
        if record.state not in allowed:
            return False
        record.operator_messages = [*record.operator_messages, text]
        self.append(record, "operator_message", {"text": text}, turn=record.current_turn or None)
        return True

    def drop_messages(self, record: RunRecord, count: int) -> None:
        """The oldest ``count`` operator messages reached a turn that started: drop them."""
        if count:
            record.operator_messages = record.operator_messages[count:]
            self.save(record)

    def newest_first(self, before: tuple[float, str] | None = None) -> Iterator[RunRecord]:
        """Runs from the newest created, starting below ``before`` (a (created_at, run_id))."""
        order = self._order
        end = len(order) if before is None else bisect.bisect_left(order, before)
        for index in range(end - 1, -1, -1):
            yield self.runs[order[index][1]]

    def forget(self, record: RunRecord) -> None:
        """Drop a terminal run from memory now and queue the deletion of all its rows.

        The DELETEs run after the batch's upserts in the same transaction, so a record
        or event of this run still queued is written and deleted in one commit.
        """
        if not record.terminal:
            raise InvalidState(
                f"run {record.run_id} is {record.state.value}, not terminal",
                state=record.state.value,
            )
        run_id = record.run_id
        self.runs.pop(run_id, None)
        self.live.pop(run_id, None)
        index = bisect.bisect_left(self._order, (record.created_at, run_id))
        if index < len(self._order) and self._order[index] == (record.created_at, run_id):
            del self._order[index]
        self._committed_seqs.pop(run_id, None)
        self._grown.discard(run_id)
        self._batch.runs.pop(run_id, None)
        for table in ("events", "turns", "leases", "runs"):
            self.execute_later(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        # The mirror's per-run ctl cursor (codyd/mirror/control.py, cursor_key).
        self.execute_later("DELETE FROM kv WHERE key = ?", (f"ctl.{run_id}",))
        if self.on_forget is not None:
            self.on_forget(run_id)

    def save_turn(self, run_id: str, n: int, **fields: Any) -> None:
        self._batch.turns.append((run_id, (n, fields)))
        self._queued()

    def execute_later(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._batch.statements.append((sql, params))
        self._queued()

    @property
    def next_gid(self) -> int:
        return self._next_gid

    def pending_events(self) -> int:
        return len(self._batch.events)

    async def backpressure(self) -> None:
        """Producers of many events call this: it waits while the queue is long.

        It waits for commits even while the store cannot write: what is queued is held
        in memory, and the queue must not grow without bound.
        """
        if self.pending_events() > PENDING_HIGH_WATER:
            target = self._queued_version
            while self._committed_version < target:
                await self._committed.wait()

    async def sync(self) -> None:
        """Wait until everything queued before this call is committed.

        While the store cannot write, raise :class:`StoreUnwritable` instead of waiting
        (at once, or as soon as a failing commit says so): the caller must not tell a
        client about what may be lost.
        """
        target = self._queued_version
        while self._committed_version < target:
            self.refuse_if_unwritable()
            await self._attempted.wait()

    async def settle(self) -> None:
        """Like :meth:`sync`, but while the store cannot write, return at once.

        For answers that describe the state held in memory (status, list): they go on
        while the disk is full.
        """
        with suppress(StoreUnwritable):
            await self.sync()

    async def flush_within(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for everything queued to be committed; never raises.

        For shutdown: what is still uncommitted at the deadline is logged as such.
        """
        target = self._queued_version
        with trio.move_on_after(timeout_s):
            while self._committed_version < target:
                await self._committed.wait()
            return True
        log.error(
            "store: shutdown deadline reached with changes not committed",
            path=str(self.path),
            pending_events=self.pending_events(),
            error=self.health.last_error,
        )
        return False

    def refuse_if_unwritable(self) -> None:
        health = self.health
        if not health.writable:
            raise StoreUnwritable(
                f"the store {self.path} cannot write ({health.last_error}); codyd accepts "
                "no changes until it can: retry later",
                store=str(self.path),
                store_error=health.last_error,
            )

    async def wait_writable(self, run_id: str, give_up: Callable[[], bool]) -> None:
        """Return once the store can write, or as soon as ``give_up()`` is true.

        A driver calls this before each turn: no turn starts that could not be recorded.
        """
        if self.health.writable or give_up():
            return
        log.info("run waits for the store to write again before its next turn", run_id=run_id)
        while not self.health.writable and not give_up():
            with trio.move_on_after(WRITABLE_POLL_S):
                await self._writable_again.wait()

    def health_info(self) -> dict[str, Any]:
        health = self.health
        return {
            "path": str(self.path),
            "writable": health.writable,
            "last_error": health.last_error,
            "since": health.since,
            "pending_events": self.pending_events(),
        }

    async def wait_committed(self) -> None:
        """Wait for the next commit."""
        await self._committed.wait()

    @property
    def queued_version(self) -> int:
        """The version of everything queued so far; committed once ``is_committed`` says so."""
        return self._queued_version

    def is_committed(self, version: int) -> bool:
        return self._committed_version >= version

    def committed_seq(self, run_id: str) -> int | None:
        """The run's last_seq in the newest commit that changed it (None: none since start).

        A follower of one run need not read again until this moves.
        """
        return self._committed_seqs.get(run_id)

    # -- the writer task ------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            with trio.move_on_after(IDENTITY_CHECK_S):
                await self._work.wait()
            if not self._work.is_set():
                await self._check_idle()
                continue
            # A batch taken out of the queue is committed, or put back whole, even if we
            # are being cancelled: cancellation lands only outside this scope.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + COMMIT_DEADLINE_S
                committed = await self._flush_once()
            if not committed:
                await trio.sleep(self._retry_delay())

    async def _check_idle(self) -> None:
        """An idle writer still notices codyd.db deleted or replaced under it.

        One stat of a path in the state directory, on the event loop like the heartbeat's
        write there: a worker-thread round trip for it woke an idle daemon three times.
        """
        try:
            self._check_identity()
        except StoreDetached as exc:
            self._failed(exc)
            self._attempted.set()
            self._attempted = trio.Event()

    def _retry_delay(self) -> float:
        return min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** min(self.health.failures - 1, 10))

    async def _flush_once(self, *, abandon_on_cancel: bool = False) -> bool:
        """Commit what is queued; False (the batch queued again) if the store cannot write."""
        self._work = trio.Event()
        batch, self._batch = self._batch, _Batch()
        version = self._queued_version
        last_gid = self._next_gid - 1
        if batch.empty():
            return True
        rows = [
            (r.run_id, r.created_at, r.state.value, r.to_store_json()) for r in batch.runs.values()
        ]
        # Every append saves its run, so these are the newest seqs this batch holds.
        seqs = {run_id: record.last_seq for run_id, record in batch.runs.items()}
        try:
            await trio.to_thread.run_sync(
                self._commit, batch, rows, last_gid, abandon_on_cancel=abandon_on_cancel
            )
        except BaseException as exc:
            # Nothing is dropped: the batch goes back in front of what came since, and
            # the next attempt commits both (records are rewritten from memory).
            self._batch = batch.then(self._batch)
            self._work.set()
            if not isinstance(exc, (sqlite3.Error, OSError, StoreDetached, StoreWriteFailed)):
                raise
            self._failed(exc)
            self._attempted.set()
            self._attempted = trio.Event()
            return False
        self._recovered()
        self._committed_version = version
        self._committed_seqs.update(seqs)
        self.committed_gid = last_gid
        for event in (self._committed, self._attempted):
            event.set()
        self._committed = trio.Event()
        self._attempted = trio.Event()
        return True

    def _failed(self, exc: BaseException) -> None:
        health = self.health
        health.failures += 1
        health.last_error = str(exc)
        if health.writable:
            health.writable = False
            health.since = time.time()
            self._writable_again = trio.Event()
            # One error per episode; the retries that follow are debug lines.
            log.error(
                "store cannot write; new work is refused and commits are retried until it can",
                path=str(self.path),
                error=health.last_error,
                pending_events=self.pending_events(),
            )
        else:
            log.debug(
                "store commit failed again",
                path=str(self.path),
                error=health.last_error,
                failures=health.failures,
            )

    def _recovered(self) -> None:
        health = self.health
        if not health.writable:
            log.warning(
                "store writable again; what was held in memory is committed",
                path=str(self.path),
                failed_for_s=round(time.time() - (health.since or time.time()), 1),
                failures=health.failures,
                pending_events=self.pending_events(),
            )
            self._writable_again.set()
        self.health = StoreHealth()

    def _commit(self, batch: _Batch, rows: list[tuple[Any, ...]], last_gid: int) -> None:
        conn = self._writer
        assert conn is not None
        self._check_identity()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                conn.executemany(
                    "INSERT INTO runs (run_id, created_at, state, record) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(run_id) DO UPDATE SET "
                    "state = excluded.state, record = excluded.record",
                    rows,
                )
            if batch.events:
                conn.executemany(
                    "INSERT INTO events (gid, run_id, seq, ts, type, turn, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    batch.events,
                )
            for run_id, (n, fields) in batch.turns:
                self._write_turn(conn, run_id, n, fields)
            for sql, params in batch.statements:
                conn.execute(sql, params)
            conn.execute(
                "INSERT INTO kv (key, value) VALUES ('last_gid', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(last_gid),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreWriteFailed(_sqlite_failure(exc, self.path)) from exc
        except BaseException:
            _rollback(conn)
            raise

    @staticmethod
    def _write_turn(conn: sqlite3.Connection, run_id: str, n: int, fields: dict[str, Any]) -> None:
        conn.execute(
            "INSERT INTO turns (run_id, n, started_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (run_id, n, fields.get("started_at", time.time())),
        )
        if fields:
            assignments = ", ".join(f"{name} = ?" for name in fields)
            conn.execute(
                f"UPDATE turns SET {assignments} WHERE run_id = ? AND n = ?",
                (*fields.values(), run_id, n),
            )

    async def _close_flush(self) -> None:
        """The writer task has ended: commit what it left, within a deadline, then close."""
        committed = False
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_FLUSH_S
            # Abandonable: a commit that hangs must not hold the process past its bound.
            committed = await self._flush_once(abandon_on_cancel=True)
        if not committed:
            log.error(
                "store closed with changes not committed; they are lost",
                path=str(self.path),
                pending_events=self.pending_events(),
                error=self.health.last_error,
            )
            if scope.cancelled_caught:
                return  # the worker thread may still use the connection: leave it open
        self._close()

    # -- reading ------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._readers:
            conn = self._readers.pop()
        else:
            # A new connection opens the path: after it was deleted or replaced, that
            # is not our store.
            self._check_identity()
            conn = _connect(self.path, create=False)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            self._readers.append(conn)

    async def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await trio.to_thread.run_sync(self._read, sql, params)

    async def read_events(
        self,
        run_id: str | None,
        after: int,
        types: Iterable[str] | None = None,
        limit: int = READ_BATCH,
    ) -> list[Event]:
        """Committed events after a cursor: a run's seq, or the global gid."""
        where = ["seq > ?", "run_id = ?"] if run_id is not None else ["gid > ?"]
        params: list[Any] = [after] + ([run_id] if run_id is not None else [])
        if run_id is None:
            where.append("gid <= ?")
            params.append(self.committed_gid)
        type_list = list(types or ())
        if type_list:
            where.append(f"type IN ({', '.join('?' * len(type_list))})")
            params.extend(type_list)
        order = "seq" if run_id is not None else "gid"
        sql = (
            "SELECT gid, run_id, seq, ts, type, turn, data FROM events "
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        )
        params.append(limit)
        return await trio.to_thread.run_sync(self._read_events, sql, tuple(params))

    def _read_events(self, sql: str, params: tuple[Any, ...]) -> list[Event]:
        # Decoding happens here, in the worker thread, not on the trio loop.
        return [
            Event(gid, rid, seq, ts, type_, turn, msgpack.unpackb(data, raw=False))
            for gid, rid, seq, ts, type_, turn, data in self._read(sql, params)
        ]

    async def oldest_gid(self) -> int:
        rows = await self.read("SELECT MIN(gid) FROM events")
        return int(rows[0][0] or self.committed_gid + 1)

    async def open_turns(self) -> list[tuple[str, int, int | None, int | None]]:
        rows = await self.read(
            "SELECT run_id, n, pid, pid_start_ticks FROM turns WHERE ended_at IS NULL"
        )
        return [(str(r[0]), int(r[1]), r[2], r[3]) for r in rows]

    # -- small durable values (cursors) ----------------------------------------------------

    def kv_set(self, key: str, value: str) -> None:
        """Queue a value for the next commit."""
        self.execute_later(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def kv_get(self, key: str) -> str | None:
        rows = await self.read("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    # -- the local lease table (docs/redis.md, "Leases"; without Redis) ------------------------

    def lease_take(self, run_id: str, holder: str, expires_at: float) -> None:
        """``holder`` holds the lease of ``run_id`` now (an earlier holder's is taken over)."""
        self.execute_later(
            "INSERT INTO leases (run_id, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at",
            (run_id, holder, expires_at),
        )

    def lease_renew(self, holder: str, expires_at: float) -> None:
        """Every lease ``holder`` holds lasts until ``expires_at``."""
        self.execute_later(
            "UPDATE leases SET expires_at = ? WHERE holder = ?", (expires_at, holder)
        )

    def lease_release(self, run_id: str, holder: str) -> None:
        """The lease of ``run_id`` is gone, if ``holder`` still held it."""
        self.execute_later("DELETE FROM leases WHERE run_id = ? AND holder = ?", (run_id, holder))

    # -- retention -------------------------------------------------------------------------

    def apply_retention(self, max_events_per_run: int, max_runs: int) -> list[str]:
        """Trim old events: per run beyond its newest N, and all events of old terminal runs.

        Returns the runs whose every event went (their turn files go too: ``run_files``).
        """
        grown, self._grown = self._grown, set()
        for run_id in grown:
            record = self.runs.get(run_id)
            if record is None:
                continue
            oldest_kept = record.last_seq - max_events_per_run + 1
            if oldest_kept > record.oldest_seq:
                self._trim(record, oldest_kept)
        if not self._finished_since_retention:
            return []
        self._finished_since_retention = False
        terminal = sorted(
            (r for r in self.runs.values() if r.state in TERMINAL and r.oldest_seq <= r.last_seq),
            key=lambda r: r.finished_at or r.created_at,
            reverse=True,
        )
        for record in terminal[max_runs:]:
            self._trim(record, record.last_seq + 1)
        return [record.run_id for record in terminal[max_runs:]]

    def _trim(self, record: RunRecord, oldest_kept: int) -> None:
        self.execute_later(
            "DELETE FROM events WHERE run_id = ? AND seq < ?", (record.run_id, oldest_kept)
        )
        record.oldest_seq = oldest_kept
        self.save(record)

    async def _retention_loop(self, max_events_per_run: int, max_runs: int) -> None:
        # A first pass at once (the limits may have changed since the last run); then
        # woken by work only (an idle daemon sleeps here), at most once per pass period.
        self._retention_due.set()
        while True:
            await self._retention_due.wait()
            self._retention_due = trio.Event()
            emptied = self.apply_retention(max_events_per_run, max_runs)
            if emptied and self.run_files is not None:
                await self._delete_run_files([self.run_files(run_id) for run_id in emptied])
            await trio.sleep(RETENTION_PASS_S)

    async def _delete_run_files(self, paths: list[Path]) -> None:
        """The turn directories of runs retention emptied, deleted in a worker thread.

        What cannot be deleted is only space: logged, and the daemon goes on.
        """
        for path, error in await trio.to_thread.run_sync(_remove_trees, paths):
            log.warning("cannot delete a trimmed run's turn files", path=str(path), error=error)
        log.info("trimmed runs' turn files deleted", runs=len(paths))


def _remove_trees(paths: list[Path]) -> list[tuple[Path, str]]:
    """Delete each directory tree; the ones that could not be deleted, with why."""
    failed = []
    for path in paths:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append((path, str(exc)))
    return failed


@asynccontextmanager
async def open_store(
    path: Path,
    *,
    max_events_per_run: int = 100_000,
    max_runs: int = 1000,
    run_files: Callable[[str], Path] | None = None,
) -> AsyncIterator[Store]:
    store = Store(path)
    store.run_files = run_files
    await trio.to_thread.run_sync(store._open)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._flush_loop)
            nursery.start_soon(store._retention_loop, max_events_per_run, max_runs)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await store._close_flush()
