"""Starting agent processes: pipes, new session, exit status, and no descriptor left behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from codyd.runs.spawn import CHILDREN, AgentProcess, spawn


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


async def test_agent_gets_stdin_and_its_output_and_status_come_back() -> None:
    script = "import sys; data = sys.stdin.read(); print(data.upper()); sys.stderr.write('e'); sys.exit(3)"
    before = open_fds()
    proc = AgentProcess(
        await trio.to_thread.run_sync(spawn, [sys.executable, "-c", script], "/", dict(os.environ))
    )
    await proc.stdin.send_all(b"hello")
    await proc.stdin.aclose()
    out = b""
    while chunk := await proc.stdout.receive_some():
        out += chunk
    err = await proc.stderr.receive_some()
    with trio.fail_after(10):
        assert await proc.wait() == 3
    assert proc.returncode == 3
    assert out.strip() == b"HELLO"
    assert err == b"e"
    proc.close()
    assert open_fds() == before


async def test_agent_runs_in_its_own_session_and_directory(tmp_path: Path) -> None:
    script = "import os; print(os.getsid(0) == os.getpid(), os.getcwd())"
    proc = AgentProcess(spawn([sys.executable, "-c", script], str(tmp_path), dict(os.environ)))
    with trio.fail_after(10):
        await proc.wait()
    out = await proc.stdout.receive_some()
    proc.close()
    assert out.decode().split() == ["True", str(tmp_path)]


def test_a_missing_binary_raises_and_leaks_nothing(tmp_path: Path) -> None:
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        spawn([str(tmp_path / "no-such-agent")], "/", {})
    with pytest.raises(FileNotFoundError):
        spawn(["true"], str(tmp_path / "no-such-dir"), dict(os.environ))
    assert open_fds() == before


async def test_the_registry_forgets_an_agent_once_it_is_reaped_and_never_twice() -> None:
    """Reaped: no longer owned. Closed later, it must not unregister a newer agent of that pid."""
    proc = AgentProcess(spawn(["true"], "/", dict(os.environ)))
    assert CHILDREN.owns(proc.pid)
    with trio.fail_after(10):
        assert await proc.wait() == 0
    assert not CHILDREN.owns(proc.pid)
    CHILDREN._begin()  # a newer agent that was given the same pid
    CHILDREN._end(proc.pid)
    try:
        proc.close()
        assert CHILDREN.owns(proc.pid)
    finally:
        CHILDREN.release(proc.pid)
