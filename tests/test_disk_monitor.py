"""The disk monitor on trio's clock: checks, episodes and waiting drivers (MockClock)."""

from __future__ import annotations

import itertools
from pathlib import Path

import trio
import trio.testing

from codyd.runs.disk import DiskMonitor, directory_bytes, free_bytes


def test_monitor_checks_on_trios_clock_and_wakes_waiters(tmp_path: Path) -> None:
    """Low after the first check that sees it; a waiter returns at the check that sees space."""
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
            await trio.sleep(5.5)
            assert monitor.low and monitor.info()["free_bytes"] == 100
            assert monitor.info()["state_dir_bytes"] == 0  # the empty directory, walked
            monitor.alerted.add("r1")
            began = trio.current_time()

            async def space_back() -> None:
                await trio.sleep(12.0)
                free["now"] = 900

            nursery.start_soon(space_back)
            assert await monitor.wait_for_space(lambda: False)
            # Back at the first check after the space returned (checks at 15, 20: 20 s).
            assert 12.0 <= trio.current_time() - began <= 12.0 + 5.0
            assert not monitor.low and monitor.alerted == set()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [round(b - a, 6) for a, b in itertools.pairwise(looked)][:3] == [5.0] * 3


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
