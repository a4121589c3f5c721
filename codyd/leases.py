"""Run leases (docs/redis.md, "Leases"): a daemon runs turns only for runs whose lease it holds.

Without Redis the lease lives in the local store: the state directory is
exclusive, so it cannot be contested, but the store still says which daemon
incarnation drives a run. With Redis the lease is ``{prefix}run:{id}:lock``:
taken with ``SET NX PX`` holding ``<node>:<token>``, renewed for every held run
in one round trip by a compare-and-pexpire script, released by
compare-and-delete. Two daemons sharing one Redis therefore never run a turn
of the same run at the same time.

A Redis outage never blocks a run: a lease that cannot be asked for is taken
provisionally and claimed at the first renewal that reaches Redis (or found
lost then, to the daemon that holds it).

Both kinds answer the same three questions: :meth:`acquire` (None when held,
else who holds it), :meth:`renew_all` (the runs lost to another holder) and
:meth:`release`.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

import structlog

from codyd.store import Store

log = structlog.get_logger("codyd.leases")


class Leases(Protocol):
    holder: str
    held: set[str]

    async def acquire(self, run_id: str) -> str | None: ...

    async def renew_all(self) -> dict[str, str]: ...

    async def release(self, run_id: str) -> None: ...


def new_holder(node: str) -> str:
    return f"{node}:{secrets.token_hex(8)}"


class LocalLeases:
    def __init__(self, store: Store, node: str, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.holder = new_holder(node)
        self.held: set[str] = set()

    async def acquire(self, run_id: str) -> str | None:
        """Take the lease of ``run_id`` (a lease of an earlier incarnation is taken over)."""
        if run_id in self.held:
            return None  # asked again before each turn: already ours, renewed with the rest
        self.store.lease_take(run_id, self.holder, time.time() + self.ttl_s)
        self.held.add(run_id)
        log.info("lease gained", run_id=run_id, holder=self.holder)
        return None

    async def renew_all(self) -> dict[str, str]:
        if self.held:
            self.store.lease_renew(self.holder, time.time() + self.ttl_s)
        return {}

    async def release(self, run_id: str) -> None:
        if run_id in self.held:
            self.held.discard(run_id)
            self.store.lease_release(run_id, self.holder)
            log.info("lease released", run_id=run_id, holder=self.holder)


# KEYS: the lock keys; ARGV[1]: our holder, ARGV[2]: ttl in ms. For each key: ours →
# extended; gone (expired, or Redis lost it) → taken again; someone else's → their name.
RENEW_SCRIPT = """
local answers = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    answers[i] = ''
  elseif not current then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    answers[i] = ''
  else
    answers[i] = current
  end
end
return answers
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    def __init__(self, url: str, prefix: str, node: str, ttl_s: float) -> None:
        from codyd.mirror.keys import Keys
        from codyd.mirror.redis_io import RedisLink

        # Short timeouts: a Redis that stopped answering must not hold turns up for long.
        self.link = RedisLink(url, socket_timeout_s=1.0, connect_timeout_s=1.0)
        self.keys = Keys(prefix)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.holder = new_holder(node)
        self.held: set[str] = set()

    def key(self, run_id: str) -> str:
        return self.keys.lock(run_id)

    async def acquire(self, run_id: str) -> str | None:
        """None once the lease is ours; else who holds it (or why it cannot be had now)."""
        from codyd.mirror.redis_io import RedisRefused, RedisUnavailable

        key, holder, ttl = self.key(run_id), self.holder, self.ttl_ms

        def take(client: Any) -> str | None:
            if client.set(key, holder, nx=True, px=ttl):
                return None
            current = client.get(key)
            if current is None or current.decode() == holder:
                client.set(key, holder, px=ttl)  # ours already, or it expired just now
                return None
            return str(current.decode())

        try:
            other = await self.link.execute(take)
        except (RedisUnavailable, RedisRefused) as exc:
            # A Redis outage never blocks a run: drive it, and claim the lease for real
            # at the next renewal once Redis is back (or learn then who holds it).
            log.warning(
                "lease taken provisionally: Redis unreachable", run_id=run_id, error=str(exc)
            )
            other = None
        if other is None and run_id not in self.held:
            self.held.add(run_id)
            log.info("lease gained", run_id=run_id, holder=self.holder)
        return other

    async def renew_all(self) -> dict[str, str]:
        """Extend every held lease in one round trip; returns runs now held by someone else."""
        from codyd.mirror.redis_io import RedisRefused, RedisUnavailable

        run_ids = sorted(self.held)
        if not run_ids:
            return {}
        keys = [self.key(r) for r in run_ids]
        holder, ttl = self.holder, self.ttl_ms

        def renew(client: Any) -> list[Any]:
            return list(client.eval(RENEW_SCRIPT, len(keys), *keys, holder, ttl))

        try:
            answers = await self.link.execute(renew)
        except (RedisUnavailable, RedisRefused) as exc:
            # Nobody can take a lease while Redis is away; keep driving, renew on return.
            log.debug("lease renewal failed", error=str(exc))
            return {}
        lost = {}
        for run_id, answer in zip(run_ids, answers, strict=True):
            if answer:
                other = answer.decode() if isinstance(answer, bytes) else str(answer)
                lost[run_id] = other
                self.held.discard(run_id)
                log.info("lease lost", run_id=run_id, holder=other)
        return lost

    async def release(self, run_id: str) -> None:
        from codyd.mirror.redis_io import RedisRefused, RedisUnavailable

        if run_id not in self.held:
            return
        self.held.discard(run_id)
        key, holder = self.key(run_id), self.holder
        try:
            await self.link.execute(lambda client: client.eval(RELEASE_SCRIPT, 1, key, holder))
        except (RedisUnavailable, RedisRefused) as exc:
            log.warning("lease release failed; it will expire", run_id=run_id, error=str(exc))
            return
        log.info("lease released", run_id=run_id, holder=self.holder)
