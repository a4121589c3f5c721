"""The Redis mirror under load: events from an agent through the store into Redis Streams.

The floor is redis-py's own pipelined XADD (pipelines of 1,000 events, two XADDs each, as
the mirror sends them) of the same entries, read back from Redis, into other keys of the
same redis-server, measured in the same run. Rows:

* **events/s, agent → store → Redis**: an agent prints sentinel lines as fast as it can;
  from ``run.start`` until the run's last event is in its Redis stream.
* **events/s, backlog drain**: the same run made while Redis is down; from the first entry
  to the last once Redis is back: what the mirror alone sustains.
* **lag at 10,000 events/s**: an agent paced at 10,000 lines/s for 5 s; every 20 ms the
  age of the newest entry of ``{prefix}events`` (now − its ``ts``) is sampled.

``python -m bench.bench_mirror``.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    PY,
    BenchResult,
    Daemon,
    Row,
    open_daemon,
    report,
    running,
    short_tempdir,
    terminate,
)

PREFIX = "codi:api:"
EVENTS = 50_000
ROUNDS = 3
BATCH = 1000
LAG_RATE = 10_000
LAG_SECONDS = 5
LAG_SAMPLE_S = 0.02
RUN_MAXLEN, GLOBAL_MAXLEN = 10_000, 100_000  # codyd's defaults, used by the floor too
THROUGHPUT_TARGET = 0.5
LAG_TARGET_S = 1.0
TIMEOUT_S = 120.0

# Prints argv[2] sentinel lines at argv[1] lines/s (0: as fast as it can).
SENTINEL_AGENT = """
import sys, time
sys.stdin.read()
rate, count = float(sys.argv[1]), int(sys.argv[2])
write, began, printed = sys.stdout.write, time.monotonic(), 0
while printed < count:
    due = count if rate <= 0 else min(count, int((time.monotonic() - began) * rate) + 1)
    while printed < due:
        write('{"__cody_event__":{"type":"progress","n":%d}}\\n' % printed)
        printed += 1
    sys.stdout.flush()
    if printed < count:
        time.sleep(0.001)
"""


def agent_argv(rate: float, count: int) -> list[str]:
    return [PY, "-c", SENTINEL_AGENT, str(rate), str(count)]


# -- processes -----------------------------------------------------------------------------------


@dataclass
class RedisProcess:
    """redis-server on a loopback port, without persistence, in its own temp dir."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self) -> None:
        argv = [
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)),
            *("--save", "", "--appendonly", "no", "--logfile", str(self.root / "redis.log")),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def open_redis() -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (scripts/test installs it)")
    root = short_tempdir()
    with running(RedisProcess(root, free_port()), root) as server:
        yield server


# -- measurements --------------------------------------------------------------------------------


def newest_seq(client: redis.Redis, run_id: str) -> int:
    top: Any = client.xrevrange(f"{PREFIX}run:{run_id}:events", count=1)
    return int(top[0][0].split(b"-")[0]) if top else 0


def start_run(daemon: Daemon, workspace: Path, rate: float, count: int) -> str:
    params = {
        "workspace": str(workspace),
        "prompt": "print",
        "command": agent_argv(rate, count),
        "max_turns": 1,
    }
    run_id: str = daemon.call("run.start", params)["run_id"]
    return run_id


def wait_in_redis(daemon: Daemon, client: redis.Redis, run_id: str) -> float:
    """Poll until the run is terminal and its last event is in Redis; the perf_counter then."""
    deadline = time.monotonic() + TIMEOUT_S
    last_seq: int | None = None
    next_status = 0.0
    while time.monotonic() < deadline:
        now = time.perf_counter()
        if last_seq is not None and newest_seq(client, run_id) >= last_seq:
            return now
        if last_seq is None and now >= next_status:
            snapshot = daemon.call("run.status", {"run_id": run_id})
            if snapshot["state"] in ("completed", "failed", "cancelled"):
                last_seq = snapshot["last_seq"]
            next_status = now + 0.1
        time.sleep(0.002)
    raise RuntimeError(f"run {run_id} did not reach Redis within {TIMEOUT_S} s")


def measure_end_to_end(daemon: Daemon, client: redis.Redis, workspace: Path) -> float:
    """Events per second from run.start to the run's last event in Redis."""
    began = time.perf_counter()
    run_id = start_run(daemon, workspace, 0, EVENTS)
    ended = wait_in_redis(daemon, client, run_id)
    events: int = daemon.call("run.status", {"run_id": run_id})["last_seq"]
    return events / (ended - began)


def measure_drain(daemon: Daemon, server: RedisProcess, workspace: Path) -> tuple[float, int]:
    """Events per second of a backlog written while Redis was down, once it is back."""
    server.stop()
    run_id = start_run(daemon, workspace, 0, EVENTS)
    snapshot = daemon.call("run.status", {"run_id": run_id})
    while snapshot["state"] != "completed":
        time.sleep(0.05)
        snapshot = daemon.call("run.status", {"run_id": run_id})
    backlog: int = daemon.call("daemon.info")["mirror"]["lag_events"]
    server.start()
    client = server.client()
    deadline = time.monotonic() + TIMEOUT_S
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        count = int(client.xlen(f"{PREFIX}events"))
        now = time.perf_counter()
        if count and first is None:
            first = (now, count)
        if count >= min(backlog, GLOBAL_MAXLEN):
            assert first is not None
            return (count - first[1]) / (now - first[0]), backlog
        time.sleep(0.002)
    raise RuntimeError("the backlog did not drain")


def floor_rate(client: redis.Redis, tag: str) -> float:
    """redis-py's own pipelined XADD of the last run's entries, into other keys: events/s."""
    newest: Any = client.xrevrange(f"{PREFIX}events", count=EVENTS + 100)
    run_id = newest[0][1][b"run_id"]
    entries = [fields for _id, fields in reversed(newest) if fields[b"run_id"] == run_id]
    run_key, global_key = f"floor:{tag}:run:events", f"floor:{tag}:events"
    began = time.perf_counter()
    for start in range(0, len(entries), BATCH):
        pipe = client.pipeline(transaction=False)
        for fields in entries[start : start + BATCH]:
            seq, gid = fields[b"seq"].decode(), fields[b"gid"].decode()
            pipe.xadd(run_key, fields, id=f"{seq}-0", maxlen=RUN_MAXLEN, approximate=True)
            pipe.xadd(global_key, fields, id=f"{gid}-0", maxlen=GLOBAL_MAXLEN, approximate=True)
        pipe.execute()
    elapsed = time.perf_counter() - began
    client.delete(run_key, global_key)
    return len(entries) / elapsed


@dataclass
class LagMeasure:
    rate: float
    samples_s: list[float] = field(default_factory=list)

    @property
    def max_s(self) -> float:
        return max(self.samples_s)


def measure_lag(daemon: Daemon, client: redis.Redis, workspace: Path) -> LagMeasure:
    """Age of the newest entry in Redis, sampled while an agent prints 10,000 events/s.

    Sampling starts with the agent's first event and ends with its last one.
    """
    count = LAG_RATE * LAG_SECONDS
    last = b'"n":%d}' % (count - 1)
    run_id = start_run(daemon, workspace, LAG_RATE, count).encode()
    samples: list[float] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        top: Any = client.xrevrange(f"{PREFIX}events", count=1)
        now = time.time()
        fields = top[0][1] if top else {}
        progress = fields.get(b"run_id") == run_id and fields[b"type"] == b"custom"
        if progress and last in fields[b"data"]:
            break
        if progress:
            samples.append(now - int(fields[b"ts"]) / 1000)
        elif samples:
            break  # the agent's last event went by between two samples
        time.sleep(LAG_SAMPLE_S)
    wait_in_redis(daemon, client, run_id.decode())
    events: Any = client.xrange(f"{PREFIX}run:{run_id.decode()}:events")
    stamps = [int(f[b"ts"]) / 1000 for _id, f in events if f[b"type"] == b"custom"]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    if not samples:
        raise RuntimeError("no lag sample was taken")
    return LagMeasure(rate, samples)


# -- the report ------------------------------------------------------------------------------------


@dataclass
class Measures:
    end_to_end: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    drain: float = 0.0
    backlog: int = 0
    lag: LagMeasure | None = None


def rows_for(m: Measures) -> list[Row]:
    assert m.lag is not None
    e2e, floor = statistics.median(m.end_to_end), statistics.median(m.floor)
    return [
        Row("mirror: events/s, agent → store → Redis", e2e, floor, "count",
            f"≥ {THROUGHPUT_TARGET:.0%} of floor", e2e >= THROUGHPUT_TARGET * floor),
        Row("mirror: events/s, backlog drain", m.drain, floor, "count"),
        Row(f"mirror: lag at {LAG_RATE:,} events/s (max)", m.lag.max_s, None, "s",
            f"< {LAG_TARGET_S:.0f} s", m.lag.max_s < LAG_TARGET_S),
        Row("mirror: lag p50", statistics.median(m.lag.samples_s), None, "s"),
        Row("mirror: rate achieved in the lag run", m.lag.rate, None, "count"),
    ]  # fmt: skip


def run() -> BenchResult:
    measures = Measures()
    with open_redis() as server, open_daemon("--redis-url", server.url) as daemon:
        workspace = daemon.workspace("ws-mirror")
        measures.drain, measures.backlog = measure_drain(daemon, server, workspace)
        client = server.client()
        measure_end_to_end(daemon, client, workspace)  # warm-up
        for round_number in range(ROUNDS):
            measures.end_to_end.append(measure_end_to_end(daemon, client, workspace))
            measures.floor.append(floor_rate(client, str(round_number)))
        measures.lag = measure_lag(daemon, client, workspace)
    details: dict[str, Any] = {
        "events_per_run": EVENTS,
        "pipeline_events": BATCH,
        "end_to_end_events_per_s": measures.end_to_end,
        "floor_events_per_s": measures.floor,
        "drain_events_per_s": measures.drain,
        "drain_backlog_events": measures.backlog,
        "lag": asdict(measures.lag) | {"max_s": measures.lag.max_s},
    }
    return BenchResult("mirror", rows_for(measures), details)


def main() -> int:
    return report([run()], "mirror")


if __name__ == "__main__":
    sys.exit(main())
