"""Real disk faults for tests: a size-limited tmpfs, filled, remounted read-only.

Mounting needs root (CI runs as root); elsewhere the tests that need it are skipped
with the reason. As root a mount that fails is a test failure, not a skip: CI must
really exercise a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILL_CHUNK = 64 * 1024


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs these as root)")


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if missing), unmounted afterwards."""
    need_root()
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path))
    try:
        yield path
    finally:
        # Lazy: a daemon the test failed to stop must not leave the mount behind.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def remount(path: Path, mode: str) -> None:
    """Remount the tmpfs at ``path`` ``ro`` or ``rw`` (root ignores chmod, not this).

    Linux refuses ``ro`` while a file is open for writing there: for a running daemon
    use :func:`ext4_image` and :func:`force_read_only`.
    """
    _mount("-o", f"remount,{mode}", str(path))


@contextlib.contextmanager
def ext4_image(path: Path, size: str = "32M") -> Iterator[Path]:
    """An ext4 file system in an image file, loop-mounted at ``path`` with errors=remount-ro."""
    need_root()
    path.mkdir(parents=True, exist_ok=True)
    image = path.with_name(path.name + ".img")
    subprocess.run(["truncate", "-s", size, str(image)], check=True, timeout=30)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    _mount("-o", "loop,errors=remount-ro", str(image), str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
        image.unlink(missing_ok=True)


def force_read_only(path: Path) -> None:
    """Make the ext4 at ``path`` fail as a real one does: the kernel turns it read-only
    under the files open for writing (what ``mount -o remount,ro`` refuses to do)."""
    with open("/proc/mounts") as mounts:
        device = next(line.split()[0] for line in mounts if line.split()[1] == str(path))
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    trigger.write_text("codyd test: forced read-only\n")


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in ``directory`` until its file system has no byte left."""
    filler = directory / name
    chunk = b"\0" * FILL_CHUNK
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                written = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]
                continue
            if written < len(chunk):
                chunk = chunk[: max(1, len(chunk) // 2)]
    finally:
        os.close(fd)
