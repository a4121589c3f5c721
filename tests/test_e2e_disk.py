"""End to end: a daemon whose state directory fills up, turns read-only, or loses codyd.db."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest
from disk_faults import ext4_image, fill, force_read_only, need_root, small_tmpfs

from codyd.errors import CodydError

from conftest import Daemon, agent, wait_until

# The SIGTERM bound (operations.md 2.1): the largest sigkill_delay_s of the live turns
# (default 5 s) plus 10 s.
SIGTERM_BOUND_S = 15.0
# These file systems are far below the disk guard's default min_free_bytes: it is off here
# (test_e2e_disk_guard.py tests it).
FAST = {"CODYD_HEARTBEAT_S": "0.1", "CODYD_MIN_FREE_BYTES": "0"}


def chatty(daemon: Daemon, run_id: str = "chatty") -> dict[str, Any]:
    """A run that prints a line every 2 ms for minutes, in one turn."""
    return daemon.start_run(agent("ticker", 0.002, 500_000), run_id=run_id, max_turns=1)


def store_info(daemon: Daemon) -> dict[str, Any]:
    return daemon.call("daemon.info")["store"]  # type: ignore[no-any-return]


def wait_unwritable(daemon: Daemon, timeout: float = 20.0) -> dict[str, Any]:
    def down() -> dict[str, Any] | None:
        info = store_info(daemon)
        return info if not info["writable"] else None

    return wait_until(down, timeout, "daemon.info to report the store cannot write")  # type: ignore[no-any-return]


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    lines = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def store_errors(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in log_lines(daemon) if e["event"].startswith("store cannot write")]


def log_warnings(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in log_lines(daemon) if e["event"].startswith("turn log cannot be written")]


def assert_refused(daemon: Daemon, method: str, params: dict[str, Any]) -> CodydError:
    with pytest.raises(CodydError) as refused:
        daemon.call(method, params)
    error = refused.value
    assert error.code == "overloaded" and error.retryable, error
    assert "store" in error.message and "cannot write" in error.message, error.message
    return error


def assert_serving(daemon: Daemon, run_id: str) -> None:
    """Status, list and events answer (from memory and what was committed)."""
    assert daemon.call("run.status", {"run_id": run_id})["state"] == "running"
    assert run_id in [r["run_id"] for r in daemon.call("run.list")["runs"]]
    assert daemon.events(run_id)


def sigterm_within_bound(daemon: Daemon) -> float:
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(SIGTERM_BOUND_S + 5) == 0, daemon.log()[-3000:]
    elapsed = time.monotonic() - started
    assert elapsed < SIGTERM_BOUND_S, elapsed
    print(f"SIGTERM to exit: {elapsed:.2f} s")
    return elapsed


def gapless(events: list[dict[str, Any]]) -> list[int]:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    return seqs


def test_full_disk_stops_new_work_keeps_serving_and_recovers(daemon_factory) -> None:
    """Fill the state dir's file system under a chatty run: the daemon lives, answers,
    reports the error, refuses changes; when space returns, the run goes on with gapless
    events; filled again, SIGTERM still ends in its bound and nothing acknowledged is lost."""
    daemon = daemon_factory(start=False, env=FAST)
    with small_tmpfs(daemon.state_dir, "8m"):
        daemon.start()
        chatty(daemon)
        daemon.wait_event("chatty", "subprocess_output")
        filler = fill(daemon.state_dir)
        info = wait_unwritable(daemon)
        assert "full" in info["last_error"] and "No space left" in info["last_error"], info
        assert info["path"] == str(daemon.state_dir / "codyd.db")
        assert info["since"] <= time.time()
        wait_until(lambda: store_info(daemon)["pending_events"] > 0, 10, "events held in memory")
        assert_serving(daemon, "chatty")
        assert_refused(
            daemon,
            "run.start",
            {
                "workspace": str(daemon.workspace("other")),
                "prompt": "p",
                "command": agent("printer"),
            },
        )
        assert_refused(daemon, "run.pause", {"run_id": "chatty"})
        wait_until(
            lambda: any(
                e["event"].startswith("cannot write the heartbeat") for e in log_lines(daemon)
            ),
            10,
            "the heartbeat failure to be logged",
        )

        wait_until(lambda: log_warnings(daemon), 10, "the turn's log to stop")
        filler.unlink()
        wait_until(lambda: store_info(daemon)["writable"], 20, "the store to write again")
        assert store_info(daemon)["last_error"] is None
        held = daemon.call("run.status", {"run_id": "chatty"})["last_seq"]
        # The run goes on: events beyond what was held while the disk was full.
        try:
            wait_until(
                lambda: daemon.call("run.status", {"run_id": "chatty"})["last_seq"] > held + 5,
                10,
                "the run to go on",
            )
        except AssertionError as exc:
            status = daemon.call("run.status", {"run_id": "chatty"})
            raise AssertionError(f"{exc}: {status}\n{daemon.log()[-6000:]}") from None
        seen = gapless(daemon.events("chatty"))
        assert len(store_errors(daemon)) == 1, store_errors(daemon)
        heartbeat_warnings = [
            e for e in log_lines(daemon) if e["event"].startswith("cannot write the heartbeat")
        ]
        assert len(heartbeat_warnings) == 1, heartbeat_warnings
        # The turn's stdout.log stopped where the disk filled; the turn went on.
        assert [e["path"] for e in log_warnings(daemon)] == [
            str(daemon.state_dir / "runs" / "chatty" / "turns" / "1" / "stdout.log")
        ]
        assert daemon.proc is not None and daemon.proc.poll() is None

        # Full again, and SIGTERM: the bound holds whatever the disk does.
        filler = fill(daemon.state_dir)
        wait_unwritable(daemon)
        sigterm_within_bound(daemon)
        assert any("not committed" in e["event"] for e in log_lines(daemon)), daemon.log()[-3000:]
        filler.unlink()

        daemon.start()
        after = gapless(daemon.events("chatty"))
        assert after[: len(seen)] == seen


def test_file_system_turned_read_only_under_the_daemon(daemon_factory) -> None:
    """The kernel turns the state dir's file system read-only (as after an I/O error): the
    daemon lives, reports it, refuses changes, stops within its bound; a restart on it
    exits 1 with one line naming the directory."""
    daemon = daemon_factory(start=False, env=FAST)
    with ext4_image(daemon.state_dir):
        daemon.start()
        chatty(daemon)
        daemon.wait_event("chatty", "subprocess_output")
        force_read_only(daemon.state_dir)
        info = wait_unwritable(daemon)
        assert "Read-only file system" in info["last_error"], info
        assert_serving(daemon, "chatty")
        assert_refused(daemon, "run.cancel", {"run_id": "chatty"})
        assert len(store_errors(daemon)) == 1
        sigterm_within_bound(daemon)

        result = subprocess.run(
            daemon_argv(daemon), capture_output=True, text=True, timeout=30, env=daemon_env()
        )
        assert result.returncode == 1, result
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("codyd: ") and str(daemon.state_dir) in message, message
        assert "Read-only file system" in message, message


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_store_file_deleted_or_replaced_under_the_daemon(daemon_factory, how: str) -> None:
    """codyd.db deleted (or replaced) under a running daemon is noticed and said loudly;
    no change is accepted and no new turn starts, rather than writing into the old file."""
    daemon = daemon_factory(env=FAST)
    # Many short turns: the next one would start at once.
    daemon.start_run(agent("printer"), run_id="turns", max_turns=100_000)
    daemon.wait_event("turns", "turn_completed")
    db = daemon.state_dir / "codyd.db"
    db.unlink()
    if how == "replaced":
        db.write_bytes(b"")
    info = wait_unwritable(daemon, timeout=10)
    assert how in info["last_error"], info
    errors = store_errors(daemon)
    assert len(errors) == 1 and errors[0]["level"] == "error", errors
    assert str(db) in errors[0]["error"]
    assert_refused(
        daemon,
        "run.start",
        {"workspace": str(daemon.workspace("other")), "prompt": "p", "command": agent("printer")},
    )
    wait_until(
        lambda: any(
            e["event"].startswith("run waits for the store") and e.get("run_id") == "turns"
            for e in log_lines(daemon)
        ),
        10,
        "the driver to hold its next turn",
    )
    turn = daemon.call("run.status", {"run_id": "turns"})["current_turn"]
    sigterm_within_bound(daemon)
    turns_dir = daemon.state_dir / "runs" / "turns" / "turns"
    assert not (turns_dir / str(turn + 1)).exists()
    if how == "replaced":
        assert db.read_bytes() == b""
    else:
        assert not db.exists()


def test_state_dir_removed_under_the_daemon(daemon_factory) -> None:
    """The whole state dir removed: the heartbeat failure is logged once and is not fatal."""
    daemon = daemon_factory(env=FAST)
    shutil.rmtree(daemon.state_dir)
    wait_unwritable(daemon, timeout=10)

    def heartbeat_warnings() -> list[dict[str, Any]]:
        return [e for e in log_lines(daemon) if e["event"].startswith("cannot write the heartbeat")]

    wait_until(heartbeat_warnings, 10, "the heartbeat failure to be logged")
    # Later beats fail too (debug), and the daemon goes on answering.
    wait_until(
        lambda: (
            len([e for e in log_lines(daemon) if e["event"].startswith("heartbeat file still")])
            >= 3
        ),
        10,
        "more failed beats",
    )
    assert len(heartbeat_warnings()) == 1
    assert daemon.call("daemon.ping")["pong"] is True
    sigterm_within_bound(daemon)


def daemon_env() -> dict[str, str]:
    env = {**os.environ, "CODYD_LOG_LEVEL": "info"}
    env.pop("CODYD_CONFIG", None)
    return env


def daemon_argv(daemon: Daemon) -> list[str]:
    return [
        "python3",
        "-m",
        "codyd",
        "serve",
        "--socket",
        str(daemon.socket),
        "--state-dir",
        str(daemon.state_dir),
    ]


def test_unwritable_store_at_start_touches_no_run(daemon_factory) -> None:
    """codyd.db not writable at start: exit 1 with one line naming it, before recovery."""
    need_root()
    daemon = daemon_factory()
    info = daemon.start_run(agent("sleeper"), run_id="left", max_turns=1)
    daemon.wait_event(info["run_id"], "turn_started")
    pid = daemon.call("run.status", {"run_id": "left"})["pid"]
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait()
    os.kill(pid, signal.SIGKILL)
    daemon.socket.unlink()  # left by the killed daemon: a new one would mean it listened
    db = daemon.state_dir / "codyd.db"
    before = db.read_bytes()
    # Root writes a 0444 file anyway: a read-only bind mount of the file is what stops it.
    subprocess.run(["mount", "--bind", str(db), str(db)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(db)], check=True, timeout=30)
        started = time.monotonic()
        result = subprocess.run(
            daemon_argv(daemon), capture_output=True, text=True, timeout=30, env=daemon_env()
        )
        assert time.monotonic() - started < 20
    finally:
        subprocess.run(["umount", str(db)], check=True, timeout=30)
    assert result.returncode == 1, result
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"codyd: the store {db} cannot"), message
    assert "readonly" in message, message
    assert "run recovered" not in result.stderr and "lost turn" not in result.stderr
    assert db.read_bytes() == before
    assert not daemon.socket.exists()
    # Writable again, the same store recovers the run: the test above could have failed.
    daemon.start()
    daemon.wait_event("left", "run_recovered")


def test_full_disk_at_start_exits_with_one_line(daemon_factory) -> None:
    """A state dir with no byte left at start: exit 1 with one line, nothing recovered."""
    daemon = daemon_factory(start=False)
    with small_tmpfs(daemon.state_dir, "8m"):
        daemon.start()
        daemon.stop()
        filler = fill(daemon.state_dir)
        result = subprocess.run(
            daemon_argv(daemon), capture_output=True, text=True, timeout=30, env=daemon_env()
        )
        assert result.returncode == 1, result
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("codyd: ") and str(daemon.state_dir) in message, message
        assert "No space left on device" in message, message
        filler.unlink()
        daemon.start()
