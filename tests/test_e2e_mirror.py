"""End to end: the Redis mirror of a real codyd into a real redis-server on loopback."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conftest import Daemon, agent, wait_until
from redis_server import RedisServer

PREFIX = "t:"
MakeDaemon = Callable[..., Daemon]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.remove()


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A redis-server whose data survives a stop and restart (AOF, fsync on every write)."""
    server = RedisServer(appendonly=True).start()
    yield server
    server.remove()


def mirrored(make: MakeDaemon, server: RedisServer, **env: str) -> Daemon:
    settings = {"CODYD_REDIS_URL": server.url, "CODYD_KEY_PREFIX": PREFIX}
    settings.update(env)
    return make(env=settings)


def mirror_info(daemon: Daemon) -> dict[str, Any]:
    return daemon.call("daemon.info")["mirror"]  # type: ignore[no-any-return]


def wait_mirrored(daemon: Daemon, timeout: float = 15.0) -> None:
    def caught_up() -> bool:
        info = mirror_info(daemon)
        return bool(info["connected"] and info["lag_events"] == 0)

    wait_until(caught_up, timeout, "the mirror to catch up")


def log_records(daemon: Daemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]


def count_log(daemon: Daemon, event: str) -> int:
    return sum(1 for record in log_records(daemon) if record.get("event") == event)


def all_events(daemon: Daemon) -> list[dict[str, Any]]:
    with daemon.client() as client:
        return list(client.stream("run.events", {"after": 0}))


def expected_fields(event: dict[str, Any]) -> dict[str, str]:
    """The entry fields of docs/redis.md "Stream entries" for a stored event, computed here independently of codyd."""
    return {
        "seq": str(event["seq"]),
        "gid": str(event["gid"]),
        "run_id": event["run_id"],
        "ts": str(int(event["ts"] * 1000)),
        "type": event["type"],
        "turn": "" if event["turn"] is None else str(event["turn"]),
    }


def assert_entries_match(entries: list[Any], events: list[dict[str, Any]], id_field: str) -> None:
    assert len(entries) == len(events), f"{len(entries)} entries for {len(events)} events"
    for (entry_id, fields), event in zip(entries, events, strict=True):
        assert entry_id == f"{event[id_field]}-0"
        data = fields.pop("data")
        assert fields == expected_fields(event)
        assert json.loads(data) == event["data"]
        assert ", " not in data or ", " in json.dumps(event["data"]), "data is compact JSON"


def stream_entries(client: redis.Redis, key: str) -> list[Any]:
    entries: Any = client.xrange(key)
    return list(entries)


def assert_streams_match(daemon: Daemon, client: redis.Redis) -> list[dict[str, Any]]:
    """Both streams hold exactly the store's events, in order: nothing missing, nothing twice."""
    events = all_events(daemon)
    assert_entries_match(stream_entries(client, f"{PREFIX}events"), events, "gid")
    for run_id in sorted({event["run_id"] for event in events}):
        own = [event for event in events if event["run_id"] == run_id]
        assert_entries_match(stream_entries(client, f"{PREFIX}run:{run_id}:events"), own, "seq")
    return events


def status(daemon: Daemon, run_id: str) -> dict[str, Any]:
    return daemon.call("run.status", {"run_id": run_id})  # type: ignore[no-any-return]


def test_outage_mid_run_loses_and_repeats_nothing(
    daemon_factory: MakeDaemon, durable_redis: RedisServer
) -> None:
    """Redis stopped while an agent prints and restarted on the same port: both streams end equal to the store, entry by entry."""
    daemon = mirrored(daemon_factory, durable_redis)
    stop_file = daemon.workspace() / "stop"
    run_id = daemon.start_run(agent("sentinel_stream", 1000, 30000, stop_file), max_turns=1)[
        "run_id"
    ]
    client = durable_redis.client()
    wait_until(lambda: client.xlen(f"{PREFIX}run:{run_id}:events") >= 200, what="entries")
    durable_redis.stop()
    wait_until(lambda: not mirror_info(daemon)["connected"], what="the mirror to see the outage")
    outage_seq = status(daemon, run_id)["last_seq"]
    wait_until(
        lambda: (
            status(daemon, run_id)["last_seq"] >= outage_seq + 300
            and count_log(daemon, "mirror retrying") >= 3
        ),
        what="the run to go on while Redis is down",
    )
    info = mirror_info(daemon)
    assert info["lag_events"] > 0 and "connect" in info["last_error"].lower()
    assert status(daemon, run_id)["state"] == "running"
    durable_redis.start()
    wait_until(lambda: mirror_info(daemon)["connected"], 15, "the mirror to reconnect")
    stop_file.touch()
    daemon.wait_state(run_id, "completed")
    wait_mirrored(daemon)
    events = assert_streams_match(daemon, durable_redis.client())
    assert len(events) > outage_seq + 300
    assert count_log(daemon, "mirror disconnected") == 1  # once per transition, not per retry
    assert count_log(daemon, "mirror connected") == 2
    assert count_log(daemon, "mirror caught up") >= 2


def test_redis_down_at_start_drains_later(daemon_factory: MakeDaemon) -> None:
    """With Redis down at start runs go on; info shows the backlog, and it drains once Redis starts."""
    server = RedisServer()  # not started yet
    try:
        daemon = mirrored(daemon_factory, server)
        run_id = daemon.start_run(agent("sentinel_stream", 2000, 200), max_turns=1)["run_id"]
        daemon.wait_state(run_id, "completed")
        wait_until(lambda: count_log(daemon, "mirror retrying") >= 3, what="retries")
        info = mirror_info(daemon)
        assert info["enabled"] is True and info["connected"] is False
        assert info["lag_events"] == len(all_events(daemon)) > 200
        assert info["last_error"]
        assert count_log(daemon, "mirror disconnected") == 1
        server.start()
        wait_mirrored(daemon)
        assert_streams_match(daemon, server.client())
        assert count_log(daemon, "mirror caught up") == 1
    finally:
        server.remove()


def test_resend_after_crash_is_recognised(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    """A crash between XADD and the cursor's save re-sends entries on restart: no duplicates, no gaps."""
    daemon = mirrored(daemon_factory, redis_server)
    first = daemon.start_run(agent("sentinel_stream", 5000, 300), max_turns=1)["run_id"]
    daemon.wait_state(first, "completed")
    wait_mirrored(daemon)
    sent = len(all_events(daemon))
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(10)
    with sqlite3.connect(daemon.state_dir / "codyd.db") as conn:
        conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('mirror.cursor', '5')")
    daemon.start()
    wait_mirrored(daemon)
    repeated = sum(
        record["entries"]
        for record in log_records(daemon)
        if record.get("event") == "mirror skipped entries already in redis"
    )
    assert repeated == 2 * (sent - 5)  # each event once in its run's stream, once in the global one
    assert (
        count_log(daemon, "mirror found an entry in redis it did not write; holding the stream")
        == 0
    )
    assert mirror_info(daemon)["last_error"] is None
    second = daemon.start_run(agent("sentinel_stream", 5000, 50), max_turns=1)["run_id"]
    daemon.wait_state(second, "completed")
    wait_mirrored(daemon)
    assert_streams_match(daemon, redis_server.client())


def expected_meta(snapshot: dict[str, Any]) -> dict[str, str]:
    """The meta hash docs/redis.md "Run meta" describes for a snapshot, computed here independently of codyd."""

    def ms(seconds: float | None) -> str:
        return "" if seconds is None else str(int(seconds * 1000))

    def txt(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    stats, error = snapshot["stats"], snapshot["error"] or {}
    wait, attention = snapshot.get("wait") or {}, snapshot.get("attention") or {}
    return {
        "runId": snapshot["run_id"],
        "name": snapshot["name"],
        "state": snapshot["state"],
        "phase": snapshot["phase"],
        "workspace": snapshot["workspace"],
        "agent": snapshot["agent"],
        "pid": txt(snapshot["pid"]),
        "currentTurn": txt(snapshot["current_turn"]),
        "sessionId": txt(snapshot["session_id"]),
        "stats.turns": txt(stats["turns"]),
        "stats.tokens": txt(stats["tokens"]["total"]),
        "stats.tokens.input": txt(stats["tokens"]["input"]),
        "stats.tokens.output": txt(stats["tokens"]["output"]),
        "stats.tokens.cached": txt(stats["tokens"]["cached"]),
        "stats.costUsd": txt(stats["cost_usd"]),
        "completion.detected": txt(snapshot["completion"]["detected"]),
        "completion.reason": txt(snapshot["completion"]["reason"]),
        "completion.line": txt(snapshot["completion"]["line"]),
        "error.code": txt(error.get("code")),
        "error.message": txt(error.get("message")),
        "error.retryable": txt(error.get("retryable")),
        "wait.reason": txt(wait.get("reason")),
        "wait.until": ms(wait.get("until")),
        "wait.account": txt(wait.get("account")),
        "attention.reason": txt(attention.get("reason")),
        "attention.message": txt(attention.get("message")),
        "createdAt": ms(snapshot["created_at"]),
        "startedAt": ms(snapshot["started_at"]),
        "updatedAt": ms(snapshot["updated_at"]),
        "finishedAt": ms(snapshot["finished_at"]),
        "lastActivity": ms(snapshot["last_activity"]),
        "node": snapshot["node"],
        "lastSeq": txt(snapshot["last_seq"]),
    }


def test_meta_index_groups_and_heartbeat(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    """Meta equals run.status, the run is indexed by creation time, groups exist, the heartbeat has a TTL."""
    daemon = mirrored(
        daemon_factory,
        redis_server,
        CODYD_MIRROR_GROUPS='["audit", "ui"]',
        CODYD_HEARTBEAT_S="1",
        CODYD_NODE="node-a",
    )
    client = redis_server.client()
    failed = daemon.start_run(agent("failer"), max_consecutive_failures=1, retry_backoff_s=0)
    daemon.wait_state(failed["run_id"], "failed")
    run_id = daemon.start_run(agent("sentinels"), max_turns=1, name="meta")["run_id"]
    done = daemon.wait_state(run_id, "completed")
    assert done["stats"]["tokens"]["total"] > 0 and done["stats"]["cost_usd"] > 0
    wait_mirrored(daemon)
    for rid in (failed["run_id"], run_id):
        key = f"{PREFIX}run:{rid}:meta"

        def meta_is_status(key: str = key, rid: str = rid) -> bool:
            return client.hgetall(key) == expected_meta(status(daemon, rid))

        wait_until(meta_is_status, what=f"the meta of {rid} to equal its status")
        created_ms = int(status(daemon, rid)["created_at"] * 1000)
        assert client.zscore(f"{PREFIX}runs", rid) == created_ms
        groups = client.xinfo_groups(f"{PREFIX}run:{rid}:events")
        assert sorted(g["name"] for g in groups) == ["audit", "ui"]
        assert all(g["last-delivered-id"] == "0-0" for g in groups)
    assert client.hgetall(f"{PREFIX}run:{failed['run_id']}:meta")["error.retryable"] == "true"
    read: Any = client.xreadgroup(
        "audit", "c1", {f"{PREFIX}run:{run_id}:events": ">"}, count=10_000
    )
    assert len(read[0][1]) == status(daemon, run_id)["last_seq"]
    beat_key = f"{PREFIX}daemon:node-a"
    beat = wait_until(lambda: client.hgetall(beat_key), what="the heartbeat")
    assert set(beat) == {"pid", "version", "startedAt", "ts", "activeRuns"}
    info = daemon.call("daemon.info")
    assert beat["pid"] == str(info["pid"]) and beat["version"] == info["version"]
    assert beat["startedAt"] == str(int(info["started_at"] * 1000))
    assert 0 < client.pttl(beat_key) <= 3000
    daemon.stop()
    assert not client.exists(beat_key)  # a clean shutdown takes the heartbeat away


def test_control_entries_apply_once(daemon_factory: MakeDaemon, redis_server: RedisServer) -> None:
    """ctl entries pause, resume and cancel within 1 s; invalid ones warn; none is applied twice after a restart."""
    daemon = mirrored(daemon_factory, redis_server)
    client = redis_server.client()
    run_id = daemon.start_run(agent("ticker", 0.05, 400), run_id="steered")["run_id"]
    daemon.wait_event(run_id, "turn_started")
    ctl = f"{PREFIX}run:{run_id}:ctl"
    pause_id = str(client.xadd(ctl, {"action": "pause", "now": "true", "reason": "from redis"}))
    daemon.wait_state(run_id, "paused")
    client.xadd(ctl, {"action": "pause"})  # an idempotent no-op, as over RPC
    client.xadd(ctl, {"action": "jump"})
    client.xadd(ctl, {"action": "resume", "now": "true"})
    client.xadd(ctl, {"action": "resume"})
    daemon.wait_state(run_id, "running")
    daemon.stop()
    daemon.start()
    client.xadd(ctl, {"action": "cancel", "reason": "enough"})
    daemon.wait_state(run_id, "cancelled")
    events = daemon.events(run_id)
    controls = [e for e in events if e["type"] == "control_received"]
    assert [(e["data"]["action"], e["data"]["source"], e["data"]["reason"]) for e in controls] == [
        ("pause", "redis", "from redis"),
        ("resume", "redis", None),
        ("cancel", "redis", "enough"),
    ]
    warnings = [e["data"]["message"] for e in events if e["type"] == "warning"]
    assert len(warnings) == 2
    assert "action: expected pause, resume or cancel, got 'jump'" in warnings[0]
    assert "now: not accepted with action resume" in warnings[1]
    entry_ms = int(pause_id.split("-")[0])
    assert controls[0]["ts"] * 1000 - entry_ms < 1000  # applied within 1 s


HOLDING = "mirror found an entry in redis it did not write; holding the stream"
REBUILDING = "redis lost the mirror's data; rebuilding it from the store"


def test_foreign_entry_holds_its_stream_and_is_reported(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    """An entry someone else wrote above codyd's next seq is reported and holds that stream only; once removed, the held events follow in order."""
    daemon = mirrored(daemon_factory, redis_server, CODYD_MIRROR_GROUPS='["audit"]')
    client = redis_server.client()
    stop_file = daemon.workspace() / "stop"
    hit = daemon.start_run(
        agent("sentinel_stream", 300, 100_000, stop_file), run_id="hit", max_turns=1
    )
    key = f"{PREFIX}run:{hit['run_id']}:events"
    wait_until(lambda: client.xlen(key) >= 20, what="entries of the run")
    client.xadd(key, {"by": "someone else"}, id="999999-0")
    other = daemon.start_run(
        agent("sentinel_stream", 5000, 300),
        run_id="other",
        max_turns=1,
        workspace=str(daemon.workspace("other")),
    )["run_id"]
    daemon.wait_state(other, "completed")

    def reported() -> str | None:
        error = mirror_info(daemon)["last_error"]
        return error if error and key in error else None

    error = wait_until(reported, what="the conflict in daemon.info")
    assert "999999-0" in error
    stop_file.touch()
    daemon.wait_state("hit", "completed")
    wait_until(
        lambda: client.xlen(f"{PREFIX}events") == len(all_events(daemon)),
        what="the global stream to go on",
    )
    assert mirror_info(daemon)["lag_events"] > 0  # the held events are not in Redis
    warnings = [r for r in log_records(daemon) if r.get("event") == HOLDING]
    assert len(warnings) == 1
    assert warnings[0]["key"] == key and warnings[0]["found"] == "999999-0"
    assert warnings[0]["level"] == "warning"
    events = all_events(daemon)
    assert_entries_match(stream_entries(client, f"{PREFIX}events"), events, "gid")
    own = [event for event in events if event["run_id"] == other]
    assert_entries_match(stream_entries(client, f"{PREFIX}run:{other}:events"), own, "seq")
    held = stream_entries(client, key)
    assert held[-1][0] == "999999-0" and len(held) < status(daemon, "hit")["last_seq"]
    # The operator's fix: the foreign entry goes, and the stream's last ID is ours again.
    client.xdel(key, "999999-0")
    client.execute_command("XSETID", key, held[-2][0])
    wait_until(
        lambda: client.xlen(key) == status(daemon, "hit")["last_seq"], what="the held events"
    )
    wait_mirrored(daemon)
    assert_streams_match(daemon, client)
    read: Any = client.xreadgroup("audit", "c1", {key: ">"}, count=100_000)
    assert len(read[0][1]) == status(daemon, "hit")["last_seq"]
    assert count_log(daemon, "mirror stream conflict resolved; writing its held events") == 1
    assert count_log(daemon, HOLDING) == 1
    assert count_log(daemon, "mirror skipped entries already in redis") == 0


def rebuilt(daemon: Daemon, client: redis.Redis, run_ids: list[str]) -> bool:
    """Index, groups and meta of every run are there, and every stream starts at its first event."""
    for run_id in run_ids:
        stream = f"{PREFIX}run:{run_id}:events"
        first: Any = client.xrange(stream, count=1)
        if (
            client.zscore(f"{PREFIX}runs", run_id) is None
            or client.hget(f"{PREFIX}run:{run_id}:meta", "runId") != run_id
            or not first
            or first[0][0] != "1-0"
            or [g["name"] for g in client.xinfo_groups(stream)] != ["audit"]
        ):
            return False
    first = client.xrange(f"{PREFIX}events", count=1)
    return bool(first) and first[0][0] == "1-0"


def test_rebuilds_after_redis_loses_its_data(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    """After FLUSHALL, and after an empty server on the same port, index, groups, meta and both streams are rebuilt from the store."""
    daemon = mirrored(
        daemon_factory, redis_server, CODYD_MIRROR_GROUPS='["audit"]', CODYD_HEARTBEAT_S="1"
    )
    client = redis_server.client()
    done = daemon.start_run(agent("sentinel_stream", 5000, 200), run_id="done", max_turns=1)[
        "run_id"
    ]
    daemon.wait_state(done, "completed")
    stop_file = daemon.workspace() / "stop"
    daemon.start_run(agent("sentinel_stream", 300, 100_000, stop_file), run_id="live", max_turns=1)
    wait_until(lambda: client.xlen(f"{PREFIX}run:live:events") >= 20, what="entries")
    client.flushall()
    wait_until(lambda: rebuilt(daemon, client, [done, "live"]), 15, "the rebuild after FLUSHALL")
    redis_server.restart()  # not persistent: an empty server on the same port
    client = redis_server.client()
    wait_until(lambda: rebuilt(daemon, client, [done, "live"]), 15, "the rebuild after a restart")
    stop_file.touch()
    daemon.wait_state("live", "completed")
    wait_mirrored(daemon)
    assert_streams_match(daemon, client)
    for run_id in (done, "live"):
        assert client.hgetall(f"{PREFIX}run:{run_id}:meta") == expected_meta(status(daemon, run_id))
        created_ms = int(status(daemon, run_id)["created_at"] * 1000)
        assert client.zscore(f"{PREFIX}runs", run_id) == created_ms
    assert count_log(daemon, REBUILDING) == 2
    assert count_log(daemon, HOLDING) == 0
    assert mirror_info(daemon)["connected"] is True


def test_corrupt_mirror_state_does_not_stop_the_daemon(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    """A cursor that is not a number and unreadable holds are reported; the daemon starts and the mirror sends again, recognised as already there."""
    daemon = mirrored(daemon_factory, redis_server)
    first = daemon.start_run(agent("sentinel_stream", 5000, 100), max_turns=1)["run_id"]
    daemon.wait_state(first, "completed")
    wait_mirrored(daemon)
    daemon.stop()
    with sqlite3.connect(daemon.state_dir / "codyd.db") as conn:
        conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('mirror.cursor', 'x1')")
        conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('mirror.holds', '[{')")
    daemon.start()
    second = daemon.start_run(
        agent("sentinel_stream", 5000, 100), max_turns=1, workspace=str(daemon.workspace("b"))
    )["run_id"]
    daemon.wait_state(second, "completed")
    wait_mirrored(daemon)
    assert_streams_match(daemon, redis_server.client())
    assert (
        count_log(
            daemon, "mirror cursor in the store is not a number; sending again from the start"
        )
        == 1
    )
    assert count_log(daemon, "mirror holds in the store cannot be read; checking every stream") == 1
    assert count_log(daemon, HOLDING) == 0


def test_a_deleted_stream_is_written_again(
    daemon_factory: MakeDaemon, redis_server: RedisServer
) -> None:
    """A run's stream deleted while the run goes on is written again from its first event, groups included, instead of restarting with a gap."""
    daemon = mirrored(daemon_factory, redis_server, CODYD_MIRROR_GROUPS='["audit"]')
    client = redis_server.client()
    stop_file = daemon.workspace() / "stop"
    daemon.start_run(agent("sentinel_stream", 300, 100_000, stop_file), run_id="cut", max_turns=1)
    key = f"{PREFIX}run:cut:events"
    wait_until(lambda: client.xlen(key) >= 20, what="entries")
    client.delete(key)
    wait_until(lambda: count_log(daemon, "mirror stream repaired") == 1, what="the repair")
    stop_file.touch()
    daemon.wait_state("cut", "completed")
    wait_mirrored(daemon)
    assert_streams_match(daemon, client)
    assert [g["name"] for g in client.xinfo_groups(key)] == ["audit"]
    assert count_log(daemon, "mirror stream is gone from redis; writing it again") == 1
    assert count_log(daemon, REBUILDING) == 0  # the marker is there: no data loss
