"""What one ``GET /metrics`` costs the daemon, with 500 runs in its store.

The daemon's CPU time (``/proc/<pid>/stat``, user + system) over many scrapes,
divided by their number; the target is under 5 ms a scrape. The client's time
per scrape is reported alongside. ``python -m bench.bench_metrics``.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import httpx

from bench.common import BenchResult, Row, cpu_seconds, open_daemon, report

RUNS = 500
SCRAPES = 300
WARMUP = 20
TARGET_MS = 5.0
QUIET_COMMAND = ["/bin/sh", "-c", "cat > /dev/null"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run() -> BenchResult:
    port = _free_port()
    config = Path(f"/tmp/cdyb-metrics-{port}.toml")
    config.write_text(f'http_listen = "127.0.0.1:{port}"\nmax_active_runs = 32\n')
    try:
        with open_daemon("--config", str(config)) as daemon:
            run_ids = [
                daemon.call(
                    "run.start",
                    {
                        "agent": "command",
                        "command": QUIET_COMMAND,
                        "workspace": str(daemon.workspace(f"ws{n}")),  # one run each
                        "prompt": "p",
                        "max_turns": 1,
                        "labels": {"bench": "metrics", "batch": str(n % 10)},
                    },
                )["run_id"]
                for n in range(RUNS)
            ]
            for run_id in run_ids:
                daemon.wait_terminal(run_id, timeout=600)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for _ in range(WARMUP):
                    client.get("/metrics").raise_for_status()
                cpu_before = cpu_seconds(daemon.pid)
                began = time.perf_counter()
                size = 0
                for _ in range(SCRAPES):
                    response = client.get("/metrics")
                    response.raise_for_status()
                    size = len(response.content)
                elapsed = time.perf_counter() - began
                cpu = cpu_seconds(daemon.pid) - cpu_before
    finally:
        config.unlink(missing_ok=True)
    cpu_ms = cpu * 1000 / SCRAPES
    wall_ms = elapsed * 1000 / SCRAPES
    rows = [
        Row(
            f"GET /metrics, daemon CPU per scrape ({RUNS} runs)",
            cpu_ms,
            None,
            "ms",
            f"< {TARGET_MS:g} ms",
            cpu_ms < TARGET_MS,
        ),
        Row("GET /metrics, client wall time per scrape", wall_ms, None, "ms"),
        Row("GET /metrics, exposition size", size / 1024, None, "KiB"),
    ]
    details = {"runs": RUNS, "scrapes": SCRAPES, "daemon_cpu_s": cpu, "elapsed_s": elapsed}
    return BenchResult("metrics", rows, details)


def main() -> int:
    return report([run()], "metrics")


if __name__ == "__main__":
    sys.exit(main())
