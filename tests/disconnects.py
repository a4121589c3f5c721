"""Clients that hang up on codyd at random points, and what the daemon's process looks like.

Shared by tests/test_e2e_disconnects.py (about 1,500 points) and bench/disconnects.py
(10,000). Each point opens a connection, sends one request or a pipelined handful,
waits a random while (mostly 0–50 ms) reading or not, then leaves: a reset
(SO_LINGER 0), a close, or a half-close. Pure client side: it knows the daemon only
by its socket path, pid and runs.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codyd.protocol import FrameDecoder, pack

ENDINGS = ("reset", "close", "half_close")
# The daemon bounds the frames it reads, not those it sends: read answers of any size.
MAX_FRAME_BYTES = 64 * 1024 * 1024


def requests_for(kind: str, run_id: str) -> list[dict[str, Any]]:
    """The requests one point sends, by kind."""
    one_run = {"run_id": run_id, "after": 0}
    table: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "events_run_follow": [("run.events", {**one_run, "follow": True})],
        "events_run": [("run.events", one_run)],
        "events_all_follow": [("run.events", {"after": 0, "follow": True})],
        "events_all": [("run.events", {"after": 0})],
        "logs_follow": [("run.logs", {"run_id": run_id, "follow": True})],
        "logs": [("run.logs", {"run_id": run_id})],
        "list": [("run.list", {"limit": 1000})],
        "pipelined": [
            ("daemon.ping", {}),
            ("run.list", {"limit": 1000}),
            ("run.events", {**one_run, "follow": True}),
            ("run.status", {"run_id": run_id}),
            ("run.logs", {"run_id": run_id, "follow": True}),
            ("run.events", {"after": 0}),
        ],
    }
    return [
        {"id": request_id, "method": method, "params": params}
        for request_id, (method, params) in enumerate(table[kind])
    ]


KINDS = (
    "events_run_follow",
    "events_run",
    "events_all_follow",
    "events_all",
    "logs_follow",
    "logs",
    "list",
    "pipelined",
)


def draw_delay(rng: random.Random) -> float:
    """Mostly 0–50 ms; one point in ten lingers up to 250 ms, long enough for buffers to fill."""
    return rng.uniform(0.0, 0.05) if rng.random() < 0.9 else rng.uniform(0.05, 0.25)


@dataclass
class Tally:
    points: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    # What the clients saw: frames read, refusals, connections the daemon ended first.
    frames_read: int = 0
    overloaded: int = 0
    client_errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.points += other.points
        self.kinds.update(other.kinds)
        self.endings.update(other.endings)
        self.frames_read += other.frames_read
        self.overloaded += other.overloaded
        self.client_errors.update(other.client_errors)


def _drain(sock: socket.socket, decoder: FrameDecoder, until: float, tally: Tally) -> None:
    """Read whatever comes until ``until`` (monotonic), or until the daemon closes."""
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            return
        for frame in decoder.feed(data):
            tally.frames_read += 1
            error = frame.get("error")
            if isinstance(error, dict) and error.get("code") == "overloaded":
                tally.overloaded += 1


def one_point(socket_path: Path, run_id: str, rng: random.Random, tally: Tally) -> None:
    kind = rng.choice(KINDS)
    ending = rng.choice(ENDINGS)
    reading = rng.random() < 0.5
    delay = draw_delay(rng)
    tally.points += 1
    tally.kinds[kind] += 1
    tally.endings[ending] += 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(b"".join(pack(request) for request in requests_for(kind, run_id)))
        until = time.monotonic() + delay
        decoder = FrameDecoder(MAX_FRAME_BYTES)
        if reading:
            _drain(sock, decoder, until, tally)
        else:
            time.sleep(max(0.0, until - time.monotonic()))
        if ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif ending == "half_close":
            sock.shutdown(socket.SHUT_WR)
            _drain(sock, decoder, time.monotonic() + 0.01, tally)
    except OSError as exc:
        tally.client_errors[type(exc).__name__] += 1
    finally:
        sock.close()


def hammer(
    socket_path: Path,
    run_ids: list[str],
    points: int,
    threads: int = 8,
    seed: int = 0,
    daemon_alive: Any = None,
) -> Tally:
    """``points`` disconnect points from ``threads`` client threads; stops early if the daemon
    dies (``daemon_alive()`` false)."""
    remaining = [points]
    lock = threading.Lock()
    tallies = [Tally() for _ in range(threads)]

    failures: list[BaseException] = []

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        try:
            while True:
                with lock:
                    if remaining[0] <= 0 or failures:
                        return
                    remaining[0] -= 1
                if daemon_alive is not None and not daemon_alive():
                    return
                one_point(socket_path, rng.choice(run_ids), rng, tallies[index])
        except BaseException as exc:  # a driver bug: surface it, do not lose points quietly
            failures.append(exc)

    began = time.monotonic()
    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    total = Tally()
    for tally in tallies:
        total.add(tally)
    total.elapsed_s = time.monotonic() - began
    return total


# The store's pool of read-only SQLite connections grows to the most reads ever run at
# once (bounded by trio's thread limiter) and keeps them: a high-water mark, not a leak.
STORE_FILES = ("codyd.db", "codyd.db-wal", "codyd.db-shm")


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    fds: int
    store_fds: int

    @property
    def other_fds(self) -> int:
        return self.fds - self.store_fds


def usage(pid: int) -> Usage:
    """The process's resident memory (VmRSS) and open descriptors, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    kinds = fd_kinds(pid)
    return Usage(rss, sum(kinds.values()), sum(kinds[name] for name in STORE_FILES))


def fd_kinds(pid: int) -> Counter[str]:
    """What the process's descriptors point at, by kind ("socket", "pipe", a file's name)."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while we looked
        kinds[target.split(":")[0] if ":[" in target else Path(target).name] += 1
    return kinds


def tracebacks(log_text: str) -> list[str]:
    """Log lines that carry a traceback or an error-level record."""
    return [
        line
        for line in log_text.splitlines()
        if "Traceback" in line or '"level": "error"' in line or '"level": "critical"' in line
    ]
