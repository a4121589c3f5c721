"""Process-group liveness, stopping and orphan reaping, with real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from codyd.runs.procs import (
    group_members,
    is_same_process,
    reap_orphans,
    signal_group,
    start_ticks,
    stop_group,
)

from conftest import wait_until

SLEEP = shutil.which("sleep") or "/bin/sleep"

# A group leader that ignores SIGTERM (its child inherits that), starts a child,
# prints the child's pid once both are set up, then blocks without reaping it.
STUBBORN_GROUP = textwrap.dedent(
    f"""
    import signal, subprocess, sys
    if sys.argv[1] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([{SLEEP!r}, "60"])
    print(child.pid, flush=True)
    sys.stdin.read()
    """
)


def pid_max() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


@contextmanager
def group(mode: str = "default") -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A new session (leader + one child), killed whatever happens: yields (leader, child pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_GROUP, mode],
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        yield proc, child
    finally:
        signal_group(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def started(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# -- identity -----------------------------------------------------------------------------------


def test_start_ticks_guards_against_reused_pids() -> None:
    """A live child matches its own start ticks and no other value."""
    with started([SLEEP, "30"]) as proc:
        ticks = start_ticks(proc.pid)
        assert isinstance(ticks, int)
        own = start_ticks(os.getpid())
        assert own is not None and own <= ticks
        assert is_same_process(proc.pid, ticks)
        assert is_same_process(proc.pid, None)
        assert not is_same_process(proc.pid, ticks + 1)
        assert not is_same_process(proc.pid, ticks - 1)


def test_dead_process_is_not_the_same_process() -> None:
    """A zombie, and then a reaped pid, are no longer that process."""
    proc = subprocess.Popen([SLEEP, "30"])
    try:
        ticks = start_ticks(proc.pid)
        proc.kill()
        wait_until(lambda: proc_state(proc.pid) == "Z", 10, "the child to become a zombie")
        assert not is_same_process(proc.pid, ticks)
        assert not is_same_process(proc.pid, None)
    finally:
        proc.kill()
        proc.wait()
    assert start_ticks(proc.pid) is None or not is_same_process(proc.pid, ticks)


def test_missing_pid() -> None:
    """A pid that cannot exist has no start ticks and is not alive."""
    missing = pid_max() + 1
    assert start_ticks(missing) is None
    assert not is_same_process(missing, None)


def test_command_name_with_parentheses_and_spaces(tmp_path: Path) -> None:
    """A command name holding ') (' does not confuse the /proc stat parser."""
    tricky = tmp_path / "a) b (c"
    shutil.copy(SLEEP, tricky)
    with started([str(tricky), "30"], start_new_session=True) as proc:
        wait_until(
            lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "a) b (c",
            10,
            "the copied binary to run",
        )
        ticks = start_ticks(proc.pid)
        assert ticks is not None and is_same_process(proc.pid, ticks)
        assert group_members(proc.pid) == [proc.pid]


# -- groups ---------------------------------------------------------------------------------------


def test_group_members_of_a_new_session() -> None:
    """The members of a new session are its leader and the leader's child, and no one else."""
    with group() as (leader, child):
        assert sorted(group_members(leader.pid)) == sorted([leader.pid, child])
        assert leader.pid not in group_members(os.getpgrp())


def test_group_members_skip_zombies() -> None:
    """A member that exited but was not reaped no longer counts."""
    with group() as (leader, child):
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: proc_state(child) == "Z", 10, "the child to become a zombie")
        assert group_members(leader.pid) == [leader.pid]


def test_group_of_missing_pgid_is_empty() -> None:
    """No process has a pgid above pid_max, and it cannot be signalled."""
    assert group_members(pid_max() + 1) == []
    assert not signal_group(pid_max() + 1, 0)


async def test_stop_group_escalates_to_sigkill() -> None:
    """Members ignoring SIGTERM are killed with SIGKILL once the delay has passed."""
    signals: list[str] = []
    with group("ignore") as (leader, child):
        started_at = trio.current_time()
        await stop_group(leader.pid, 0.3, on_signal=signals.append)
        elapsed = trio.current_time() - started_at
        assert signals == ["SIGTERM", "SIGKILL"]
        assert group_members(leader.pid) == []
        assert proc_state(child) in (None, "Z")
        assert 0.3 <= elapsed < 5
        assert leader.wait(5) == -signal.SIGKILL


async def test_stop_group_with_async_callback() -> None:
    """An async on_signal is awaited; a group that obeys SIGTERM gets no SIGKILL."""
    signals: list[str] = []

    async def on_signal(name: str) -> None:
        await trio.lowlevel.checkpoint()
        signals.append(name)

    with group() as (leader, _child):
        started_at = trio.current_time()
        await stop_group(leader.pid, 10.0, on_signal=on_signal)
        assert trio.current_time() - started_at < 5
        assert signals == ["SIGTERM"]
        assert group_members(leader.pid) == []
        assert leader.wait(5) == -signal.SIGTERM


async def test_stop_group_of_empty_group_sends_nothing() -> None:
    """An empty group returns at once and reports no signal."""
    signals: list[str] = []
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    with trio.fail_after(1):
        await stop_group(proc.pid, 10.0, on_signal=signals.append)
        await stop_group(pid_max() + 1, 10.0, on_signal=signals.append)
    assert signals == []


# -- orphans ---------------------------------------------------------------------------------------


def test_reap_orphans_spares_own_children() -> None:
    """Exited children codyd started are left for their owner; others are reaped."""
    proc = subprocess.Popen(["true"])
    try:
        wait_until(lambda: proc_state(proc.pid) == "Z", 10, "a zombie child")
        assert reap_orphans(lambda pid: pid == proc.pid) == (0, True)
        assert proc_state(proc.pid) == "Z"
        assert reap_orphans(lambda pid: False) == (1, False)
        assert proc_state(proc.pid) != "Z"
        assert proc_state(proc.pid) is None
        assert reap_orphans(lambda pid: False) == (0, False)
    finally:
        proc.kill()
        proc.wait()


SUBREAPER = textwrap.dedent(
    f"""
    import os, subprocess, time
    from codyd.runs.procs import become_subreaper, reap_orphans
    def zombie(pid):
        try:
            stat = open(f"/proc/{{pid}}/stat").read()
        except OSError:
            return False
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        return state == "Z" and int(parent) == os.getpid()
    assert become_subreaper()
    out = subprocess.run(
        ["sh", "-c", "{SLEEP} 30 >/dev/null 2>&1 & echo $!"], capture_output=True, check=True
    ).stdout
    orphan = int(out)
    try:
        stat = open(f"/proc/{{orphan}}/stat").read()
        assert int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid(), stat
        os.kill(orphan, 9)
        deadline = time.monotonic() + 10
        while not zombie(orphan):
            assert time.monotonic() < deadline, "the orphan never became our zombie"
            time.sleep(0.01)
        assert reap_orphans(lambda pid: False).reaped == 1
        assert not zombie(orphan)
    finally:
        try:
            os.kill(orphan, 9)
        except ProcessLookupError:
            pass
    print("ok")
    """
)


def test_subreaper_adopts_and_reaps_orphans() -> None:
    """With the subreaper flag, a grandchild whose parent exited is ours to reap."""
    result = subprocess.run(
        [sys.executable, "-c", SUBREAPER], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
