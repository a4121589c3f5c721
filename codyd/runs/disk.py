"""The disk guard: no turn starts while the state directory's disk is nearly full.

A monitor task looks at the free space under the state directory every
``disk_check_s`` seconds (one ``statvfs`` in a worker thread) and adds up the
directory's own size every ``SIZE_EVERY_S`` and when the disk goes low (a walk
of it, also in a worker thread). Below ``min_free_bytes`` the disk is *low*:
run drivers about to start a turn wait (``phase: "waiting"``, ``wait.reason = "disk_full"``)
until a check finds the space back, then go on by themselves. See
docs/operations.md, "Disk".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

log = structlog.get_logger("codyd.disk")

CHECK_S = 5.0
SIZE_EVERY_S = 60.0
# How often a waiting driver checks whether it should stop waiting (pause, cancel, shutdown).
WAIT_POLL_S = 0.2

FreeBytes = Callable[[Path], int]


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def directory_bytes(path: Path) -> int:
    """The space the files under ``path`` take on disk (as ``du`` counts it, blocks allocated).

    Symbolic links are not followed; what cannot be read counts as nothing.
    """
    total = 0
    pending = [str(path)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                for entry in scan:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except OSError:
            continue
    return total


class DiskMonitor:
    """Free space and size of the state directory, and whether turns may start."""

    def __init__(
        self,
        state_dir: Path,
        min_free_bytes: int,
        *,
        check_s: float = CHECK_S,
        size_every_s: float = SIZE_EVERY_S,
        probe: FreeBytes = free_bytes,
    ) -> None:
        self.state_dir = state_dir
        self.min_free_bytes = min_free_bytes
        self.check_s, self.size_every_s = check_s, size_every_s
        self._probe = probe
        self.free_bytes: int | None = None
        self.state_dir_bytes: int | None = None
        self.low = False
        # Runs told (an attention event) in this low-space episode; cleared when space returns.
        self.alerted: set[str] = set()
        self._changed = trio.Event()
        self._probe_failed = False

    def info(self) -> dict[str, Any]:
        """What ``daemon.info`` shows as ``disk``."""
        return {
            "state_dir_bytes": self.state_dir_bytes,
            "free_bytes": self.free_bytes,
            "min_free_bytes": self.min_free_bytes,
            "low": self.low,
        }

    def message(self) -> str:
        free = "unknown" if self.free_bytes is None else f"{self.free_bytes} bytes"
        return (
            f"the disk of the state directory {self.state_dir} has {free} free, below "
            f"min_free_bytes={self.min_free_bytes}: no new turn starts until space is freed"
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now (before any turn can start), then every ``check_s``, forever."""
        await self.check()
        task_status.started()
        size_due = trio.current_time()
        while True:
            if trio.current_time() >= size_due:
                self.state_dir_bytes = await trio.to_thread.run_sync(
                    directory_bytes, self.state_dir
                )
                size_due = trio.current_time() + self.size_every_s
            await trio.sleep(self.check_s)
            if await self.check() and self.low:
                size_due = trio.current_time()  # what takes the space is news now

    async def check(self) -> bool:
        """One look at the free space; True when the disk went low or came back."""
        try:
            free: int | None = await trio.to_thread.run_sync(self._probe, self.state_dir)
        except OSError as exc:
            free = None  # unknown: no reason to hold turns back
            if not self._probe_failed:
                log.warning("cannot tell the free space of the state directory", error=str(exc))
            self._probe_failed = True
        else:
            self._probe_failed = False
        return self.update(free)

    def update(self, free: int | None) -> bool:
        self.free_bytes = free
        low = free is not None and free < self.min_free_bytes
        if low == self.low:
            return False
        self.low = low
        if low:
            log.warning(
                "disk space low: no new turn starts",
                free_bytes=free,
                min_free_bytes=self.min_free_bytes,
                state_dir=str(self.state_dir),
            )
        else:
            log.info("disk space back: runs go on", free_bytes=free)
            self.alerted.clear()
        self._changed.set()
        self._changed = trio.Event()
        return True

    async def wait_for_space(self, give_up: Callable[[], bool]) -> bool:
        """Wait until the disk is not low any more (True) or ``give_up()`` is true (False)."""
        while self.low and not give_up():
            with trio.move_on_after(WAIT_POLL_S):
                await self._changed.wait()
        return not self.low
