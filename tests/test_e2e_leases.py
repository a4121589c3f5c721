"""End to end: run leases in Redis, between real daemons sharing one real redis-server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, agent, wait_until
from redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.remove()


def redis_daemon(daemon_factory, server: RedisServer, node: str, **env: str) -> Daemon:
    return daemon_factory(
        env={
            "CODYD_REDIS_URL": server.url,
            "CODYD_NODE": node,
            "CODYD_LEASE_TTL_S": "1.5",
            "CODYD_HEARTBEAT_S": "0.5",
            **env,
        }
    )


def intervals(log: Path) -> list[tuple[str, float, float]]:
    """(who, start, end) of every turn the agents logged."""
    opened: dict[str, float] = {}
    spans = []
    for line in log.read_text().splitlines():
        kind, who, at = line.split()
        if kind == "start":
            opened[who] = float(at)
        else:
            spans.append((who, opened.pop(who), float(at)))
    return spans


def test_two_daemons_never_run_the_same_run_at_once(daemon_factory, redis_server, tmp_path) -> None:
    """The same run started on two daemons sharing Redis: their turns never overlap."""
    shared = tmp_path / "turns.log"
    first = redis_daemon(daemon_factory, redis_server, "alpha")
    second = redis_daemon(daemon_factory, redis_server, "beta")
    for daemon, who in ((first, "alpha"), (second, "beta")):
        daemon.call(
            "run.start",
            {
                "workspace": str(daemon.workspace()),
                "prompt": "p",
                "run_id": "shared-run",
                "command": agent("turn_logger", shared, who, 0.3),
                "max_turns": 3,
            },
        )
    first.wait_state("shared-run", "completed", timeout=30)
    second.wait_state("shared-run", "completed", timeout=30)
    spans = sorted(intervals(shared), key=lambda span: span[1])
    assert len(spans) == 6
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert start >= end, spans  # one turn at a time, across both daemons
    assert {who for who, _, _ in spans} == {"alpha", "beta"}
    assert redis_server.client().get("codi:api:run:shared-run:lock") is None  # released


def test_lost_lease_stops_the_turn_and_the_driving(daemon_factory, redis_server) -> None:
    """When another holder takes the lease, the turn is stopped (aborted), lease_lost is emitted, no more turns."""
    daemon = redis_daemon(daemon_factory, redis_server, "gamma")
    daemon.start_run(agent("sleeper"), run_id="stolen", sigkill_delay_s=0.5)
    pid = daemon.wait_event("stolen", "turn_started")["data"]["pid"]
    key = "codi:api:run:stolen:lock"
    assert redis_server.client().get(key).startswith("gamma:")
    redis_server.client().set(key, "thief:0123", px=60_000)
    lost = daemon.wait_event("stolen", "lease_lost")
    assert lost["data"] == {"holder": "thief:0123"}
    completed = daemon.wait_event("stolen", "turn_completed")
    assert completed["data"]["outcome"] == "aborted"
    wait_until(
        lambda: (
            not Path(f"/proc/{pid}").exists() or b") Z" in Path(f"/proc/{pid}/stat").read_bytes()
        ),
        what="the agent to be stopped",
    )
    snapshot = daemon.call("run.status", {"run_id": "stolen"})
    assert snapshot["current_turn"] == 1 and snapshot["pid"] is None
    assert redis_server.client().get(key) == "thief:0123"  # never released: it is not ours


def test_lease_is_renewed_while_a_turn_runs(daemon_factory, redis_server) -> None:
    """A turn longer than lease_ttl_s keeps its lease: renewal extends it."""
    daemon = redis_daemon(daemon_factory, redis_server, "delta")
    daemon.start_run(agent("sleeper", 4), run_id="long", max_turns=1)
    daemon.wait_state("long", "completed", timeout=20)
    kinds = [e["type"] for e in daemon.events("long")]
    assert "lease_lost" not in kinds
