"""Load test: many clients at once against codyd supervising many live runs.

``python -m bench.scale.load [--clients 200] [--runs 200] [--duration 60] [--rate 5]``

codyd supervises ``--runs`` live agents (``sleep``); ``--clients`` clients, each on
its own connection, spread over ``--workers`` processes (asyncio, raw msgpack
frames), send a mixed stream for ``--duration`` seconds: ``run.status``,
``run.list`` (the default page), a ``run.events`` follow as ``codyctl tail -f`` makes
it (from the last 20 events; latency until the first; held ``HOLD_S``, then
cancelled), ``run.pause`` and ``run.resume`` on
random runs. Each client waits an exponentially distributed pause (mean
1/``--rate`` s) between requests. Reported per method: calls, p50, p99, max and
errors (error responses, broken connections, answers slower than
``TIMEOUT_S``); targets: no error, p99 < 50 ms. Writes
``bench/results/scale_load.json``; exit status 1 if a target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from bench.common import PY
from bench.scale import procfs
from bench.scale.codyd_fleet import CodydFleet
from bench.scale.fleet import remove_directories, running, sleep_argv, sleepers
from bench.scale.report import Quantiles, ScaleRow, format_value, save

HEADER = struct.Struct(">I")
WEIGHTS = {"status": 30, "list": 20, "events-follow": 20, "pause": 15, "resume": 15}
HOLD_S = 0.5
SLOW_S = 0.020  # calls slower than this are listed with their time, for diagnosis
RECENT = 20  # events a follow starts with, as codyctl tail -f
TIMEOUT_S = 10.0
MAX_P99_S = 0.050


class Failure(Exception):
    """A call that did not succeed: an error response, a lost connection, a timeout."""


class Connection:
    """One client connection speaking codyd's framing; one request at a time (plus a cancel)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next_id = 1

    @classmethod
    async def open(cls, socket_path: str) -> Connection:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        return cls(reader, writer)

    def send(self, method: str, params: dict[str, Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        body = msgpack.packb({"id": request_id, "method": method, "params": params})
        self.writer.write(HEADER.pack(len(body)) + body)
        return request_id

    async def frame(self) -> dict[str, Any]:
        header = await self.reader.readexactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        frame: dict[str, Any] = msgpack.unpackb(await self.reader.readexactly(length))
        if "error" in frame:
            error = frame["error"]
            raise Failure(f"{error.get('code')}: {error.get('message')}")
        return frame

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        request_id = self.send(method, params)
        while True:
            frame = await self.frame()
            if frame.get("id") == request_id and "result" in frame:
                return frame["result"]

    async def follow(self, run_id: str) -> float:
        """Follow a run as ``codyctl tail -f`` does: from its last ``RECENT`` events on.

        The latency is from the ``run.events`` request to its first event (the
        ``run.status`` before it is not counted); the stream is held, then cancelled.
        """
        last_seq = (await self.call("run.status", {"run_id": run_id}))["last_seq"]
        began = time.perf_counter()
        params = {"run_id": run_id, "after": max(0, last_seq - RECENT), "follow": True}
        stream_id = self.send("run.events", params)
        while True:
            frame = await self.frame()
            if frame.get("id") == stream_id and "event" in frame:
                first = time.perf_counter() - began
                break
            if frame.get("id") == stream_id and "result" in frame:
                raise Failure(f"the stream ended before any event: {frame['result']}")
        # Held open; what arrives meanwhile waits in the reader's buffer (never cut mid-frame).
        await asyncio.sleep(HOLD_S)
        cancel_id = self.send("rpc.cancel", {"id": stream_id})
        ended = cancelled = False
        while not (ended and cancelled):
            frame = await self.frame()
            if frame.get("id") == stream_id and "result" in frame:
                ended = True
                if frame["result"].get("end") != "cancelled":
                    raise Failure(f"the stream ended {frame['result']}, expected cancelled")
            elif frame.get("id") == cancel_id:
                cancelled = True
        return first

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def one_call(conn: Connection, method: str, run_id: str) -> float:
    if method == "events-follow":
        return await conn.follow(run_id)
    params: dict[str, Any] = {"run_id": run_id}
    name = {"status": "run.status", "pause": "run.pause", "resume": "run.resume"}.get(method)
    if method == "list":
        name, params = "run.list", {}
    assert name is not None
    began = time.perf_counter()
    await conn.call(name, params)
    return time.perf_counter() - began


async def client(
    connected: Awaitable[Connection],
    socket_path: str,
    run_ids: list[str],
    rate: float,
    start_at: float,
    end_at: float,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    methods, weights = list(WEIGHTS), list(WEIGHTS.values())
    latencies: dict[str, list[float]] = {method: [] for method in methods}
    errors: dict[str, list[str]] = {method: [] for method in methods}
    slow: list[tuple[float, str, float]] = []
    conn = await connected
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    try:
        while True:
            await asyncio.sleep(rng.expovariate(rate))
            if time.monotonic() >= end_at:
                break
            method = rng.choices(methods, weights)[0]
            try:
                latency = await asyncio.wait_for(
                    one_call(conn, method, rng.choice(run_ids)), TIMEOUT_S + HOLD_S
                )
            except (Failure, OSError, EOFError, TimeoutError) as exc:
                errors[method].append(f"{type(exc).__name__}: {exc}")
                await conn.close()
                conn = await Connection.open(socket_path)
                continue
            latencies[method].append(latency)
            if latency > SLOW_S:
                slow.append((round(time.monotonic() - start_at, 3), method, latency))
    finally:
        await conn.close()
    return {"latencies": latencies, "errors": errors, "slow": slow}


async def worker_main(args: argparse.Namespace) -> dict[str, Any]:
    run_ids = args.run_ids.split(",")
    end_at = args.start_at + args.duration
    # Connected one after another before the start: a storm of connects would overflow
    # the listen backlog, which asyncio reports as a connected socket that is not.
    connections = [await Connection.open(args.socket) for _ in range(args.clients)]
    outcomes = await asyncio.gather(
        *(
            client(_ready(conn), args.socket, run_ids, args.rate, args.start_at, end_at,
                   args.seed + index)
            for index, conn in enumerate(connections)
        )
    )  # fmt: skip
    merged = _empty()
    for outcome in outcomes:
        _merge(merged, outcome)
    return merged


def _empty() -> dict[str, Any]:
    return {"latencies": {m: [] for m in WEIGHTS}, "errors": {m: [] for m in WEIGHTS}, "slow": []}


def _merge(merged: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("latencies", "errors"):
        for method, values in part[key].items():
            merged[key][method].extend(values)
    merged["slow"].extend(part["slow"])


async def _ready(conn: Connection) -> Connection:
    return conn


def spawn_workers(
    fleet: CodydFleet, clients: int, workers: int, rate: float, duration: float
) -> tuple[list[subprocess.Popen[bytes]], float]:
    run_ids = ",".join(program.name for program in fleet.programs)
    start_at = time.monotonic() + 5.0  # after every worker has started and connected
    procs = []
    for index in range(workers):
        share = clients // workers + (1 if index < clients % workers else 0)
        argv = [
            *(PY, "-m", "bench.scale.load", "--worker", "--socket", str(fleet.socket)),
            *("--clients", str(share), "--rate", str(rate), "--duration", str(duration)),
            *("--start-at", repr(start_at), "--run-ids", run_ids, "--seed", str(index * 1000)),
        ]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=Path.cwd()))
    return procs, start_at


def collect(procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    merged = _empty()
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a load worker exited {proc.returncode}")
        _merge(merged, json.loads(out))
    merged["slow"].sort()
    return merged


def rows_for(merged: dict[str, Any]) -> list[ScaleRow]:
    rows = []
    for method in WEIGHTS:
        values = merged["latencies"][method]
        errors = len(merged["errors"][method])
        p99 = Quantiles.of(values).p99 if values else None
        rows.append(ScaleRow(f"{method}: p99", "s", p99, target="< 50 ms",
                             passed=p99 is not None and p99 < MAX_P99_S))  # fmt: skip
        rows.append(ScaleRow(f"{method}: errors", "count", float(errors), target="0",
                             passed=errors == 0))  # fmt: skip
    return rows


def load_table(merged: dict[str, Any], duration: float) -> str:
    """One line per method: calls, p50, p99, max, errors, and whether its targets were met."""
    lines = [
        "| method | calls | p50 | p99 | max | errors | target | pass/fail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in (*WEIGHTS, "all"):
        if method == "all":
            values = [v for vs in merged["latencies"].values() for v in vs]
            errors = sum(len(e) for e in merged["errors"].values())
        else:
            values, errors = merged["latencies"][method], len(merged["errors"][method])
        if not values:
            lines.append(f"| {method} | 0 | — | — | — | {errors} | p99 < 50 ms, 0 errors | FAIL |")
            continue
        q = Quantiles.of(values)
        passed = q.p99 < MAX_P99_S and errors == 0
        cells = [method, f"{q.count:,}", format_value(q.p50, "s"), format_value(q.p99, "s"),
                 format_value(q.max, "s"), str(errors), "p99 < 50 ms, 0 errors",
                 "pass" if passed else "FAIL"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(len(v) for v in merged["latencies"].values())
    lines.append(f"\n{total:,} calls answered in {duration:g} s ({total / duration:,.0f}/s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s of each client")
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--run-ids", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(worker_main(args))))
        return 0
    try:
        with running(CodydFleet(sleepers(args.runs, sleep_argv()))) as fleet:
            tracker = procfs.SchedTracker(fleet.pid)
            procs, start_at = spawn_workers(
                fleet, args.clients, args.workers, args.rate, args.duration
            )
            time.sleep(max(0.0, start_at - time.monotonic()))
            spent, seconds = tracker.over(args.duration)
            merged = collect(procs)
            rss = procfs.rss_mib(fleet.pid)
            states = fleet.call("run.list", {"limit": 1000})["runs"]
    finally:
        remove_directories()
    rows = rows_for(merged)
    cpu = spent.cpu_ns / 1e9 / seconds * 100
    print(load_table(merged, args.duration))
    print(f"daemon CPU during the load: {cpu:.0f} % of a core; RSS after it: {rss:.1f} MiB")
    first_errors = {m: errors[:5] for m, errors in merged["errors"].items() if errors}
    if first_errors:
        print(f"\nfirst errors: {json.dumps(first_errors, indent=2)}")
    details = {
        "options": vars(args),
        "weights": WEIGHTS,
        "hold_s": HOLD_S,
        "errors": merged["errors"],
        "quantiles": {m: Quantiles.of(v).__dict__ for m, v in merged["latencies"].items() if v},
        "daemon_cpu_percent": cpu,
        "daemon_rss_mib": rss,
        "calls_per_s": sum(len(v) for v in merged["latencies"].values()) / args.duration,
        "run_states_after": sorted({run["state"] for run in states}),
        "slow_calls": merged["slow"],
    }
    path = save("scale_load", rows, details)
    print(f"\nresults written to {path}")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
