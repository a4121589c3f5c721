"""Live-stream load: SSE clients on ``GET /api/v1/events`` while chatty runs print.

One daemon, two phases with the same work: ``--runs`` runs (default 50) of
``bench/agents/steady.py`` each print ``--rate`` lines a second for ``--seconds``
seconds. The floor phase has one SSE client on the all-runs stream; the load
phase has ``--clients`` (default 200), spread over ``--procs`` client processes.

* **delivery latency**: a client's ``time.time()`` when it read an event, minus the
  event's ``ts`` (the daemon's ``time.time()`` when it was appended): same machine,
  same clock. p50 and p99 over every event every client read.
* **daemon CPU**: utime + stime of the daemon (``/proc/<pid>/stat``) from the moment
  the streams are open to the moment every client has read the last event, per
  second of the phase and per event delivered.

The clients share the machine with the daemon (2 cores here): their own parsing
is in the load phase's figures. ``python -m bench.bench_sse [--clients N] ...``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from bench.common import (
    AGENTS_DIR,
    PY,
    REPO_DIR,
    BenchResult,
    Daemon,
    Row,
    cpu_seconds,
    open_daemon,
    percentile,
    report,
)

DRAIN_TIMEOUT_S = 300.0


# -- the client processes --------------------------------------------------------------------------


# Each event's data line starts with these fields, in this order (codyd.model.events.to_wire).
EVENT_HEAD = re.compile(rb'^data: \{"seq":\d+,"gid":(\d+),"run_id":"[^"]*","ts":([0-9.e+-]+)', re.M)


class ChunkedEvents:
    """Server-sent events from a chunked HTTP/1.1 body, kept as cheap as a client can be.

    No JSON is parsed: the gid and ts are read from the head of each data line, so the
    client's own cost stays small beside the daemon's.
    """

    def __init__(self) -> None:
        self.raw = b""
        self.body = b""
        self.size: int | None = None
        self.ended = False

    def feed(self, data: bytes) -> list[tuple[int, float]]:
        self.raw += data
        while not self.ended:
            if self.size is None:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                self.size = int(self.raw[:line_end].split(b";")[0], 16)
                self.raw = self.raw[line_end + 2 :]
                self.ended = self.size == 0
            elif len(self.raw) >= self.size + 2:
                self.body += self.raw[: self.size]
                self.raw = self.raw[self.size + 2 :]
                self.size = None
            else:
                break
        cut = self.body.rfind(b"\n\n")
        if cut < 0:
            return []
        complete, self.body = self.body[: cut + 2], self.body[cut + 2 :]
        return [(int(gid), float(ts)) for gid, ts in EVENT_HEAD.findall(complete)]


def client_main(port: int, streams: int, out: Path) -> None:
    """``streams`` SSE streams; prints ``ready`` once all are open, reads the last gid on stdin."""
    import trio

    latencies = array("d")
    last_gids = [0] * streams
    opened = [0]
    all_open = trio.Event()
    request = b"GET /api/v1/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"

    async def follow(index: int) -> None:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            head, _, rest = head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
                raise RuntimeError(f"unexpected answer: {head[:200]!r}")
            opened[0] += 1
            if opened[0] == streams:
                all_open.set()
            events = ChunkedEvents()
            data = rest
            while data or not events.ended:
                now = time.time()
                for gid, ts in events.feed(data):
                    latencies.append(now - ts)
                    last_gids[index] = gid
                data = await stream.receive_some(262144)
                if not data:
                    return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(follow, index)
            with trio.fail_after(60):
                await all_open.wait()
            print("ready", flush=True)
            target = int(await trio.to_thread.run_sync(sys.stdin.readline))
            with trio.fail_after(DRAIN_TIMEOUT_S):
                while min(last_gids) < target:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()

    trio.run(main)
    out.write_bytes(latencies.tobytes())
    print("done", flush=True)


class Clients:
    """``total`` streams in ``procs`` processes of :func:`client_main`."""

    def __init__(self, port: int, total: int, procs: int, workdir: Path) -> None:
        procs = max(1, min(procs, total))
        shares = [total // procs + (1 if n < total % procs else 0) for n in range(procs)]
        self.outputs = [workdir / f"lat-{total}-{n}.bin" for n in range(procs)]
        self.procs = [
            subprocess.Popen(
                [PY, "-m", "bench.bench_sse", "client", str(port), str(share), str(out)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO_DIR,
            )
            for share, out in zip(shares, self.outputs, strict=True)
        ]

    def wait_ready(self) -> None:
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"an SSE client process did not open its streams: {line!r}")

    def drain(self, last_gid: int) -> list[float]:
        """Tell every process the last gid; their latencies once all have read it."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{last_gid}\n")
            proc.stdin.flush()
        for proc in self.procs:
            proc.wait(DRAIN_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"an SSE client process exited {proc.returncode}")
        found: list[float] = []
        for out in self.outputs:
            values = array("d")
            values.frombytes(out.read_bytes())
            found.extend(values)
        return found

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- the phases ------------------------------------------------------------------------------------


def start_runs(daemon: Daemon, phase: str, args: argparse.Namespace) -> list[str]:
    command = [PY, str(AGENTS_DIR / "steady.py"), str(args.rate), str(args.seconds)]
    return [
        daemon.call(
            "run.start",
            {
                "agent": "command",
                "command": command,
                "workspace": str(daemon.workspace(f"ws-{phase}-{n}")),
                "prompt": "p",
                "max_turns": 1,
            },
        )["run_id"]
        for n in range(args.runs)
    ]


def phase(
    daemon: Daemon, port: int, name: str, streams: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    clients = Clients(port, streams, args.procs, workdir)
    try:
        clients.wait_ready()
        cpu_before = cpu_seconds(daemon.pid)
        began = time.perf_counter()
        run_ids = start_runs(daemon, name, args)
        for run_id in run_ids:
            daemon.wait_terminal(run_id, timeout=DRAIN_TIMEOUT_S)
        last_gid = max(daemon.events(run_id)[-1]["gid"] for run_id in run_ids)
        snapshots = [daemon.call("run.status", {"run_id": run_id}) for run_id in run_ids]
        latencies = clients.drain(last_gid)
        elapsed = time.perf_counter() - began
        cpu = cpu_seconds(daemon.pid) - cpu_before
    finally:
        clients.kill()
    return {
        "streams": streams,
        "last_gid": last_gid,
        "deliveries": len(latencies),
        "elapsed_s": elapsed,
        "daemon_cpu_s": cpu,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies),
        # How long each run took, start to end: SSE clients must not slow runs down.
        "run_wall_s": sum(s["finished_at"] - s["started_at"] for s in snapshots) / len(snapshots),
    }


def run(args: argparse.Namespace) -> BenchResult:
    from bench.bench_metrics import _free_port

    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cdyb-sse-"))
    config = workdir / "codyd.toml"
    config.write_text(
        f'http_listen = "127.0.0.1:{port}"\nmax_active_runs = {max(64, args.runs)}\n'
        "keepalive_s = 1\n[http]\nanonymous_read = true\n"
    )
    with open_daemon("--config", str(config)) as daemon:
        floor = phase(daemon, port, "floor", 1, args, workdir)
        load = phase(daemon, port, "load", args.clients, args, workdir)
    floor_cpu = floor["daemon_cpu_s"] / floor["elapsed_s"]
    load_cpu = load["daemon_cpu_s"] / load["elapsed_s"]
    rows = [
        Row(f"SSE delivery p50 ({args.clients} clients vs 1)", load["p50_s"], floor["p50_s"], "s"),
        Row(f"SSE delivery p99 ({args.clients} clients vs 1)", load["p99_s"], floor["p99_s"], "s"),
        Row("daemon CPU, share of one core", load_cpu * 100, floor_cpu * 100, "%"),
        Row(
            "daemon CPU per event delivered",
            load["daemon_cpu_s"] * 1e6 / load["deliveries"],
            floor["daemon_cpu_s"] * 1e6 / floor["deliveries"],
            "µs",
        ),
        Row("run wall time, mean", load["run_wall_s"], floor["run_wall_s"], "s"),
        Row("events delivered", load["deliveries"], floor["deliveries"], "count"),
    ]
    details = {
        "runs": args.runs,
        "rate_lines_per_s": args.rate,
        "seconds": args.seconds,
        "client_procs": args.procs,
        "floor": floor,
        "load": load,
    }
    return BenchResult("sse", rows, details)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        client_main(int(argv[1]), int(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sse", description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--rate", type=float, default=10.0, help="lines a second per run")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each run prints")
    return report([run(parser.parse_args(argv))], "sse")


if __name__ == "__main__":
    sys.exit(main())
