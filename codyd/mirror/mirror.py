"""The mirror task: follows the store from a durable cursor and writes every event into Redis.

Exactly once, in order: the mirror reads committed events after its cursor (a gid,
kept in the store as ``mirror.cursor``), sends each batch as one pipeline, and
advances the cursor only once Redis has accepted the whole batch. A batch sent
again (after a lost connection, or a crash before the cursor reached the disk) is
harmless: every entry carries an explicit ID, and Redis refuses an ID that is not
above the stream's top entry, which the mirror reads as "already there".

A stream that holds an entry codyd did not write, or that Redis lost, is held and
repaired on its own (``repair``) while every other stream goes on. A key the mirror
keeps in Redis (``{p}mirror:{node}``) tells when Redis lost its data: the index, meta,
groups and streams of every run in the store are then written again.

Nothing a run does waits for the mirror: it only reads what the store committed.
While Redis is away the mirror retries with a capped exponential backoff and the
backlog (``lag_events``) grows; when Redis returns it drains. Any other fault of the
mirror, a bug included, is logged with its traceback and retried the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
import trio

from codyd import __version__
from codyd.config import Config
from codyd.mirror.backoff import Backoff
from codyd.mirror.batch import (
    Batch,
    BatchRejected,
    Entry,
    Kind,
    Limits,
    RunMeta,
    build_batch,
    read_replies,
)
from codyd.mirror.control import ControlReader, ControlTarget
from codyd.mirror.fields import heartbeat_fields, meta_fields, unix_ms
from codyd.mirror.forget import Forgetting
from codyd.mirror.keys import Keys
from codyd.mirror.redis_io import RedisLink, RedisRefused, RedisUnavailable, describe_error
from codyd.mirror.repair import HOLDS_KEY, Repairs
from codyd.model.events import Event
from codyd.store import Store

log = structlog.get_logger("codyd.mirror")

CURSOR_KEY = "mirror.cursor"
# Set once the mirror wrote its marker into Redis: from then on a missing marker is a loss.
MARKED_KEY = "mirror.marked"
BATCH_EVENTS = 1000
# Most run metas written in one batch; runs left over are written by the next one.
BATCH_METAS = 500
# ctl streams are polled this often (applied within 1 s: docs/redis.md "Control through Redis").
CONTROL_POLL_S = 0.25
# Every run's meta is compared with its record this often; live runs on every batch.
META_SCAN_S = 1.0
# While events flow the cursor is saved at most this often (each save is a store commit);
# a crash re-sends at most this much, which Redis recognises.
CURSOR_SAVE_S = 0.5
# How long a rebuild waits for its holds to be committed before it writes the marker.
REBUILD_SYNC_S = 10.0

DISABLED_STATUS: dict[str, Any] = {
    "enabled": False,
    "connected": False,
    "lag_events": 0,
    "last_error": None,
}


class Mirror:
    """Mirrors the store into Redis Streams; ``run`` is its task, ``flush`` its last words."""

    def __init__(
        self,
        config: Config,
        store: Store,
        control: ControlTarget,
        *,
        started_at: float,
        active_runs: Callable[[], int],
        link: RedisLink | None = None,
    ) -> None:
        if config.redis_url is None:
            raise ValueError("Mirror needs config.redis_url; without Redis there is nothing to do")
        self.config = config
        self.store = store
        self.keys = Keys(config.key_prefix)
        self.limits = Limits(
            config.redis_maxlen.run, config.redis_maxlen.global_, config.mirror_groups
        )
        self.link = link if link is not None else RedisLink(config.redis_url)
        self.cursor = 0
        self._saved_cursor = 0
        self._next_save = 0.0
        self.connected = False
        self.last_error: str | None = None
        self._target = control
        self._control = ControlReader(store, self.link, self.keys, control)
        self._repairs = Repairs(store, self.link, self.keys, self.limits)
        self._forgetting = Forgetting(store, self.link, self.keys)
        store.on_forget = self._forgetting.forgotten
        self._loaded = False
        self._started_at = started_at
        self._active_runs = active_runs
        self._backoff = Backoff()
        self._down_reported = False
        self._refusal_reported: str | None = None
        self._draining = False
        self._closing = False
        # updated_at of each run's record when its meta was last written.
        self._meta_sent: dict[str, float | None] = {}
        # Runs whose index entry and groups this process has written.
        self._known: set[str] = set()
        # Non-terminal runs: their meta is compared with their record on every batch.
        self._live: set[str] = set()
        self._progress = trio.Event()
        self._hurry = trio.Event()
        self._next_beat = 0.0
        self._next_poll = 0.0
        self._next_scan = 0.0

    # -- state -------------------------------------------------------------------------------------

    @property
    def lag_events(self) -> int:
        """Committed gids from the oldest event that may not be in Redis yet.

        The cursor, or an older gid a held stream still lacks. Counted in gids, so
        trimmed events, and other runs' events after a held one, count until passed.
        """
        behind = self.cursor
        oldest_missing = self._repairs.oldest_missing_gid()
        if oldest_missing is not None:
            behind = min(behind, oldest_missing - 1)
        return max(0, self.store.committed_gid - behind)

    def status(self) -> dict[str, Any]:
        """The ``mirror`` entry of ``daemon.info``."""
        return {
            "enabled": True,
            "connected": self.connected,
            "lag_events": self.lag_events,
            "last_error": self.last_error,
        }

    # -- the task ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._load()
        except Exception:
            log.exception("mirror could not load its state; retrying")
        # Whatever happens in here, the daemon starts and runs without the mirror.
        task_status.started()
        try:
            while True:
                try:
                    if not self._loaded:
                        await self._load()
                    await self._cycle()
                except (RedisUnavailable, RedisRefused, BatchRejected) as exc:
                    await self._after_failure(exc)
                except Exception as exc:
                    # The mirror is not worth the daemon: a fault here is logged and retried.
                    log.exception("mirror failed unexpectedly; retrying", error=describe_error(exc))
                    await self._after_failure(exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self.link.aclose()

    async def _load(self) -> None:
        """The cursor and holds from the store; what cannot be read is rebuilt from the store."""
        saved = await self.store.kv_get(CURSOR_KEY)
        try:
            self.cursor = int(saved or 0)
        except ValueError:
            log.warning(
                "mirror cursor in the store is not a number; sending again from the start",
                saved=saved[:60] if saved else saved,
            )
            self.cursor = 0
            self._draining = True
        self._saved_cursor = self.cursor
        if self.cursor > self.store.committed_gid:
            # A store restored from an older copy: go back; what Redis has is recognised.
            log.warning(
                "mirror cursor is ahead of the store; going back",
                cursor=self.cursor,
                committed_gid=self.store.committed_gid,
            )
            self.cursor = self.store.committed_gid
        try:
            self._repairs.load(await self.store.kv_get(HOLDS_KEY))
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("mirror holds in the store cannot be read; checking every stream")
            self._repairs.rebuild(list(self.store.runs))
        await self._forgetting.load()
        for record in self.store.runs.values():
            if record.terminal:
                self._meta_sent[record.run_id] = record.updated_at
            else:
                self._live.add(record.run_id)
        self._loaded = True
        log.info("mirror started", cursor=self.cursor, lag_events=self.lag_events)

    async def _cycle(self) -> None:
        if not self.connected:
            await self.link.ping()
            await self._check_marker()
            self._on_connected()
        progressed = await self._send()
        if self._forgetting.pending and await self._forget():
            progressed = True
        if self._repairs.holds and await self._repairs.step(self.cursor, trio.current_time()):
            progressed = True
            self._notify_progress()
        conflict = self._repairs.conflict()
        if conflict is not None:
            # Like any failure it stays in last_error after it is resolved.
            self.last_error = conflict
        self._save_cursor(force=not progressed)
        now = trio.current_time()
        if not self._closing and now >= self._next_beat:
            self._next_beat = now + self.config.heartbeat_s
            await self._beat()
        if now >= self._next_poll and not self._target.shutting_down:
            self._next_poll = now + CONTROL_POLL_S
            await self._control.poll()
        if progressed:
            return
        if self._draining and self.lag_events == 0:
            self._draining = False
            log.info("mirror caught up", cursor=self.cursor)
        await self._idle()

    async def _idle(self) -> None:
        """Wait for the next commit, or until a heartbeat or a control poll is due."""
        if self.store.committed_gid > self.cursor:
            return
        wake_at = self._next_poll if self._closing else min(self._next_poll, self._next_beat)
        if self._repairs.holds:
            wake_at = min(wake_at, min(hold.next_try for hold in self._repairs.holds.values()))
        with trio.move_on_at(wake_at):
            await self.store.wait_committed()

    # -- events and metas --------------------------------------------------------------------------

    async def _send(self) -> bool:
        """Send the next batch; True if the cursor moved or a meta was written."""
        upto = self.store.committed_gid
        events: list[Event] = []
        if upto > self.cursor:
            events = await self.store.read_events(None, self.cursor, limit=BATCH_EVENTS)
        metas = self._dirty_metas(events)
        if not events and not metas:
            # Nothing left to send up to ``upto``: the events between were trimmed.
            return self._advance(upto)
        built: list[Batch] = []

        held = self._repairs.held()

        def build() -> tuple[bytes, int]:
            built.append(build_batch(self.keys, self.limits, events, metas, held=held))
            return built[0].payload(), len(built[0])

        replies = await self.link.pipeline(build)
        batch = built[0]
        outcome = read_replies(batch, replies)
        self._backoff.reset()
        if outcome.refused:
            repeated = await self._repairs.check(outcome.refused)
            if repeated:
                log.info(
                    "mirror skipped entries already in redis",
                    entries=repeated,
                    after_gid=self.cursor,
                )
        if outcome.missing:
            self._lost(outcome.missing)
        for meta in metas:
            self._meta_sent[meta.run_id] = meta.updated_at
            self._known.add(meta.run_id)
            if meta.terminal:
                self._live.discard(meta.run_id)
        if batch.events < len(events) or len(events) == BATCH_EVENTS:
            self._advance(events[batch.events - 1].gid)
        else:
            self._advance(max(upto, events[-1].gid if events else 0))
        return True

    def _dirty_metas(self, events: Sequence[Event]) -> list[RunMeta]:
        """Runs whose meta goes into this batch: those with events in it, then changed ones."""
        # A run forgotten since these events were read has no meta to send.
        touched = dict.fromkeys(e.run_id for e in events if e.run_id in self.store.runs)
        self._live.update(touched)
        now = trio.current_time()
        if now >= self._next_scan:
            self._next_scan = now + META_SCAN_S
            candidates: Any = self.store.runs
        else:
            candidates = self._live
        changed = [
            run_id
            for run_id in candidates
            if run_id not in touched
            and run_id in self.store.runs
            and self._meta_sent.get(run_id, -1.0) != self.store.runs[run_id].updated_at
        ]
        chosen = list(touched) + changed[: max(0, BATCH_METAS - len(touched))]
        metas = []
        for run_id in chosen:
            summary = self.store.runs[run_id].summary()
            metas.append(
                RunMeta(
                    run_id=run_id,
                    fields=meta_fields(summary),
                    created_ms=unix_ms(summary["created_at"]) or 0,
                    first_seen=run_id not in self._known,
                    updated_at=summary["updated_at"],
                    terminal=self.store.runs[run_id].terminal,
                )
            )
        return metas

    async def _forget(self) -> bool:
        """Delete the keys of forgotten runs (codyd/mirror/forget.py); True if any went."""
        done = await self._forgetting.step()
        for run_id in done:
            self._meta_sent.pop(run_id, None)
            self._known.discard(run_id)
            stream = self.keys.run_events(run_id)
            if run_id in self.store.runs:
                # Started again under the same id: what the deletion took is sent again.
                self._repairs.release(stream)
                self._repairs.hold(stream, run_id, "missing")
                self._live.add(run_id)
            else:
                self._live.discard(run_id)
                self._repairs.release(stream)
        return bool(done)

    def _advance(self, cursor: int) -> bool:
        if cursor <= self.cursor:
            return False
        self.cursor = cursor
        self._notify_progress()
        return True

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _lost(self, missing: Sequence[Entry]) -> None:
        """Streams Redis no longer has: each is refilled, and a data loss is looked for at once."""
        for entry in missing:
            if entry.key not in self._repairs.holds:
                log.warning("mirror stream is gone from redis; writing it again", key=entry.key)
            self._repairs.hold(entry.key, entry.run_id, "missing")
        self._next_beat = 0.0

    def _save_cursor(self, *, force: bool = False) -> None:
        """Queue the cursor for the store's next commit: when idle, else at most every 0.5 s.

        Holds are queued first, in the same commit: the cursor never passes events that a
        restart would not know are held.
        """
        now = trio.current_time()
        if self._repairs.dirty and (force or now >= self._next_save):
            self.store.kv_set(HOLDS_KEY, self._repairs.dump())
            self._next_save = now + CURSOR_SAVE_S
            force = True
        if self.cursor != self._saved_cursor and (force or now >= self._next_save):
            self.store.kv_set(CURSOR_KEY, str(self.cursor))
            self._saved_cursor = self.cursor
            self._next_save = now + CURSOR_SAVE_S

    # -- heartbeat ---------------------------------------------------------------------------------

    async def _beat(self) -> None:
        key = self.keys.daemon(self.config.node)
        fields = heartbeat_fields(
            os.getpid(), __version__, self._started_at, time.time(), self._active_runs()
        )
        batch = Batch()
        batch.add(Kind.OTHER, "HSET", key, *(item for pair in fields.items() for item in pair))
        batch.add(Kind.OTHER, "PEXPIRE", key, int(self.config.heartbeat_s * 3000))
        batch.add(Kind.OTHER, "EXISTS", self.keys.marker(self.config.node))
        replies = await self.link.pipeline(lambda: (batch.payload(), len(batch)))
        read_replies(batch, replies)
        if not replies[-1]:
            await self._rebuild()

    # -- data loss ---------------------------------------------------------------------------------

    async def _check_marker(self) -> None:
        marker = self.keys.marker(self.config.node)
        if not await self.link.execute(lambda client: client.exists(marker)):
            await self._rebuild()

    async def _rebuild(self) -> None:
        """Redis lost what the mirror wrote: write the index, meta, groups and streams again.

        On the first connection of a store to a Redis (a new installation, or an upgrade
        from a codyd without the marker) there is nothing to rebuild: Redis holds what
        the cursor says, and the marker is only written.
        """
        marker = self.keys.marker(self.config.node)
        runs = list(self.store.runs)
        if await self.store.kv_get(MARKED_KEY):
            log.warning(
                "redis lost the mirror's data; rebuilding it from the store",
                marker=marker,
                runs=len(runs),
            )
            # Everything the store retains is sent again, in order, as if never sent:
            # Redis refuses nothing it lost, and recognises what it still has.
            self.cursor = 0
            self._draining = True
            # Every run counts as new again: its groups, index entry and meta are written.
            self._known.clear()
            self._meta_sent.clear()
            self._live.update(runs)
            self._next_scan = 0.0
            self._save_cursor(force=True)
            # The cursor reaches the disk before the marker reaches Redis: a crash in
            # between finds the marker missing again rather than a rebuild forgotten.
            with trio.fail_after(REBUILD_SYNC_S):
                await self.store.sync()
        else:
            log.info("mirror writes to this redis for the first time", marker=marker)
        await self.link.execute(lambda client: client.set(marker, self.config.node))
        self.store.kv_set(MARKED_KEY, marker)

    # -- connection state --------------------------------------------------------------------------

    def _on_connected(self) -> None:
        self.connected = True
        self._down_reported = False
        self._backoff.reset()
        self._draining = True
        self._next_beat = 0.0
        log.info("mirror connected", lag_events=self.lag_events)

    async def _after_failure(self, exc: Exception) -> None:
        self.last_error = describe_error(exc)
        if isinstance(exc, RedisUnavailable):
            if self.connected or not self._down_reported:
                log.warning(
                    "mirror disconnected", error=self.last_error, lag_events=self.lag_events
                )
            self.connected = False
            self._down_reported = True
        elif self.last_error != self._refusal_reported:
            log.error("mirror write refused by redis; retrying", error=self.last_error)
            self._refusal_reported = self.last_error
        delay = self._backoff.next_delay()
        log.debug("mirror retrying", in_s=delay, error=self.last_error)
        hurry = self._hurry
        with trio.move_on_after(delay):
            await hurry.wait()
        if hurry.is_set():
            self._hurry = trio.Event()

    # -- shutdown ----------------------------------------------------------------------------------

    async def flush(self, timeout_s: float) -> bool:
        """Give the mirror up to ``timeout_s`` to write every committed event; True if it did.

        The heartbeat stops, and its hash is deleted once the backlog is written.
        What is left is written by the next start, from the saved cursor. A fault in
        here is logged: it never stops the daemon's shutdown.
        """
        try:
            return await self._flush(timeout_s)
        except Exception:
            log.exception("mirror failed while flushing; the next start resumes from its cursor")
            return False

    async def _flush(self, timeout_s: float) -> bool:
        self._closing = True
        target = self.store.committed_gid
        self._backoff.reset()
        self._hurry.set()
        with trio.move_on_after(timeout_s):
            # Streams in conflict wait for an operator, not for the shutdown.
            while self.cursor < target or self._repairs.repairing():
                await self._progress.wait()
            self._save_cursor(force=True)
            try:
                await self.link.delete(self.keys.daemon(self.config.node))
            except (RedisUnavailable, RedisRefused) as exc:
                log.debug("mirror could not delete the heartbeat", error=describe_error(exc))
            log.info("mirror flushed", cursor=self.cursor)
            return True
        self._save_cursor(force=True)
        log.warning(
            "mirror did not catch up before shutdown; the next start resumes from its cursor",
            cursor=self.cursor,
            lag_events=self.lag_events,
        )
        return False
