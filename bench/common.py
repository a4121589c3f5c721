"""Shared pieces of the codyd benchmarks: server processes, a raw ping client, statistics, reports.

Every benchmark compares codyd against a floor measured in the same run on the
same machine, so the ratio means something even where absolute numbers do not.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack

from codyctl.client import Client
from codyd.model.layout import StateLayout
from codyd.model.state import TERMINAL_EVENTS

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
AGENTS_DIR = BENCH_DIR / "agents"
PY = sys.executable
HEADER = struct.Struct(">I")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0


# -- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values``, linearly interpolated between ranks."""
    if not values:
        raise ValueError("percentile: expected at least one value, got none")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """Latencies of ``count`` calls in seconds, and the rate they were made at."""

    count: int
    p50_s: float
    p99_s: float
    mean_s: float
    max_s: float
    calls_per_s: float

    @classmethod
    def of(cls, latencies: Sequence[float], elapsed_s: float) -> LatencySummary:
        return cls(
            count=len(latencies),
            p50_s=percentile(latencies, 50),
            p99_s=percentile(latencies, 99),
            mean_s=sum(latencies) / len(latencies),
            max_s=max(latencies),
            calls_per_s=len(latencies) / elapsed_s if elapsed_s > 0 else math.inf,
        )


# -- report rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of a report: codyd against its floor, and whether the target was met.

    ``passed`` is None for figures reported for information only.
    """

    benchmark: str
    codyd: float | None
    floor: float | None
    unit: str
    target: str = "—"
    passed: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.codyd is None or self.floor is None or self.floor <= 0:
            return None
        return self.codyd / self.floor

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class BenchResult:
    """What one benchmark measured: its report rows and every detail behind them."""

    name: str
    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "rows": [row.to_json() for row in self.rows],
            "details": self.details,
        }


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s" and abs(value) < 0.001:
        return f"{value * 1e6:.3g} µs"
    if unit == "s" and abs(value) < 1:
        return f"{value * 1000:.4g} ms"
    if unit in {"count", "lines"}:
        return f"{value:,.0f}" + ("" if unit == "count" else " lines")
    if unit == "calls/s":
        return f"{value:,.0f} calls/s"
    return f"{value:.3g} {unit}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The report as a markdown table: benchmark | codyd | floor | ratio | target | pass/fail."""
    lines = [
        "| benchmark | codyd | floor | ratio | target | pass/fail |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}×"
        verdict = {True: "pass", False: "FAIL", None: "—"}[row.passed]
        cells = [
            row.benchmark,
            format_value(row.codyd, row.unit),
            format_value(row.floor, row.unit),
            ratio,
            row.target,
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Facts about the machine and interpreter, stored beside every result."""
    from codyd import __version__

    return {
        "codyd_version": __version__,
        "python": sys.version.split()[0],
        "executable": PY,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "timestamp": time.time(),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with the environment) to ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {"environment": environment(), **payload}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def report(results: Sequence[BenchResult], json_name: str) -> int:
    """Print the combined table, write the JSON file; exit status 1 if a target was missed."""
    rows = [row for result in results for row in result.rows]
    print(markdown_table(rows))
    path = write_json(json_name, {"results": [result.to_json() for result in results]})
    print(f"\nresults written to {path.relative_to(REPO_DIR)}")
    return 0 if all(result.passed for result in results) else 1


# -- processes -----------------------------------------------------------------------------------


def short_tempdir() -> Path:
    """Unix socket paths are limited to 108 bytes: keep the directory short."""
    return Path(tempfile.mkdtemp(prefix="cdyb", dir="/tmp"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads, not its children)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat[stat.rfind(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def read_rss_fds(pid: int) -> tuple[int, int] | None:
    """VmRSS (KiB) and the count of open file descriptors of a live process; None once gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            status = handle.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(b"VmRSS:"):
            return int(line.split()[1]), fds
    return None  # a zombie has no VmRSS


@dataclass
class ServerProcess:
    """A server process listening on a Unix socket, with its log file."""

    argv: list[str]
    socket_path: Path
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server process was not started; call start() first")
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=log, env=self.env, cwd=REPO_DIR
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers_ping(self.socket_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[:3]} exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[:3]} did not answer a ping on {self.socket_path}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Daemon(ServerProcess):
    """A codyd process with its state directory, and the few calls the benchmarks make."""

    state_dir: Path = field(default_factory=Path)

    def turn_dir(self, run_id: str, turn: int) -> Path:
        return StateLayout(self.state_dir).turn_dir(run_id, turn)

    def workspace(self, name: str) -> Path:
        path = self.state_dir.parent / name
        path.mkdir(exist_ok=True)
        return path

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with Client(self.socket_path) as client:
            return client.call(method, params)

    def wait_terminal(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Block until the run is terminal (following only its terminal events); its snapshot."""
        snapshot: dict[str, Any] = self.call("run.status", {"run_id": run_id})
        params = {
            "run_id": run_id,
            "after": snapshot["last_seq"],
            "follow": True,
            "types": list(TERMINAL_EVENTS),
        }
        with Client(self.socket_path, timeout=timeout) as client:
            for _event in client.stream("run.events", params):
                pass
        final: dict[str, Any] = self.call("run.status", {"run_id": run_id})
        return final

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Every stored event of a run."""
        with Client(self.socket_path) as client:
            return list(client.stream("run.events", {"run_id": run_id, "after": 0}))


def answers_ping(socket_path: Path) -> bool:
    """True if a codyd (or the echo floor) answers a ping on ``socket_path`` now."""
    try:
        with RawPinger(socket_path, timeout=5) as pinger:
            pinger.ping()
    except OSError:
        return False
    return True


def terminate(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM ``proc`` and wait for it, SIGKILL if it outlives ``timeout``; True if it obeyed."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
    return True


class Startable(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextmanager
def running(server: S, root: Path) -> Iterator[S]:
    """Start ``server``; stop it afterwards and remove its directory ``root``."""
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def open_daemon(*options: str) -> Iterator[Daemon]:
    """Start codyd in a fresh temp dir (info-level JSON logs to a file); stop it and clean up.

    ``options`` are further ``codyd serve`` flags. No ``CODYD_*`` variable of the
    caller's environment reaches it: the benchmarks measure the defaults.
    """
    root = short_tempdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODYD_")}
    socket_path = root / "codyd.sock"
    state_dir = root / "state"
    argv = [
        *(PY, "-m", "codyd", "serve"),
        *("--socket", str(socket_path)),
        *("--state-dir", str(state_dir)),
        *("--log-format", "json", "--log-level", "info"),
        *options,
    ]
    with running(
        Daemon(argv, socket_path, root / "codyd.log", env, state_dir=state_dir), root
    ) as d:
        yield d


@contextmanager
def open_echo_server() -> Iterator[ServerProcess]:
    """Start the floor server (``bench.echo_server``) in a fresh temp dir; stop it after."""
    root = short_tempdir()
    socket_path = root / "echo.sock"
    argv = [PY, "-m", "bench.echo_server", "--socket", str(socket_path)]
    with running(ServerProcess(argv, socket_path, root / "echo.log"), root) as server:
        yield server


# -- the raw client ------------------------------------------------------------------------------


class RawPinger:
    """A bare blocking-socket request loop, the same for codyd and the floor server.

    It encodes each request with msgpack, sends one frame, and reads exactly one
    response frame back: no routing, no pipelining, nothing that could make the
    client cost differ between the servers it measures.
    """

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(socket_path))
        except OSError:
            self._sock.close()
            raise
        self._buffer = bytearray()
        self._next_id = 1

    def ping(self) -> dict[str, Any]:
        """One ``daemon.ping`` round trip; returns the response map."""
        request_id = self._next_id
        self._next_id += 1
        body = msgpack.packb({"id": request_id, "method": "daemon.ping", "params": {}})
        self._sock.sendall(HEADER.pack(len(body)) + body)
        response: dict[str, Any] = msgpack.unpackb(self._read_frame())
        if response.get("id") != request_id or "result" not in response:
            raise RuntimeError(f"ping {request_id}: expected its result, got {response!r}")
        return response

    def _read_frame(self) -> bytes:
        while True:
            if len(self._buffer) >= HEADER.size:
                (length,) = HEADER.unpack_from(self._buffer)
                end = HEADER.size + length
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[HEADER.size : end])
                    del self._buffer[:end]
                    return body
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection mid-response")
            self._buffer += data

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawPinger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def time_block(pinger: RawPinger, count: int) -> tuple[list[float], float, float]:
    """Time ``count`` pings on one connection.

    Returns the latencies (seconds) and the ``perf_counter`` instants the block began and
    ended (the clock is system-wide, so instants from several processes compare).
    """
    latencies: list[float] = []
    clock = time.perf_counter
    began = clock()
    for _ in range(count):
        start = clock()
        pinger.ping()
        latencies.append(clock() - start)
    return latencies, began, clock()
