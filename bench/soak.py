"""Soak: many chatty runs, clients that come and go, kill -9 of codyd and Redis restarts.

For ``--minutes`` (default 10), ``--runs`` (default 50) runs of ``bench/agents/chatty.py``
(plain lines, sentinels, stderr, turns of 0.2–6 s, turn after turn) are driven by one
codyd with ``--redis-url`` (a private redis-server on a Unix socket under a temp dir,
append-only file, restarted every 2 minutes). Client threads follow one run's events, all
runs' events, or a turn's log, and drop the connection at random (close, reset, or
``rpc.cancel`` first). codyd is killed with SIGKILL every 60–90 s and restarted on the same
state dir. Then the runs are stopped with a clean shutdown, codyd is started again to cancel
them, and every invariant is checked: see bench/README.md. Exit status 1 if one failed.

``python -m bench.soak --minutes 2 --runs 20`` is a smoke.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import redis

from bench.common import (
    AGENTS_DIR,
    HEADER,
    PY,
    BenchResult,
    Daemon,
    Row,
    markdown_table,
    read_rss_fds,
    short_tempdir,
    terminate,
    write_json,
)
from codyctl.client import Client, ConnectError
from codyd.errors import CodydError

PREFIX = "codi:api:"
RUN_MAXLEN, GLOBAL_MAXLEN = 10_000, 100_000  # codyd's default redis_maxlen
LEASE_TTL_S = 6.0  # a restarted daemon waits for its predecessor's leases: keep that short
KILL_EVERY_S = (60.0, 90.0)
REDIS_RESTART_EVERY_S = 120.0
TICK_S = 1.0
WARMUP_S = 10.0  # a lifetime's first sample is taken once recovery and turns are under way
FD_SLACK, RSS_FACTOR, RSS_SLACK_MIB = 64, 1.5, 32.0
FINAL_WAIT_S = 120.0
CLIENT_HOLD_S = (0.1, 4.0)
ABRUPT_DROPS = ("close", "reset", "cancel")  # cancel: rpc.cancel, then close at once
POLITE_WAIT_S = 5.0
SHUTDOWN_BOUND_S = 5.0 + 10.0  # the default sigkill_delay_s + 10 s (docs/operations.md)
LOG_TAIL_LINES = 80
EXCEPTION_RE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Group)\b.*")
CODYD_FRAME_RE = re.compile(r'File "[^"]*/(codyd/[^"]+)", line (\d+), in (\w+)')


# -- redis-server on a Unix socket ---------------------------------------------------------------


@dataclass
class UnixRedis:
    """redis-server listening on a Unix socket only, fsyncing an append-only file.

    The AOF makes a stop and start a restart, not a reset: the streams must equal the store.
    """

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def socket_path(self) -> Path:
        return self.root / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=10)

    def start(self) -> None:
        argv = [
            "redis-server",
            *("--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"),
            *("--dir", str(self.root), "--logfile", str(self.root / "redis.log")),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on {self.socket_path}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


# -- codyd lifetimes -----------------------------------------------------------------------------


@dataclass
class Lifetime:
    """One daemon process from its start until it was killed, crashed or shut down."""

    index: int
    pid: int
    started: float
    log_offset: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (age s, RSS KiB, fds)
    ended_by: str = "running"
    returncode: int | None = None
    log_tail: list[str] = field(default_factory=list)

    def sample(self) -> None:
        figures = read_rss_fds(self.pid)
        if figures is not None:
            self.samples.append((time.monotonic() - self.started, *figures))

    def first_last(self) -> tuple[tuple[float, int, int], tuple[float, int, int]] | None:
        settled = [sample for sample in self.samples if sample[0] >= WARMUP_S]
        if len(settled) < 2:
            return None
        return settled[0], settled[-1]

    def to_json(self) -> dict[str, Any]:
        span = self.first_last()
        return {
            "index": self.index,
            "pid": self.pid,
            "ended_by": self.ended_by,
            "returncode": self.returncode,
            "samples": [[round(age, 1), rss, fds] for age, rss, fds in self.samples],
            "first": span[0] if span else None,
            "last": span[1] if span else None,
            "log_tail": self.log_tail,
        }


class Supervisor:
    """Starts, kills and restarts codyd on one state dir; samples each lifetime."""

    def __init__(self, root: Path, redis_url: str) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CODYD_")}
        env["CODYD_LEASE_TTL_S"] = str(LEASE_TTL_S)
        self.socket_path = root / "codyd.sock"
        argv = [
            *(PY, "-m", "codyd", "serve", "--socket", str(self.socket_path)),
            *("--state-dir", str(root / "state"), "--redis-url", redis_url, "--node", "soak"),
            *("--log-format", "json", "--log-level", "info"),
        ]
        self.daemon = Daemon(
            argv, self.socket_path, root / "codyd.log", env, state_dir=root / "state"
        )
        self.lifetimes: list[Lifetime] = []

    @property
    def current(self) -> Lifetime:
        return self.lifetimes[-1]

    def start(self) -> None:
        offset = self.daemon.log_path.stat().st_size if self.daemon.log_path.exists() else 0
        self.daemon.start()
        self.lifetimes.append(
            Lifetime(len(self.lifetimes), self.daemon.pid, time.monotonic(), offset)
        )

    def alive(self) -> bool:
        return self.daemon.proc is not None and self.daemon.proc.poll() is None

    def check_crash(self) -> bool:
        """True if codyd exited although nobody stopped it (then it is restarted)."""
        if not self.lifetimes or self.alive():
            return False
        self._end("crashed")
        self.start()
        return True

    def kill9(self) -> None:
        self.current.sample()
        if self.alive():
            os.kill(self.daemon.pid, signal.SIGKILL)
        self._end("kill -9")
        self.start()

    def shutdown(self) -> float:
        """SIGTERM; the seconds until codyd exited."""
        self.current.sample()
        began = time.monotonic()
        self.daemon.stop()
        elapsed = time.monotonic() - began
        self._end("SIGTERM")
        return elapsed

    def _end(self, how: str) -> None:
        assert self.daemon.proc is not None
        self.daemon.proc.wait()
        life = self.current
        life.ended_by, life.returncode = how, self.daemon.proc.returncode
        with self.daemon.log_path.open("rb") as log:
            log.seek(life.log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        life.log_tail = lines[-LOG_TAIL_LINES:] if how != "kill -9" else []


def crash_signature(lines: list[str]) -> str:
    """The exception and the innermost codyd frame of a traceback in a daemon's last lines."""
    error = frame = ""
    for line in lines:
        text = line.strip(" |")
        if EXCEPTION_RE.match(text):
            error = text
        elif (match := CODYD_FRAME_RE.search(text)) is not None:
            frame = f"{match[1]}:{match[2]} in {match[3]}"
    return f"{error} (at {frame})" if error or frame else "no traceback in its log"


# -- clients that follow and drop ----------------------------------------------------------------


@dataclass
class ClientStats:
    sessions: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    connect_failures: int = 0
    connections_lost: int = 0
    gaps: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class StreamConn:
    """A raw connection: one request, then frames until told to stop; closed or reset."""

    def __init__(self, socket_path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(0.5)
        try:
            self.sock.connect(str(socket_path))
        except OSError:
            self.sock.close()
            raise
        self.buffer = bytearray()

    def send(self, request_id: int, method: str, params: dict[str, Any]) -> None:
        body = msgpack.packb({"id": request_id, "method": method, "params": params})
        self.sock.sendall(HEADER.pack(len(body)) + body)

    def frames(self) -> list[dict[str, Any]]:
        """Whole frames read within the socket timeout (none on a timeout)."""
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("codyd closed the connection")
        self.buffer += data
        out: list[dict[str, Any]] = []
        while len(self.buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + length:
                break
            out.append(msgpack.unpackb(bytes(self.buffer[HEADER.size : HEADER.size + length])))
            del self.buffer[: HEADER.size + length]
        return out

    def drop(self, how: str) -> None:
        if how == "reset":  # SO_LINGER 0: the close sends RST, not FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if how in ("cancel", "polite"):
            with contextlib.suppress(OSError):
                self.send(2, "rpc.cancel", {"id": 1})
        if how == "polite":
            with contextlib.suppress(OSError, ConnectionError):
                self._until_final(1, POLITE_WAIT_S)
        self.sock.close()

    def _until_final(self, request_id: int, timeout: float) -> None:
        """Read until the stream's final response (its end after the cancel) arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames():
                if frame.get("id") == request_id and ("result" in frame or "error" in frame):
                    return


class SeqCheck:
    """Seqs of one stream must follow on from the cursor, per run, without a gap."""

    def __init__(self, label: str, after: int | None) -> None:
        self.label, self.after = label, after
        self.last: dict[str, int] = {}
        self.last_gid = 0
        self.problems: list[str] = []

    def see(self, event: dict[str, Any]) -> None:
        run_id, seq, gid = event["run_id"], event["seq"], event["gid"]
        expected = self.last.get(run_id, self.after)
        if expected is not None and seq != expected + 1:
            self.problems.append(f"{self.label}: run {run_id} seq {seq} after {expected}")
        if gid <= self.last_gid:
            self.problems.append(f"{self.label}: gid {gid} after gid {self.last_gid}")
        self.last[run_id], self.last_gid = seq, gid


def client_session(
    socket_path: Path,
    run_ids: list[str],
    rng: random.Random,
    stats: ClientStats,
    drops: tuple[str, ...],
) -> None:
    kind = rng.choice(("run.events", "run.events all", "run.logs"))
    run_id = rng.choice(run_ids)
    after = rng.choice((0, None, None, rng.randrange(1, 50)))
    if kind == "run.logs":
        params: dict[str, Any] = {"run_id": run_id, "follow": True}
    else:
        params = {"follow": True} | ({} if after is None else {"after": after})
        if kind == "run.events":
            params["run_id"] = run_id
    check = SeqCheck(f"{kind} {params}", after if kind == "run.events" else None)
    try:
        conn = StreamConn(socket_path)
    except OSError:
        with stats.lock:
            stats.connect_failures += 1
        time.sleep(0.2)
        return
    how = rng.choice(drops)
    try:
        conn.send(1, "run.logs" if kind == "run.logs" else "run.events", params)
        frames = read_for(conn, rng.uniform(*CLIENT_HOLD_S), check, stats)
    except (OSError, ConnectionError):
        how = "lost"
        frames = 0
    finally:
        conn.drop(how)
    with stats.lock:
        stats.sessions[kind] += 1
        stats.drops[how] += 1
        stats.frames += frames
        stats.gaps += check.problems[:5]


def read_for(conn: StreamConn, hold_s: float, check: SeqCheck, stats: ClientStats) -> int:
    """Read a stream for ``hold_s``; returns the frames read. Stops early when it ends."""
    deadline = time.monotonic() + hold_s
    count = 0
    while time.monotonic() < deadline:
        for frame in conn.frames():
            count += 1
            if "event" in frame:
                check.see(frame["event"])
            elif "error" in frame:
                with stats.lock:
                    stats.errors[str(frame["error"].get("code"))] += 1
                return count
            elif "result" in frame:
                return count
    return count


def client_loop(
    socket_path: Path,
    run_ids: list[str],
    seed: int,
    stop: threading.Event,
    stats: ClientStats,
    drops: tuple[str, ...],
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        client_session(socket_path, run_ids, rng, stats, drops)
        stop.wait(rng.uniform(0.0, 0.3))


# -- runs ----------------------------------------------------------------------------------------


def start_runs(root: Path, socket_path: Path, count: int) -> list[str]:
    run_ids: list[str] = []
    with Client(socket_path) as client:
        for number in range(count):
            workspace = root / "ws" / f"w{number:03d}"
            workspace.mkdir(parents=True)
            spec = {
                "workspace": str(workspace),
                "prompt": f"soak run {number}",
                "command": [PY, "-S", str(AGENTS_DIR / "chatty.py")],
                "run_id": f"soak-{number:03d}",
                "max_turns": 100_000,
                "retry_backoff_s": 0.5,
                "sigkill_delay_s": 2,
            }
            run_ids.append(client.call("run.start", spec)["run_id"])
    return run_ids


def call_retrying(
    socket_path: Path, method: str, params: dict[str, Any], timeout: float = 60.0
) -> Any:
    """A call that waits out a daemon that is starting or restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(socket_path, timeout=30) as client:
                return client.call(method, params)
        except (ConnectError, CodydError) as exc:
            if isinstance(exc, CodydError) and not exc.retryable:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for(what: str, check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    print(f"soak: gave up waiting for {what} after {timeout:g} s", file=sys.stderr)
    return False


def cancel_all(socket_path: Path, run_ids: list[str]) -> None:
    for run_id in run_ids:
        try:
            call_retrying(socket_path, "run.cancel", {"run_id": run_id, "reason": "soak over"})
        except CodydError as exc:
            if exc.code != "invalid_state":  # already terminal
                raise

    def all_terminal() -> bool:
        runs = call_retrying(socket_path, "run.list", {"limit": 1000})["runs"]
        return all(run["state"] in ("completed", "failed", "cancelled") for run in runs)

    wait_for("every run to be terminal", all_terminal, FINAL_WAIT_S)


def mirror_caught_up(socket_path: Path) -> bool:
    mirror = call_retrying(socket_path, "daemon.info", {})["mirror"]
    return bool(mirror["connected"]) and mirror["lag_events"] == 0


# -- invariants ----------------------------------------------------------------------------------


def orphans(run_ids: set[str]) -> list[tuple[int, str]]:
    """Live processes whose environment carries one of our runs' CODYD_RUN_ID."""
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(b"CODYD_RUN_ID="):
                run_id = variable.split(b"=", 1)[1].decode(errors="replace")
                if run_id in run_ids:
                    found.append((int(entry), run_id))
    return found


def kill_orphans(found: list[tuple[int, str]]) -> None:
    for pid, _run_id in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class RunCheck:
    run_id: str
    state: str
    last_seq: int
    events: int
    turns: int
    seq_gaps: int
    turn_mismatches: list[str]
    redis_entries: int
    redis_problem: str | None

    @property
    def passed(self) -> bool:
        return not (self.seq_gaps or self.turn_mismatches or self.redis_problem)


# A turn that never spawned a process (its prompt could not be built, the spawn failed, or
# a stop came first) has its turn_completed and no turn_started (docs/events.md): its
# outcome says so, with no exit code.
UNSPAWNED_OUTCOMES = frozenset({"spawn_failed", "interrupted", "aborted", "error"})


def turn_mismatches(events: list[dict[str, Any]]) -> list[str]:
    """Turns that break "one turn_completed per turn, after at most one turn_started"."""
    started: Counter[int] = Counter()
    completed: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        if event["type"] == "turn_started":
            started[event["turn"]] += 1
        elif event["type"] == "turn_completed":
            completed.setdefault(event["turn"], []).append(event["data"])
    problems = []
    for turn in sorted(set(started) | set(completed)):
        ends = completed.get(turn, [])
        unspawned_ok = (
            started[turn] == 0
            and len(ends) == 1
            and ends[0]["outcome"] in UNSPAWNED_OUTCOMES
            and ends[0]["exit_code"] is None
        )
        if not unspawned_ok and (started[turn] != 1 or len(ends) != 1):
            outcomes = ", ".join(end["outcome"] for end in ends) or "none"
            problems.append(
                f"turn {turn}: {started[turn]} turn_started, {len(ends)} turn_completed "
                f"({outcomes})"
            )
    return problems


def redis_problem(events: list[dict[str, Any]], entries: list[Any]) -> str | None:
    """None if the stream is the store's newest events (at least MAXLEN of them, ``~``)."""
    if len(entries) > len(events):
        return f"{len(entries)} entries in redis, {len(events)} events in the store"
    if len(entries) < min(len(events), RUN_MAXLEN):
        return f"only {len(entries)} of {len(events)} events in redis (MAXLEN ~{RUN_MAXLEN})"
    tail = events[len(events) - len(entries) :]
    for event, (entry_id, fields) in zip(tail, entries, strict=True):
        got = (entry_id.decode(), fields[b"type"].decode(), int(fields[b"gid"]))
        want = (f"{event['seq']}-0", event["type"], event["gid"])
        if got != want:
            return f"redis entry {got} where the store has {want}"
    return None


def check_run(
    socket_path: Path, rdb: redis.Redis, run_id: str
) -> tuple[RunCheck, list[dict[str, Any]]]:
    status = call_retrying(socket_path, "run.status", {"run_id": run_id})
    with Client(socket_path, timeout=60) as client:
        events = list(client.stream("run.events", {"run_id": run_id, "after": 0}))
    seqs = [event["seq"] for event in events]
    gaps = sum(1 for index, seq in enumerate(seqs, 1) if seq != index)
    gaps += abs(status["last_seq"] - len(seqs))
    entries: list[Any] = rdb.xrange(f"{PREFIX}run:{run_id}:events")  # type: ignore[assignment]
    check = RunCheck(
        run_id=run_id,
        state=status["state"],
        last_seq=status["last_seq"],
        events=len(events),
        turns=sum(1 for event in events if event["type"] == "turn_started"),
        seq_gaps=gaps,
        turn_mismatches=turn_mismatches(events),
        redis_entries=len(entries),
        redis_problem=redis_problem(events, entries),
    )
    return check, events


def global_stream_problem(rdb: redis.Redis, events: list[dict[str, Any]]) -> str | None:
    """``{p}events`` must hold the newest (≥ MAXLEN ~) events of all runs in gid order."""
    by_gid = sorted(events, key=lambda event: event["gid"])
    entries: list[Any] = rdb.xrange(f"{PREFIX}events")  # type: ignore[assignment]
    if len(entries) < min(len(by_gid), GLOBAL_MAXLEN) or len(entries) > len(by_gid):
        return f"{len(entries)} entries in {PREFIX}events for {len(by_gid)} stored events"
    for event, (entry_id, fields) in zip(
        by_gid[len(by_gid) - len(entries) :], entries, strict=True
    ):
        got = (entry_id.decode(), fields[b"run_id"].decode(), int(fields[b"seq"]))
        want = (f"{event['gid']}-0", event["run_id"], event["seq"])
        if got != want:
            return f"{PREFIX}events entry {got} where the store has {want}"
    return None


# -- the soak ------------------------------------------------------------------------------------


@dataclass
class Soak:
    root: Path
    minutes: float
    runs: int
    clients: int
    seed: int
    drops: tuple[str, ...] = ABRUPT_DROPS
    kills: bool = True
    rng: random.Random = field(init=False)
    redis: UnixRedis = field(init=False)
    sup: Supervisor = field(init=False)
    stats: ClientStats = field(default_factory=ClientStats)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        (self.root / "redis").mkdir()
        self.redis = UnixRedis(self.root / "redis")
        self.sup = Supervisor(self.root, self.redis.url)

    def chaos(self) -> None:
        """Until the time is up: clients follow and drop, codyd is killed, Redis restarts."""
        began = time.monotonic()
        end = began + self.minutes * 60
        next_kill = began + self.rng.uniform(*KILL_EVERY_S) if self.kills else math.inf
        next_redis = began + REDIS_RESTART_EVERY_S
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=client_loop,
                args=(
                    *(self.sup.socket_path, self.run_ids, self.seed + n),
                    *(stop, self.stats, self.drops),
                ),
                daemon=True,
            )
            for n in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        try:
            while (now := time.monotonic()) < end:
                self.sup.current.sample()
                if self.sup.check_crash():
                    self.record_crash(now - began)
                if now >= next_kill:
                    self.sup.kill9()
                    next_kill = now + self.rng.uniform(*KILL_EVERY_S)
                if now >= next_redis:
                    self.redis.restart()
                    next_redis = now + REDIS_RESTART_EVERY_S
                time.sleep(TICK_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)

    def record_crash(self, at_s: float | None) -> None:
        life = self.sup.lifetimes[-2]
        signature = crash_signature(life.log_tail)
        self.crashes.append(life.to_json() | {"at_s": at_s, "signature": signature})
        when = "at the end" if at_s is None else f"at {at_s:.0f} s"
        print(
            f"soak: codyd exited {life.returncode} by itself {when}: {signature}", file=sys.stderr
        )

    def finish(self) -> dict[str, Any]:
        """Clean shutdown with live turns, orphan check, then cancel every run and check."""
        if self.sup.check_crash():
            self.record_crash(None)
        time.sleep(3)  # recovered runs start turns, so the shutdown has turns to stop
        shutdown_s = self.sup.shutdown()
        first_returncode = self.sup.current.returncode
        left_after_shutdown = orphans(set(self.run_ids))
        kill_orphans(left_after_shutdown)
        self.sup.start()
        cancel_all(self.sup.socket_path, self.run_ids)
        caught_up = wait_for(
            "the mirror to catch up", lambda: mirror_caught_up(self.sup.socket_path), FINAL_WAIT_S
        )
        return {
            "shutdown_s": shutdown_s,
            "shutdown_returncode": first_returncode,
            "orphans_after_shutdown": left_after_shutdown,
            "mirror_caught_up": caught_up,
        }

    def verify(self) -> tuple[list[RunCheck], str | None]:
        checks: list[RunCheck] = []
        every_event: list[dict[str, Any]] = []
        with self.redis.client() as rdb:
            for run_id in self.run_ids:
                check, events = check_run(self.sup.socket_path, rdb, run_id)
                checks.append(check)
                every_event += events
            problem = global_stream_problem(rdb, every_event)
        return checks, problem


def lifetime_rows(lifetimes: list[Lifetime]) -> list[Row]:
    judged = [life for life in lifetimes if life.first_last() is not None]
    rows = [
        Row(
            f"daemon lifetimes long enough to judge RSS and fds (2 samples after {WARMUP_S:g} s)",
            len(judged),
            len(lifetimes),
            "count",
        )
    ]
    samples = [sample for life in lifetimes for sample in life.samples]
    if samples:
        rows.append(
            Row(
                "RSS, first and last sample of the soak",
                samples[-1][1] / 1024,
                samples[0][1] / 1024,
                "MiB",
            )
        )
        rows.append(
            Row(
                "open fds, first and last sample of the soak",
                samples[-1][2],
                samples[0][2],
                "count",
            )
        )
    for life in judged:
        span = life.first_last()
        if span is None:
            continue
        (_, rss0, fd0), (age, rss1, fd1) = span
        name = f"lifetime {life.index} ({life.ended_by}, {age:.0f} s)"
        rss_ok = rss1 / 1024 <= rss0 / 1024 * RSS_FACTOR + RSS_SLACK_MIB
        rows.append(
            Row(
                f"{name}: RSS",
                rss1 / 1024,
                rss0 / 1024,
                "MiB",
                f"≤ {RSS_FACTOR}× + {RSS_SLACK_MIB:g}",
                rss_ok,
            )
        )
        rows.append(
            Row(
                f"{name}: open fds",
                fd1,
                fd0,
                "count",
                f"≤ first + {FD_SLACK}",
                fd1 <= fd0 + FD_SLACK,
            )
        )
    return rows


def invariant_rows(
    soak: Soak,
    final: dict[str, Any],
    checks: list[RunCheck],
    global_problem: str | None,
    left: list[tuple[int, str]],
) -> list[Row]:
    kills = sum(1 for life in soak.sup.lifetimes if life.ended_by == "kill -9")

    def row(name: str, failures: int, target: str = "0") -> Row:
        return Row(name, failures, None, "count", target, failures == 0)

    return [
        row(
            "runs with a seq gap (run.events after 0 vs last_seq)",
            sum(1 for c in checks if c.seq_gaps),
        ),
        row(
            "runs with a turn not ended by exactly one turn_completed",
            sum(1 for c in checks if c.turn_mismatches),
        ),
        row(
            "runs whose Redis stream differs from the store",
            sum(1 for c in checks if c.redis_problem),
        ),
        row(f"{PREFIX}events differs from the store", int(global_problem is not None)),
        row("runs not cancelled at the end", sum(1 for c in checks if c.state != "cancelled")),
        row("gaps seen by following clients", len(soak.stats.gaps)),
        row("codyd exits nobody asked for", len(soak.crashes)),
        row(
            "agents alive after the clean shutdown (live turns)",
            len(final["orphans_after_shutdown"]),
        ),
        row("agents alive after the final clean shutdown", len(left)),
        row("clean shutdowns not exiting 0", sum(1 for code in final["returncodes"] if code != 0)),
        Row(
            "clean shutdown with live turns",
            final["shutdown_s"],
            None,
            "s",
            f"≤ {SHUTDOWN_BOUND_S:g} s",
            final["shutdown_s"] <= SHUTDOWN_BOUND_S,
        ),
        row("mirror not caught up at the end", int(not final["mirror_caught_up"])),
        Row("kill -9 of codyd", kills, None, "count"),
        Row("redis-server restarts", soak.redis.restarts, None, "count"),
        Row("client sessions (followed, then dropped)", soak.stats.sessions.total(), None, "count"),
    ]


def run_table(checks: list[RunCheck]) -> str:
    lines = [
        "| run | state | turns | events | last_seq | seq gaps | turn mismatches"
        " | redis entries | redis | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        cells = [
            c.run_id,
            c.state,
            c.turns,
            c.events,
            c.last_seq,
            c.seq_gaps,
            len(c.turn_mismatches),
            c.redis_entries,
            c.redis_problem or "equal",
            "pass" if c.passed else "FAIL",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the chaos phase")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--clients", type=int, default=8, help="client threads following and dropping"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-kill",
        action="store_true",
        help="never kill codyd: one daemon lifetime, to see whether its RSS levels off",
    )
    parser.add_argument(
        "--polite",
        action="store_true",
        help="clients end every stream with rpc.cancel and read its end before closing",
    )
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("soak: redis-server is not installed", file=sys.stderr)
        return 2
    root = short_tempdir()
    drops = ("polite",) if args.polite else ABRUPT_DROPS
    soak = Soak(root, args.minutes, args.runs, args.clients, args.seed, drops, not args.no_kill)
    try:
        soak.redis.start()
        soak.sup.start()
        soak.run_ids += start_runs(root, soak.sup.socket_path, args.runs)
        soak.chaos()
        final = soak.finish()
        checks, global_problem = soak.verify()
        soak.sup.shutdown()
        final["returncodes"] = [final["shutdown_returncode"], soak.sup.current.returncode]
        left = orphans(set(soak.run_ids))
    finally:
        if soak.sup.alive():
            soak.sup.daemon.stop()
        kill_orphans(orphans(set(soak.run_ids)))
        soak.redis.stop()
    rows = invariant_rows(soak, final, checks, global_problem, left) + lifetime_rows(
        soak.sup.lifetimes
    )
    print(run_table(checks) + "\n")
    print(markdown_table(rows))
    result = BenchResult(
        "soak",
        rows,
        details={
            "args": vars(args),
            "runs": [vars(c) for c in checks],
            "global_stream_problem": global_problem,
            "lifetimes": [life.to_json() for life in soak.sup.lifetimes],
            "crashes": soak.crashes,
            "clients": {
                "sessions": dict(soak.stats.sessions),
                "drops": dict(soak.stats.drops),
                "errors": dict(soak.stats.errors),
                "frames": soak.stats.frames,
                "connect_failures": soak.stats.connect_failures,
                "gaps": soak.stats.gaps[:50],
            },
            "final": final,
            "orphans_at_end": left,
        },
    )
    path = write_json("soak", {"results": [result.to_json()]})
    for signature, times in Counter(crash["signature"] for crash in soak.crashes).items():
        print(f"codyd exited by itself {times}×: {signature}")
    print(f"\nresults written to {path}")
    if result.passed:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"state dir and logs kept for inspection: {root}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
