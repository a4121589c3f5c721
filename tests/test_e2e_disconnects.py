"""End to end: clients hanging up at random points never hurt codyd (a real daemon process).

The lifecycle test behind the crash where five `codyctl tail -f` killed after 0.7 s
took the daemon and every run with it. 1,500 random disconnect points here;
`python -m bench.disconnects --points 10000` runs the same driver at 10,000.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from disconnects import KINDS, fd_kinds, hammer, tracebacks, usage

from codyd.errors import Overloaded
from codyd.protocol import pack

from conftest import PY, Daemon, agent, wait_until

CHATTY_RUNS = 20
POINTS = 1500
# Idle memory settles after the first few hundred points; more than this is a leak.
RSS_GROWTH_KIB = 24 * 1024
FD_SLACK = 4
STORE_READERS_MAX = 40  # trio's default thread limiter bounds the store's read connections


def start_chatty_runs(daemon: Daemon, count: int) -> tuple[list[str], Path]:
    """``count`` runs printing progress events at 40/s each until ``stop`` appears."""
    stop = daemon.root / "stop"
    run_ids = []
    for index in range(count):
        params = {
            "workspace": str(daemon.workspace(f"ws{index}")),
            "prompt": "print",
            "command": agent("sentinel_stream", 40, 10**7, stop),
            "max_turns": 1,
        }
        run_ids.append(daemon.call("run.start", params)["run_id"])
    return run_ids, stop


def assert_alive(daemon: Daemon, when: str) -> None:
    try:
        daemon.call("daemon.ping")
    except Exception as exc:
        pytest.fail(f"codyd is gone {when} ({exc}):\n{daemon.log()[-3000:]}")


def last_seqs(daemon: Daemon, run_ids: list[str]) -> dict[str, int]:
    return {run_id: daemon.call("run.status", {"run_id": run_id})["last_seq"] for run_id in run_ids}


def all_advanced(daemon: Daemon, before: dict[str, int]) -> bool:
    now = last_seqs(daemon, list(before))
    return all(now[run_id] > seq for run_id, seq in before.items())


def connections_drained(daemon: Daemon) -> bool:
    return daemon.call("daemon.info")["connections"] == 1  # the asking one


def test_random_disconnects_leave_the_daemon_and_its_runs_untouched(daemon: Daemon) -> None:
    """1,500 points across every streaming method, pipelining, resets, closes and half-closes:
    the daemon stays up with no traceback, every run advances, RSS and fds stay flat."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    run_ids, stop = start_chatty_runs(daemon, CHATTY_RUNS)
    wait_until(lambda: all(last_seqs(daemon, run_ids).values()), 20, "every run to print")

    def alive() -> bool:
        return daemon.proc is not None and daemon.proc.poll() is None

    warm = hammer(daemon.socket, run_ids, 200, seed=1, daemon_alive=alive)
    assert_alive(daemon, "after the 200 warm-up points")
    wait_until(lambda: connections_drained(daemon), 10, "warm-up connections to close")
    baseline, baseline_fds = usage(pid), fd_kinds(pid)
    before = last_seqs(daemon, run_ids)

    tally = hammer(daemon.socket, run_ids, POINTS, seed=2, daemon_alive=alive)

    assert_alive(daemon, f"after {tally.points} points")
    assert tally.points == POINTS and warm.points == 200
    assert set(tally.kinds) == set(KINDS)  # every kind of point was hit
    assert tally.frames_read > 0 and not tally.client_errors.get("ConnectionRefusedError")
    wait_until(lambda: connections_drained(daemon), 10, "every dropped connection to close")
    wait_until(lambda: all_advanced(daemon, before), 10, "every run to keep printing")
    after = usage(pid)
    grown = fd_kinds(pid) - baseline_fds
    assert after.other_fds <= baseline.other_fds + FD_SLACK, (baseline, after, grown)
    assert after.store_fds <= 3 * STORE_READERS_MAX, (baseline, after, grown)
    assert after.rss_kib <= baseline.rss_kib + RSS_GROWTH_KIB, (baseline, after)
    assert not tracebacks(daemon.log())
    stop.touch()


def test_logs_reader_that_stops_after_two_lines(daemon: Daemon) -> None:
    """`codyctl logs RUN | head -2` on a chatty run: the pipe closes under megabytes of log."""
    run_id = daemon.start_run(agent("printer", 1_000_000), max_turns=1)["run_id"]

    def log_size() -> int:
        return sum(path.stat().st_size for path in daemon.state_dir.rglob("stdout.log"))

    wait_until(lambda: log_size() > 4_000_000, 30, "the run to print megabytes")
    shell = f"{PY} -m codyctl --socket {daemon.socket} logs {run_id} | head -2"
    for _ in range(5):
        done = subprocess.run(["sh", "-c", shell], capture_output=True, timeout=30, check=False)
        assert done.stdout.count(b"\n") == 2, done
    assert_alive(daemon, "after five `logs | head -2`")
    assert not tracebacks(daemon.log())


def test_three_hundred_followers_of_all_runs_dropped_at_once(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(env={"CODYD_MAX_CONNECTIONS": "400"})
    run_ids, stop = start_chatty_runs(daemon, 2)
    wait_until(lambda: all(last_seqs(daemon, run_ids).values()), 20, "the runs to print")
    request = pack({"id": 1, "method": "run.events", "params": {"after": 0, "follow": True}})
    followers = []
    for _ in range(300):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))
        sock.sendall(request)
        followers.append(sock)
    for sock in followers:
        assert sock.recv(4)  # each stream is under way
    assert daemon.call("daemon.info")["connections"] == 301
    for sock in followers:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert_alive(daemon, "after 300 followers were reset")
    wait_until(lambda: connections_drained(daemon), 10, "the followers' connections to close")
    assert not tracebacks(daemon.log())
    stop.touch()


# -- out of descriptors ---------------------------------------------------------------------------

FD_LIMIT = 64
HEARTBEAT_S = 0.2


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def start_with_fd_limit(daemon: Daemon) -> Daemon:
    """The harness's daemon, started with RLIMIT_NOFILE lowered in the child only."""
    command = [PY, "-m", "codyd", "serve", "--socket", str(daemon.socket)]
    command += ["--state-dir", str(daemon.state_dir), "--log-format", "json"]
    env = {**os.environ, "CODYD_LOG_LEVEL": "info", "CODYD_HEARTBEAT_S": str(HEARTBEAT_S)}
    env.pop("CODYD_CONFIG", None)
    with daemon.log_path.open("ab") as log:
        daemon.proc = subprocess.Popen(
            command, stdout=log, stderr=log, env=env, preexec_fn=_low_fd_limit
        )
    wait_until(lambda: daemon.socket.exists(), 20, "codyd to listen")
    return daemon


def _answer_or_close(sock: socket.socket) -> dict[str, Any] | None:
    """The first frame the daemon sends, or None if it closes first."""
    sock.settimeout(10)
    data = b""
    try:
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except ConnectionResetError:
        return None
    return msgpack.unpackb(data[4:], raw=False)  # type: ignore[no-any-return]


def test_out_of_descriptors_refuses_clients_and_recovers(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """Under RLIMIT_NOFILE=64, 80 idle clients: the daemon stays up (its heartbeat still
    writes its file), clients beyond what it can hold get `overloaded` (id null) or a close,
    and once they leave it serves again. The `accept()` EMFILE path itself is exercised in
    test_server_inprocess.py, where the limit is cut to the descriptor."""
    daemon = start_with_fd_limit(daemon_factory(start=False))
    assert daemon.proc is not None
    idle = []
    for _ in range(80):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))  # the backlog takes them all
        idle.append(sock)
    ping = pack({"id": 3, "method": "daemon.ping", "params": {}})
    answers = []
    for sock in idle:
        # A refused client may have been answered and closed before it sent anything.
        with contextlib.suppress(BrokenPipeError):
            sock.sendall(ping)
        answers.append(_answer_or_close(sock))
    pongs = [a for a in answers if a is not None and "result" in a]
    refused = [a for a in answers if a is None or "error" in a]
    assert pongs and refused, answers
    assert all(
        a is None or (a["id"] is None and a["error"]["code"] == "overloaded") for a in refused
    )
    heartbeat = daemon.state_dir / "heartbeat"
    beat = json.loads(heartbeat.read_text())["ts"]
    wait_until(lambda: heartbeat_after(heartbeat, beat + 2 * HEARTBEAT_S), 10, "two heartbeats")
    assert daemon.proc.poll() is None
    for sock in idle:
        sock.close()
    wait_until(lambda: serves(daemon), 10, "codyd to serve again")
    wait_until(lambda: "accepting connections again" in daemon.log(), 10, "the episode to end")
    log = daemon.log()
    assert log.count("cannot accept connections") == 1  # one warning for the episode
    assert not tracebacks(log)


def serves(daemon: Daemon) -> bool:
    """True once a ping is answered; `overloaded` while the refused clients' sockets close."""
    try:
        return bool(daemon.call("daemon.ping")["pong"])
    except Overloaded:
        return False


def heartbeat_after(path: Path, ts: float) -> bool:
    try:
        return bool(json.loads(path.read_text())["ts"] > ts)
    except (OSError, ValueError):
        return False  # replaced while we read it
