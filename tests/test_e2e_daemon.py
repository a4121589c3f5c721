"""End to end: the codyd process itself — its commands, state dir, store version, signals, peers."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

import codyd

from conftest import Daemon, agent, pid_alive, wait_until


def codyd_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codyd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    """codyd --version prints the package version."""
    result = codyd_cmd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"codyd {codyd.__version__}"


def test_check_config_accepts_and_refuses(tmp_path: Path) -> None:
    """check-config prints the effective config, and refuses a bad key naming it."""
    good = tmp_path / "good.toml"
    good.write_text('max_active_runs = 3\n[agents.codex]\nbin = "/opt/codex"\n')
    result = codyd_cmd("check-config", "--config", str(good))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["max_active_runs"] == 3
    assert summary["agents"]["codex"]["bin"] == "/opt/codex"
    bad = tmp_path / "bad.toml"
    bad.write_text("max_active_runs = 'many'\n")
    result = codyd_cmd("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert "max_active_runs" in result.stderr
    result = codyd_cmd("check-config", env={"CODYD_NO_SUCH_KEY": "1"})
    assert result.returncode == 2 and "CODYD_NO_SUCH_KEY" in result.stderr


def test_check_config_lists_every_problem_with_defaults_checked_as_runs_are(
    tmp_path: Path,
) -> None:
    """A default that would make every run.start fail is refused with the others, one a line."""
    bad = tmp_path / "bad.toml"
    bad.write_text("max_active_runs = 'many'\n[defaults.completion]\nstop_file = '/etc/stop'\n")
    result = codyd_cmd("check-config", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "codyd: configuration errors (2):"
    assert "config key 'max_active_runs'" in lines[1]
    assert "config key 'defaults.completion.stop_file'" in lines[2]
    assert "workspace-relative" in lines[2]
    assert result.stdout == ""


def test_store_from_a_newer_codyd_is_refused_untouched(daemon_factory) -> None:
    """A store with a newer schema version makes codyd exit 1 with a clear message; the file is unchanged."""
    daemon = daemon_factory(start=False)
    daemon.state_dir.mkdir(parents=True)
    db = daemon.state_dir / "codyd.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x)")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    daemon.start(wait=False)
    assert daemon.wait_exit(20) == 1
    assert "newer codyd" in daemon.log()
    assert db.read_bytes() == before


def test_store_survives_restart(daemon: Daemon) -> None:
    """Runs and their events are still there after a restart; seq and gid continue."""
    daemon.start_run(agent("printer"), run_id="keep", max_turns=1)
    daemon.wait_state("keep", "completed")
    before = daemon.events("keep")
    daemon.stop()
    daemon.start()
    assert daemon.events("keep") == before
    daemon.call(
        "run.start",
        {
            "workspace": str(daemon.workspace("w2")),
            "prompt": "p",
            "command": agent("printer"),
            "max_turns": 1,
            "run_id": "next",
        },
    )
    daemon.wait_state("next", "completed")
    first = daemon.events("next")[0]
    assert first["seq"] == 1 and first["gid"] > before[-1]["gid"]


def test_sigint_stops_turns_like_sigterm(daemon: Daemon) -> None:
    """SIGINT to codyd stops the live turn's process group and exits 0."""
    daemon.start_run(agent("sleeper"), run_id="int")
    pid = daemon.wait_event("int", "turn_started")["data"]["pid"]
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit(15) == 0
    assert not pid_alive(pid)
    daemon.start()
    kinds = [e["type"] for e in daemon.events("int")]
    assert "run_interrupted" in kinds
    daemon.call("run.cancel", {"run_id": "int"})


def test_socket_file_mode_and_directory(daemon_factory) -> None:
    """The socket gets socket_mode (default 0660) and a directory codyd creates gets 0750."""
    daemon = daemon_factory(start=False)
    nested = daemon.root / "run" / "codyd.sock"
    daemon.extra_args = ["--socket", str(nested)]
    daemon.start(wait=False)
    wait_until(nested.exists, what="the socket")
    assert oct(nested.stat().st_mode & 0o777) == "0o660"
    assert oct(nested.parent.stat().st_mode & 0o777) == "0o750"


@pytest.mark.skipif(os.getuid() != 0, reason="dropping to another uid needs root")
def test_peer_not_allowed_gets_unauthorized(daemon_factory) -> None:
    """A connection from a uid that is not allowed gets unauthorized (id null) and is closed."""
    daemon = daemon_factory(env={"CODYD_SOCKET_MODE": "0666"}, start=False)
    daemon.root.chmod(0o755)
    daemon.start()
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child drops to nobody and reports what it got
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(str(daemon.socket))
            data = b""
            while chunk := sock.recv(4096):  # codyd speaks first, then closes
                data += chunk
            os.write(write_end, data)
        except BaseException as exc:
            os.write(write_end, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.waitpid(child, 0)
    (length,) = struct.unpack(">I", data[:4])
    response = msgpack.unpackb(data[4 : 4 + length])
    assert response["id"] is None and response["error"]["code"] == "unauthorized"
    assert len(data) == 4 + length  # nothing else: the connection was closed
    assert daemon.call("daemon.ping")["pong"] is True


def test_allowed_uids_lets_a_peer_in(daemon_factory) -> None:
    """A uid listed in allowed_uids may use the daemon."""
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    nobody = pwd.getpwnam("nobody")
    daemon = daemon_factory(
        env={"CODYD_SOCKET_MODE": "0666", "CODYD_ALLOWED_UIDS": f"[{nobody.pw_uid}]"}, start=False
    )
    daemon.root.chmod(0o755)
    daemon.start()
    assert _ping_as_nobody(daemon.socket) == 0


def _ping_as_nobody(socket_path: Path) -> int:
    """Fork a child that drops to nobody and pings; its exit status says what it got."""
    nobody = pwd.getpwnam("nobody")
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(str(socket_path))
            body = msgpack.packb({"id": 1, "method": "daemon.ping"})
            sock.sendall(struct.pack(">I", len(body)) + body)
            header = sock.recv(4)
            response = msgpack.unpackb(sock.recv(struct.unpack(">I", header)[0]))
            code = 0 if response.get("result", {}).get("pong") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.WEXITSTATUS(status)


def test_allowed_groups_lets_a_group_member_in(daemon_factory) -> None:
    """A peer whose gid is in allowed_groups (by name) may use the daemon."""
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    import grp

    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    daemon = daemon_factory(
        env={"CODYD_SOCKET_MODE": "0666", "CODYD_ALLOWED_GROUPS": f'["{group}"]'}, start=False
    )
    daemon.root.chmod(0o755)
    daemon.start()
    assert _ping_as_nobody(daemon.socket) == 0


def test_logs_tell_a_runs_story(daemon: Daemon, tmp_path: Path) -> None:
    """JSON log lines with the run's run_id tell its story: states, turns with pid, signals."""
    pids = tmp_path / "pids"
    daemon.start_run(agent("ignorer", pids), run_id="story", sigkill_delay_s=0.3)
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="pids")
    daemon.call("run.cancel", {"run_id": "story"})
    daemon.wait_state("story", "cancelled")
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    story = [line for line in lines if line.get("run_id") == "story"]
    events = [line["event"] for line in story]
    assert events[0] == "run queued"
    states = [
        (line["from_state"], line["to_state"])
        for line in story
        if line["event"] == "run state changed"
    ]
    assert states == [("queued", "running"), ("running", "cancelling"), ("cancelling", "cancelled")]
    started = next(line for line in story if line["event"] == "turn started")
    assert started["turn"] == 1 and isinstance(started["pid"], int)
    signals = [line["signal"] for line in story if line["event"] == "signal sent"]
    assert signals == ["SIGTERM", "SIGKILL"]
    assert all(line["pid"] == started["pid"] for line in story if line["event"] == "signal sent")
    completed = next(line for line in story if line["event"] == "turn completed")
    assert completed["outcome"] == "aborted"
    assert all({"timestamp", "level", "event"} <= set(line) for line in lines)


def test_codyd_man_page_covers_its_commands_and_options() -> None:
    """codyd man prints a roff page made from its own click definitions."""
    result = codyd_cmd("man")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith(".TH CODYD 1 ")
    for command in ("serve", "check\\-config", "man"):
        assert f".SS {command} [OPTIONS]" in page
    assert "\\-\\-state\\-dir" in page and "\\-\\-redis\\-url" in page
    assert ".SH EXIT STATUS" in page and "CODYD_CONFIG" in page
