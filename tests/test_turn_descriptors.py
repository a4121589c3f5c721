"""A turn and a stop with the daemon's descriptors (nearly) used up, and a vanished workspace.

In-process, with RLIMIT_NOFILE lowered around the one call under test: real
agents, real pipes, real signals.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import trio

from codyd.runs import procs
from codyd.runs.turn import Turn, TurnHooks, TurnPlan, TurnResult, agent_environment

from conftest import pid_alive, wait_until

SLEEP = shutil.which("sleep") or "/bin/sleep"


@contextlib.contextmanager
def descriptors_left(free: int) -> Iterator[None]:
    """Only ``free`` more descriptors can be opened inside the block.

    A new descriptor takes the lowest free number, and the limit caps that number:
    so the limit is the number the (free + 1)-th new descriptor would take.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open("/dev/null", os.O_RDONLY)  # the number the listing itself takes
    os.close(probe)
    used = {int(fd) for fd in os.listdir("/proc/self/fd")} - {probe}
    unused = (n for n in range(hard) if n not in used)
    limit = next(n for i, n in enumerate(unused) if i == free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def plan_for(tmp_path: Path, argv: list[str], cwd: Path | None = None) -> TurnPlan:
    workspace = str(cwd or tmp_path)
    return TurnPlan(
        run_id="fd", n=1, argv=argv, cwd=workspace,
        env=agent_environment(dict(os.environ), {}, "fd", 1, workspace), prompt=b"hi",
        turn_dir=tmp_path / "turn", max_log_bytes=1 << 20, max_line_bytes=1 << 16,
        turn_timeout_s=30, stall_timeout_s=30, sigkill_delay_s=0.5,
    )  # fmt: skip


def run_turn(plan: TurnPlan, free: int | None = None) -> tuple[TurnResult, list[int]]:
    started: list[int] = []
    hooks = TurnHooks(
        on_started=lambda pid, ticks: started.append(pid),
        on_output=lambda *args: None,
        on_activity=lambda: None,
        on_event=lambda type_, data: None,
    )

    async def main() -> TurnResult:
        turn = Turn(plan, hooks)
        await trio.to_thread.run_sync(lambda: None)  # the worker thread exists beforehand
        if free is None:
            return await turn.run()
        with descriptors_left(free):
            return await turn.run()

    return trio.run(main), started


def test_no_descriptor_for_the_turn_files_is_a_spawn_failure(tmp_path: Path) -> None:
    """EMFILE opening the turn's files: spawn_failed naming EMFILE, retryable (not fatal)."""
    result, started = run_turn(plan_for(tmp_path, [SLEEP, "0"]), free=0)
    assert result.outcome == "spawn_failed" and not result.fatal
    assert result.error_message is not None and "EMFILE" in result.error_message
    assert "turn's files" in result.error_message
    assert not started


def test_no_descriptor_for_the_spawn_is_a_spawn_failure(tmp_path: Path) -> None:
    """EMFILE in the spawn itself (the turn's files took the last three): spawn_failed naming EMFILE."""
    result, started = run_turn(plan_for(tmp_path, [SLEEP, "0"]), free=3)
    assert result.outcome == "spawn_failed" and not result.fatal
    assert result.error_message is not None and "EMFILE" in result.error_message
    assert f"cannot start {SLEEP!r}" in result.error_message
    assert not started
    assert not (tmp_path / "turn" / "turn.pid").exists()


def test_a_vanished_workspace_is_named(tmp_path: Path) -> None:
    """A cwd that is gone is reported as the workspace, not as a missing binary; no retry helps."""
    gone = tmp_path / "ws"
    result, _ = run_turn(plan_for(tmp_path, [SLEEP, "0"], cwd=gone))
    assert result.outcome == "spawn_failed" and result.fatal
    assert result.error_message is not None
    assert f"workspace {gone} is gone" in result.error_message
    assert "cannot start" not in result.error_message


def stop_with(free: int) -> None:
    agent = subprocess.Popen([SLEEP, "20"], start_new_session=True)
    try:

        async def main() -> bool:
            async with trio.open_nursery() as nursery:
                # Like the turn, someone reaps the agent (needs no descriptor).
                nursery.start_soon(trio.to_thread.run_sync, agent.wait)
                await trio.to_thread.run_sync(lambda: None)
                with descriptors_left(free), trio.fail_after(10):
                    await procs.stop_group(agent.pid, 0.5)
                return pid_alive(agent.pid)

        assert not trio.run(main), "the stop returned with the agent alive"
    finally:
        agent.kill()
        agent.wait()
    wait_until(lambda: not pid_alive(agent.pid), what="the agent to be gone")


def test_stop_with_no_descriptor_left_kills_the_group() -> None:
    """os.scandir(/proc) fails with EMFILE: the group is still signalled, the stop waits for it."""
    stop_with(0)


def test_stop_with_one_descriptor_left_kills_the_group() -> None:
    """/proc can be listed but no stat opened: that is no look at all, not "gone"."""
    stop_with(1)
