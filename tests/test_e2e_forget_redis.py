"""End to end: a forgotten run's keys leave a real redis-server, at once or once it is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from test_e2e_mirror import (
    PREFIX,
    all_events,
    assert_entries_match,
    mirrored,
    stream_entries,
    wait_mirrored,
)

from conftest import Daemon, agent, wait_until
from redis_server import RedisServer

MakeDaemon = Callable[..., Daemon]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.remove()


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    yield server
    server.remove()


def run_keys(run_id: str) -> list[str]:
    return [f"{PREFIX}run:{run_id}:{kind}" for kind in ("events", "meta", "ctl")]


def finished(daemon: Daemon, run_id: str) -> None:
    daemon.start_run(
        agent("printer", 1), run_id=run_id, max_turns=1, workspace=str(daemon.workspace(run_id))
    )
    daemon.wait_state(run_id, "completed")


def in_redis(client: redis.Redis, run_id: str) -> dict[str, bool]:
    found = {key.rsplit(":", 1)[1]: bool(client.exists(key)) for key in run_keys(run_id)}
    found["index"] = client.zscore(f"{PREFIX}runs", run_id) is not None
    return found


ALL = {"events": True, "meta": True, "ctl": True, "index": True}
NONE = {"events": False, "meta": False, "ctl": False, "index": False}


def test_forget_deletes_the_runs_keys(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    daemon = mirrored(daemon_factory, redis_server)
    client = redis_server.client()
    for run_id in ("gone", "kept"):
        finished(daemon, run_id)
        client.xadd(f"{PREFIX}run:{run_id}:ctl", {"action": "pause"})
    wait_mirrored(daemon)
    wait_until(lambda: in_redis(client, "gone") == ALL, what="gone's keys in redis")
    daemon.call("run.forget", {"run_id": "gone"})
    wait_until(lambda: in_redis(client, "gone") == NONE, what="gone's keys to be deleted")
    assert in_redis(client, "kept") == ALL
    # The events stream of all runs keeps what it had (docs/redis.md).
    assert client.xlen(f"{PREFIX}events") > 0


def test_forget_while_redis_is_down_deletes_the_keys_once_it_is_back(
    daemon_factory: MakeDaemon, durable_redis: RedisServer
) -> None:
    """Forget answers at once with Redis down; a restart later, the keys still go."""
    daemon = mirrored(daemon_factory, durable_redis)
    finished(daemon, "late")
    durable_redis.client().xadd(f"{PREFIX}run:late:ctl", {"action": "pause"})
    wait_mirrored(daemon)
    wait_until(lambda: in_redis(durable_redis.client(), "late") == ALL, what="late's keys")
    durable_redis.stop()
    asked = time.monotonic()
    assert daemon.call("run.forget", {"run_id": "late"}) == {"ok": True}
    assert time.monotonic() - asked < 2.0
    daemon.stop()
    daemon.start()
    durable_redis.start()
    client = durable_redis.client()
    wait_until(lambda: in_redis(client, "late") == NONE, 20, "late's keys to be deleted")


def test_meta_follows_an_update(daemon_factory: MakeDaemon, redis_server: RedisServer) -> None:
    """run.update's new name reaches the run's meta hash."""
    daemon = mirrored(daemon_factory, redis_server)
    daemon.start_run(agent("sleeper"), run_id="renamed")
    daemon.wait_event("renamed", "turn_started")
    daemon.call("run.update", {"run_id": "renamed", "name": "second name"})
    client = redis_server.client()
    meta = f"{PREFIX}run:renamed:meta"
    wait_until(lambda: client.hget(meta, "name") == "second name", what="the meta's new name")
    daemon.call("run.cancel", {"run_id": "renamed"})


def test_meta_follows_a_retry(daemon_factory: MakeDaemon, redis_server: RedisServer) -> None:
    """A retried run's meta hash leaves ``failed``: running again, its error cleared."""
    daemon = mirrored(daemon_factory, redis_server)
    client = redis_server.client()
    meta = f"{PREFIX}run:gated:meta"
    daemon.start_run(
        agent("gated", "gate"),
        run_id="gated",
        max_consecutive_failures=1,
        retry_backoff_s=0,
        completion={"pattern": r"^GATE OPEN", "stop_file": None},
    )
    daemon.wait_state("gated", "failed")
    wait_until(
        lambda: client.hget(meta, "state") == "failed" and client.hget(meta, "error.code"),
        what="the meta of the failed run",
    )
    (daemon.workspace() / "gate").touch()
    retried = daemon.call("run.retry", {"run_id": "gated", "reason": "gate opened"})
    assert retried["state"] == "running" and retried["error"] is None
    daemon.wait_state("gated", "completed")
    wait_until(
        lambda: client.hget(meta, "state") == "completed" and client.hget(meta, "error.code") == "",
        what="the meta of the retried run",
    )
    entries = stream_entries(client, f"{PREFIX}run:gated:events")
    assert [fields for _, fields in entries if fields.get("type") == "run_retried"]


def test_a_run_started_again_under_a_forgotten_id_is_mirrored_whole(
    daemon_factory: MakeDaemon, durable_redis: RedisServer
) -> None:
    """Forgotten with Redis down, then started again: its stream ends up the new run's only."""
    daemon = mirrored(daemon_factory, durable_redis)
    daemon.start_run(agent("printer", 5), run_id="again", max_turns=2)
    daemon.wait_state("again", "completed")
    wait_mirrored(daemon)
    durable_redis.stop()
    daemon.call("run.forget", {"run_id": "again"})
    daemon.start_run(
        agent("printer", 1), run_id="again", max_turns=1, workspace=str(daemon.workspace("new"))
    )
    daemon.wait_state("again", "completed")
    durable_redis.start()
    client = durable_redis.client()
    wait_mirrored(daemon)
    own = [event for event in all_events(daemon) if event["run_id"] == "again"]

    def whole() -> bool:
        entries = stream_entries(client, f"{PREFIX}run:again:events")
        meta = client.hget(f"{PREFIX}run:again:meta", "workspace")
        return len(entries) == len(own) and meta == str(daemon.workspace("new"))

    wait_until(whole, 20, "the new run's stream and meta")
    assert_entries_match(stream_entries(client, f"{PREFIX}run:again:events"), own, "seq")
    assert client.zscore(f"{PREFIX}runs", "again") is not None
