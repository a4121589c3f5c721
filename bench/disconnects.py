"""10,000 clients hanging up on codyd at random points while 20 runs print.

The driver is the lifecycle test's (tests/disconnects.py) at full size: every
streaming method for one run and for all runs, with and without follow, run.logs,
run.list and pipelined requests; a random delay, mostly 0–50 ms, reading or not;
then a reset, a close or a half-close. Passes when the daemon never dies, logs no
traceback, every run keeps advancing, and its memory and descriptors stay flat.
There is no floor: the figures are the daemon's own, before and after.

``python -m bench.disconnects --points 10000`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.common import PY, REPO_DIR, BenchResult, Daemon, Row, open_daemon, report
from tests.disconnects import Tally, hammer, tracebacks, usage

WARMUP_POINTS = 200
# Memory and descriptors are read after each fifth of the points: a leak grows with
# them, while a pool filling to its high-water mark levels off.
SEGMENTS = 5
RSS_GROWTH_KIB = 32 * 1024
RSS_LATE_GROWTH_KIB = 8 * 1024
FD_SLACK = 4
SENTINEL_STREAM = REPO_DIR / "tests" / "agents" / "sentinel_stream.py"


def start_runs(daemon: Daemon, count: int) -> list[str]:
    stop = daemon.state_dir.parent / "stop"
    run_ids = []
    for index in range(count):
        params = {
            "workspace": str(daemon.workspace(f"ws{index}")),
            "prompt": "print",
            "command": [PY, str(SENTINEL_STREAM), "40", str(10**7), str(stop)],
            "max_turns": 1,
        }
        run_ids.append(daemon.call("run.start", params)["run_id"])
    return run_ids


def last_seqs(daemon: Daemon, run_ids: list[str]) -> dict[str, int]:
    return {run_id: daemon.call("run.status", {"run_id": run_id})["last_seq"] for run_id in run_ids}


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def measure(points: int, threads: int, runs: int, seed: int) -> BenchResult:
    with open_daemon() as daemon:
        pid = daemon.pid
        run_ids = start_runs(daemon, runs)
        wait_for(lambda: all(last_seqs(daemon, run_ids).values()), 20)

        def alive() -> bool:
            return daemon.proc is not None and daemon.proc.poll() is None

        def drained() -> bool:
            return bool(daemon.call("daemon.info")["connections"] == 1)

        hammer(daemon.socket_path, run_ids, WARMUP_POINTS, threads, seed, alive)
        wait_for(drained, 10)
        baseline = usage(pid)
        before = last_seqs(daemon, run_ids)
        tally = Tally()
        checkpoints = [baseline]
        for segment in range(SEGMENTS):
            share = points // SEGMENTS + (segment < points % SEGMENTS)
            part = hammer(daemon.socket_path, run_ids, share, threads, seed + 1 + segment, alive)
            tally.add(part)
            tally.elapsed_s += part.elapsed_s
            if not alive():
                break
            wait_for(drained, 10)
            checkpoints.append(usage(pid))
        survived = alive()
        if survived:
            wait_for(drained, 10)
            after = usage(pid)
            wait_for(lambda: _advanced(daemon, before) == len(run_ids), 10)
            advancing = _advanced(daemon, before)
        else:
            after, advancing = baseline, 0
        log_errors = tracebacks(daemon.log())
    rows = [
        Row(
            "disconnect points", tally.points, None, "count", f"= {points}", tally.points == points
        ),
        Row("points per second", tally.points / tally.elapsed_s, None, "calls/s"),
        Row("daemon deaths", 0 if survived else 1, None, "count", "= 0", survived),
        Row("tracebacks in the daemon log", len(log_errors), None, "count", "= 0", not log_errors),
        Row("runs still advancing", advancing, None, "count", f"= {runs}", advancing == runs),
        Row(
            "RSS growth (KiB)",
            after.rss_kib - baseline.rss_kib,
            None,
            "count",
            f"≤ {RSS_GROWTH_KIB}",
            after.rss_kib - baseline.rss_kib <= RSS_GROWTH_KIB,
        ),
        Row(
            "RSS growth over the last two fifths (KiB)",
            last_growth := checkpoints[-1].rss_kib
            - checkpoints[max(0, len(checkpoints) - 3)].rss_kib,
            None,
            "count",
            f"≤ {RSS_LATE_GROWTH_KIB}",
            last_growth <= RSS_LATE_GROWTH_KIB,
        ),
        Row(
            "descriptors growth (store pool aside)",
            after.other_fds - baseline.other_fds,
            None,
            "count",
            f"≤ {FD_SLACK}",
            after.other_fds - baseline.other_fds <= FD_SLACK,
        ),
    ]
    details = {
        "points": points,
        "threads": threads,
        "runs": runs,
        "seed": seed,
        "elapsed_s": tally.elapsed_s,
        "tally": _tally_json(tally),
        "usage_before": vars(baseline),
        "usage_after": vars(after),
        "usage_checkpoints": [vars(checkpoint) for checkpoint in checkpoints],
        "log_errors": log_errors[:5],
    }
    return BenchResult("disconnects", rows, details)


def _advanced(daemon: Daemon, before: dict[str, int]) -> int:
    now = last_seqs(daemon, list(before))
    return sum(now[run_id] > seq for run_id, seq in before.items())


def _tally_json(tally: Tally) -> dict[str, Any]:
    return {
        "kinds": dict(tally.kinds),
        "endings": dict(tally.endings),
        "frames_read": tally.frames_read,
        "overloaded": tally.overloaded,
        "client_errors": dict(tally.client_errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.disconnects", description=__doc__)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(args.points, args.threads, args.runs, args.seed)
    return report([result], "disconnects")


if __name__ == "__main__":
    sys.exit(main())
