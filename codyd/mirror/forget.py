"""A forgotten run's keys leave Redis too: its stream, meta, ctl stream and index entry.

``run.forget`` is the store's: it never waits for Redis. What the mirror has to delete
is queued in the store with the forget itself (``kv`` key ``mirror.forget.<run_id>``,
in the same commit), so a Redis that is down, or a daemon restarted meanwhile, only
delays the deletion until the mirror writes again. The keys are deleted once the
forget is committed: from then on no read of the store can bring the run's events or
meta back, so nothing the mirror sends later writes the keys again. A new run started
with the same id meanwhile has its stream refilled from the store afterwards (a repair
of a missing stream, codyd/mirror/repair.py), and its meta and index entry written again.
"""

from __future__ import annotations

import structlog

from codyd.mirror.batch import Batch, Kind, read_replies
from codyd.mirror.keys import Keys
from codyd.mirror.redis_io import RedisLink
from codyd.store import Store

log = structlog.get_logger("codyd.mirror")

KEY_PREFIX = "mirror.forget."
# Runs whose keys go in one pipeline; the others wait for the next cycle.
PER_STEP = 200


class Forgetting:
    """The forgotten runs whose Redis keys the mirror has yet to delete."""

    def __init__(self, store: Store, link: RedisLink, keys: Keys) -> None:
        self.store = store
        self.link = link
        self.keys = keys
        # run_id -> the store version whose commit holds the forget (0: committed already).
        self.pending: dict[str, int] = {}

    def forgotten(self, run_id: str) -> None:
        """Store.on_forget: queued in the forget's own batch, deleted once that is committed."""
        self.store.kv_set(KEY_PREFIX + run_id, "")
        self.pending[run_id] = self.store.queued_version

    async def load(self) -> None:
        """What a previous daemon (or Redis being away) left to delete."""
        rows = await self.store.read(
            "SELECT key FROM kv WHERE key >= ? AND key < ?", (KEY_PREFIX, KEY_PREFIX + "\uffff")
        )
        for (key,) in rows:
            self.pending.setdefault(key[len(KEY_PREFIX) :], 0)
        if self.pending:
            log.info("mirror has forgotten runs' keys to delete", runs=len(self.pending))

    def due(self) -> list[str]:
        return [
            run_id for run_id, version in self.pending.items() if self.store.is_committed(version)
        ][:PER_STEP]

    async def step(self) -> list[str]:
        """Delete the keys of the committed forgets; the runs done (raises if Redis fails)."""
        runs = self.due()
        if not runs:
            return []
        batch = Batch()
        keys = self.keys
        for run_id in runs:
            batch.add(
                Kind.OTHER, "DEL", keys.run_events(run_id), keys.meta(run_id), keys.ctl(run_id)
            )
            batch.add(Kind.OTHER, "ZREM", keys.runs, run_id)
        replies = await self.link.pipeline(lambda: (batch.payload(), len(batch)))
        read_replies(batch, replies)
        for run_id in runs:
            self.pending.pop(run_id, None)
            self.store.execute_later("DELETE FROM kv WHERE key = ?", (KEY_PREFIX + run_id,))
        log.info("forgotten runs' keys deleted from redis", runs=len(runs))
        return runs
