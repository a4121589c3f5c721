"""One walk of /proc for many stops: snapshot reuse, group and mark lookups, with real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import trio

from codyd.runs.procs import TurnMark, _marks_in, group_members, stop_group, turn_processes

SLEEP = shutil.which("sleep") or "/bin/sleep"


@contextmanager
def sessions(
    count: int, env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` sleeping processes, each leading its own session; killed whatever happens."""
    procs = [
        subprocess.Popen([SLEEP, "60"], start_new_session=True, env={**os.environ, **(env or {})})
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_mark_matches_any_of_repeated_variables() -> None:
    """An environment naming a run or turn twice matches a mark made of any of its pairs."""
    environ = (
        b"A=1\0CODYD_RUN_ID=r0\0CODYD_TURN=2\0CODYD_RUN_ID=r1\0CODYD_TURN=3\0CODYD_WORKSPACE=/ws\0"
    )
    assert TurnMark("r1", 2, "/ws").key in _marks_in(environ)
    assert TurnMark("r0", 3, "/ws").key in _marks_in(environ)
    assert TurnMark("r2", 2, "/ws").key not in _marks_in(environ)
    assert TurnMark("r1", 4, "/ws").key not in _marks_in(environ)
    assert TurnMark("r1", 2, "/ws").key not in _marks_in(
        b"CODYD_RUN_ID=r1\0CODYD_TURN=22\0CODYD_WORKSPACE=/ws\0"
    )


def test_mark_of_another_workspace_does_not_match() -> None:
    """Another daemon's run with the same id and turn is told apart by its workspace."""
    environ = b"CODYD_RUN_ID=build\0CODYD_TURN=1\0CODYD_WORKSPACE=/home/a/ws\0"
    assert TurnMark("build", 1, "/home/a/ws").key in _marks_in(environ)
    assert TurnMark("build", 1, "/home/b/ws").key not in _marks_in(environ)
    assert TurnMark("build", 1, "/home/a/ws").key not in _marks_in(
        b"CODYD_RUN_ID=build\0CODYD_TURN=1\0"
    )


def test_marked_process_outside_the_group_is_found() -> None:
    """A process carrying a turn's mark belongs to the turn even in a session of its own."""
    mark = TurnMark(f"snapshot-{os.getpid()}", 7, "/ws")
    with (
        sessions(1, {"CODYD_RUN_ID": mark.run_id, "CODYD_TURN": "7", "CODYD_WORKSPACE": "/ws"}) as (
            marked,
        ),
        sessions(1) as (leader,),
    ):
        found = turn_processes(leader.pid, mark)
        assert found == {leader.pid, marked.pid}
        assert turn_processes(None, TurnMark(mark.run_id, 8, "/ws")) == set()


def test_snapshot_begun_after_the_request_is_reused() -> None:
    """A walk begun after ``since`` answers for it; a later ``since`` forces a new walk."""
    with sessions(1) as (first,):
        since = time.monotonic()
        assert group_members(first.pid, since=since) == [first.pid]
        with sessions(1) as (second,):
            # The snapshot was begun after ``since``: it stands, and predates ``second``.
            assert group_members(second.pid, since=since) == []
            assert group_members(second.pid, since=time.monotonic()) == [second.pid]


async def test_many_groups_stopped_together_all_end() -> None:
    """Stops requested together, sharing walks of /proc, each SIGTERM their own group."""
    with sessions(20) as procs:
        requested_at = time.monotonic()
        signals: list[str] = []
        async with trio.open_nursery() as nursery:
            for proc in procs:
                stop = partial(stop_group, proc.pid, 5.0, signals.append, None, requested_at)
                nursery.start_soon(stop)
        assert signals == ["SIGTERM"] * 20
        assert all(proc.wait(5) == -signal.SIGTERM for proc in procs)
        assert all(group_members(proc.pid) == [] for proc in procs)
