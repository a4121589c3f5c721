"""The disk monitor on trio's clock: checks, episodes and waiting drivers (MockClock)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from codyd.runs.disk import DiskMonitor, directory_bytes, free_bytes


async def until(condition: Callable[[], bool]) -> None:
    """A bounded poll in mock time, bounded in real time too (worker threads let the
    autojumping clock run ahead, so nothing here depends on exact mock instants)."""
    deadline = time.monotonic() + 10.0
    while not condition():
        assert time.monotonic() < deadline, "never got there"
        await trio.sleep(0.5)


def test_monitor_checks_on_trios_clock_and_wakes_waiters(tmp_path: Path) -> None:
    """Low at a check that sees it; a waiter returns once a check sees the space back."""
    free = {"now": 1000}
    looked: list[float] = []

    def probe(path: Path) -> int:
        looked.append(trio.from_thread.run_sync(trio.current_time))
        return free["now"]

    monitor = DiskMonitor(tmp_path, 500, check_s=5.0, size_every_s=60.0, probe=probe)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            assert not monitor.low and monitor.free_bytes == 1000
            free["now"] = 100
            await until(lambda: monitor.low)
            assert monitor.info()["free_bytes"] == 100 and monitor.info()["low"]
            await until(lambda: monitor.state_dir_bytes is not None)
            assert monitor.info()["state_dir_bytes"] == 0  # the empty directory, walked
            monitor.alerted.add("r1")
            began = trio.current_time()

            async def space_back() -> None:
                await trio.sleep(12.0)
                free["now"] = 900

            nursery.start_soon(space_back)
            assert await monitor.wait_for_space(lambda: False)
            assert trio.current_time() - began >= 12.0
            assert not monitor.low and monitor.alerted == set()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # Never more often than check_s, on trio's clock.
    assert len(looked) >= 3
    assert all(b - a >= 5.0 - 1e-6 for a, b in itertools.pairwise(looked))


def test_a_waiter_gives_up_when_told(tmp_path: Path) -> None:
    monitor = DiskMonitor(tmp_path, 500, probe=lambda path: 0)
    stop = {"now": False}

    async def main() -> bool:
        await monitor.check()
        assert monitor.low

        async def later() -> None:
            await trio.sleep(3.0)
            stop["now"] = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            return await monitor.wait_for_space(lambda: stop["now"])

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) is False


def test_an_unknown_free_space_holds_nothing(tmp_path: Path) -> None:
    def broken(path: Path) -> int:
        raise FileNotFoundError(2, "No such file or directory")

    monitor = DiskMonitor(tmp_path, 500, probe=broken)
    trio.run(monitor.check)
    assert not monitor.low and monitor.free_bytes is None


def test_sizes_are_real(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 100_000)
    assert directory_bytes(tmp_path) >= 100_000
    assert free_bytes(tmp_path) > 0
