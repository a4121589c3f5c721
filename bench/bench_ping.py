"""``daemon.ping`` round trips over the Unix socket, against a bare trio + msgpack echo server.

Two shapes: one client calling sequentially, and several client processes at once, each
on its own connections. Both servers run side by side and are measured in alternating
rounds by the same raw blocking-socket client (:class:`bench.common.RawPinger`), so the
client's cost is equal and a change in machine load hits both alike.
``python -m bench.bench_ping``.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from bench.common import (
    BenchResult,
    LatencySummary,
    RawPinger,
    Row,
    ServerProcess,
    cpu_seconds,
    open_daemon,
    open_echo_server,
    report,
    time_block,
)

SERVERS = ("codyd", "floor")
SEQUENTIAL_ROUNDS = 50
SEQUENTIAL_CALLS = 5000  # per server, over all rounds
SEQUENTIAL_WARMUP = 500
CONCURRENT_CLIENTS = 10
CONCURRENT_ROUNDS = 10
CONCURRENT_CALLS = 1000  # per client and server, over all rounds
CONCURRENT_WARMUP = 100
BARRIER_TIMEOUT_S = 60.0
P50_TARGET_RATIO = 1.5

Block = tuple[list[float], float, float]  # latencies, began, ended


@dataclass
class Samples:
    """Latencies pooled over rounds, and the wall time the rounds took."""

    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    server_cpu_s: float = 0.0

    def add(self, latencies: list[float], began: float, ended: float) -> None:
        self.latencies.extend(latencies)
        self.elapsed_s += ended - began

    def summary(self) -> Summary:
        latency = LatencySummary.of(self.latencies, self.elapsed_s)
        return Summary(latency, self.server_cpu_s / len(self.latencies))


@dataclass(frozen=True)
class Summary:
    """Client-side latencies, and the server's CPU time per call (``/proc``, 10 ms ticks)."""

    latency: LatencySummary
    server_cpu_per_call_s: float


def round_order(round_number: int) -> Iterator[str]:
    """Alternate which server goes first, so neither always follows the other."""
    return iter(SERVERS if round_number % 2 == 0 else SERVERS[::-1])


def measure_sequential(servers: dict[str, ServerProcess]) -> dict[str, Summary]:
    """One connection per server; alternating rounds of sequential pings."""
    samples = {name: Samples() for name in SERVERS}
    per_round = SEQUENTIAL_CALLS // SEQUENTIAL_ROUNDS
    with ExitStack() as stack:
        pingers = {
            name: stack.enter_context(RawPinger(servers[name].socket_path)) for name in SERVERS
        }
        for name in SERVERS:
            time_block(pingers[name], SEQUENTIAL_WARMUP)
        for round_number in range(SEQUENTIAL_ROUNDS):
            for name in round_order(round_number):
                cpu_before = cpu_seconds(servers[name].pid)
                samples[name].add(*time_block(pingers[name], per_round))
                samples[name].server_cpu_s += cpu_seconds(servers[name].pid) - cpu_before
    return {name: samples[name].summary() for name in SERVERS}


def _client_process(paths: dict[str, Path], barrier: Barrier, out: Connection) -> None:
    """One concurrent client: warm up on both servers, then ping in step with the others."""
    blocks: dict[str, list[Block]] = {name: [] for name in SERVERS}
    per_round = CONCURRENT_CALLS // CONCURRENT_ROUNDS
    try:
        with ExitStack() as stack:
            pingers = {name: stack.enter_context(RawPinger(paths[name])) for name in SERVERS}
            for name in SERVERS:
                time_block(pingers[name], CONCURRENT_WARMUP)
            for round_number in range(CONCURRENT_ROUNDS):
                for name in round_order(round_number):
                    barrier.wait(BARRIER_TIMEOUT_S)
                    blocks[name].append(time_block(pingers[name], per_round))
    except BaseException as exc:
        barrier.abort()
        out.send(f"{type(exc).__name__}: {exc}")
        raise
    out.send(blocks)


def measure_concurrent(servers: dict[str, ServerProcess]) -> dict[str, Summary]:
    """Client processes ping at once; a round's time runs from the first start to the last end.

    A server's CPU time over the whole measurement (warm-up included) is spread over every
    call it answered in that time.
    """
    paths = {name: servers[name].socket_path for name in SERVERS}
    cpu_before = {name: cpu_seconds(servers[name].pid) for name in SERVERS}
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(CONCURRENT_CLIENTS)
    receivers: list[Connection] = []
    processes = []
    for _ in range(CONCURRENT_CLIENTS):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_client_process, args=(paths, barrier, sender))
        process.start()
        sender.close()
        receivers.append(receiver)
        processes.append(process)
    reports: list[Any] = [receiver.recv() for receiver in receivers]
    cpu_used = {name: cpu_seconds(servers[name].pid) - cpu_before[name] for name in SERVERS}
    for process in processes:
        process.join()
    failures = [item for item in reports if isinstance(item, str)]
    if failures:
        raise RuntimeError(f"a concurrent ping client failed: {failures[0]}")
    summaries = {}
    for name in SERVERS:
        samples = Samples()
        for round_number in range(CONCURRENT_ROUNDS):
            round_blocks: list[Block] = [item[name][round_number] for item in reports]
            latencies = [latency for block in round_blocks for latency in block[0]]
            began = min(block[1] for block in round_blocks)
            ended = max(block[2] for block in round_blocks)
            samples.add(latencies, began, ended)
        timed_share = len(samples.latencies) / (
            len(samples.latencies) + CONCURRENT_CLIENTS * CONCURRENT_WARMUP
        )
        samples.server_cpu_s = cpu_used[name] * timed_share
        summaries[name] = samples.summary()
    return summaries


def rows_for(shape: str, summaries: dict[str, Summary]) -> list[Row]:
    codyd, floor = summaries["codyd"].latency, summaries["floor"].latency
    p50_ok = codyd.p50_s <= P50_TARGET_RATIO * floor.p50_s
    cpu = {name: summaries[name].server_cpu_per_call_s for name in SERVERS}
    return [
        Row(f"ping {shape} p50", codyd.p50_s, floor.p50_s, "s", f"≤ {P50_TARGET_RATIO}×", p50_ok),
        Row(f"ping {shape} p99", codyd.p99_s, floor.p99_s, "s"),
        Row(f"ping {shape} rate", codyd.calls_per_s, floor.calls_per_s, "calls/s"),
        Row(f"ping {shape} server CPU per call", cpu["codyd"], cpu["floor"], "s"),
    ]


def run() -> BenchResult:
    """Start both servers, then measure each shape in alternating rounds."""
    with open_echo_server() as echo, open_daemon() as daemon:
        servers: dict[str, ServerProcess] = {"codyd": daemon, "floor": echo}
        shapes = {
            "sequential": measure_sequential(servers),
            "concurrent": measure_concurrent(servers),
        }
    rows = [row for shape, summaries in shapes.items() for row in rows_for(shape, summaries)]
    details = {
        "sequential": {
            "calls": SEQUENTIAL_CALLS,
            "rounds": SEQUENTIAL_ROUNDS,
            "warmup": SEQUENTIAL_WARMUP,
        },
        "concurrent": {
            "clients": CONCURRENT_CLIENTS,
            "calls_per_client": CONCURRENT_CALLS,
            "rounds": CONCURRENT_ROUNDS,
            "warmup_per_client": CONCURRENT_WARMUP,
        },
        **{
            name: {shape: asdict(summaries[name]) for shape, summaries in shapes.items()}
            for name in SERVERS
        },
    }
    return BenchResult("ping", rows, details)


def main() -> int:
    return report([run()], "ping")


if __name__ == "__main__":
    sys.exit(main())
