"""Run leases kept in the local store (SPEC 2.8, without Redis).

A daemon only runs turns for runs whose lease it holds. Without Redis the
state directory is exclusive, so the lease cannot be contested; it is still
recorded (holder ``<node>:<token>``, expiry) so that the store says which
daemon incarnation drives a run, and so a later Redis-backed implementation
has the same shape. Renewal is one statement for every held lease.
"""

from __future__ import annotations

import secrets
import time

import structlog

from codyd.store import Store

log = structlog.get_logger("codyd.leases")


class LocalLeases:
    def __init__(self, store: Store, node: str, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.holder = f"{node}:{secrets.token_hex(8)}"
        self.held: set[str] = set()

    def acquire(self, run_id: str) -> bool:
        """Take the lease of ``run_id`` (a lease of an earlier incarnation is taken over)."""
        self.store.execute_later(
            "INSERT INTO leases (run_id, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at",
            (run_id, self.holder, time.time() + self.ttl_s),
        )
        self.held.add(run_id)
        log.info("lease gained", run_id=run_id, holder=self.holder)
        return True

    def release(self, run_id: str) -> None:
        if run_id in self.held:
            self.held.discard(run_id)
            log.info("lease released", run_id=run_id, holder=self.holder)
            self.store.execute_later(
                "DELETE FROM leases WHERE run_id = ? AND holder = ?", (run_id, self.holder)
            )

    def renew_all(self) -> None:
        if self.held:
            self.store.execute_later(
                "UPDATE leases SET expires_at = ? WHERE holder = ?",
                (time.time() + self.ttl_s, self.holder),
            )

    def release_all(self) -> None:
        for run_id in list(self.held):
            self.release(run_id)
