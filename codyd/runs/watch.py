"""Workspace files codyd looks at: watched logs (docs/events.md §3.3) and the stop file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from codyd.spec import RunSpec

TAIL_BYTES = 1024


class LogWatcher:
    """Remembers each watched file's size; :meth:`check` reports what grew since."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files  # event path -> file
        self.sizes = {name: _size(path) for name, path in files.items()}

    def check(self) -> list[dict[str, Any]]:
        updates = []
        for name, path in self.files.items():
            size = _size(path)
            before = self.sizes[name]
            if size < before:
                before = 0  # truncated or replaced: everything now in it is new
            self.sizes[name] = size
            if size > before:
                updates.append(
                    {"path": name, "bytes_added": size - before, "tail": _tail(path, before, size)}
                )
        return updates


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, start: int, end: int) -> str:
    """The last ≤ 1 KiB of the bytes appended between ``start`` and ``end``."""
    begin = max(start, end - TAIL_BYTES)
    try:
        with path.open("rb") as handle:
            handle.seek(begin)
            data = handle.read(end - begin)
    except OSError:
        return ""
    # Do not start inside a multi-byte character.
    skip = 0
    while skip < min(3, len(data)) and begin > start and (data[skip] & 0xC0) == 0x80:
        skip += 1
    return data[skip:].decode("utf-8", "replace")


def watched_files(workspace: str, names: tuple[str, ...]) -> dict[str, Path]:
    return {os.path.normpath(name): Path(workspace) / name for name in names}


def stop_file_present(spec: RunSpec, created_at: float) -> bool:
    """``completion.stop_file`` exists and was not left there before the run was created."""
    name = spec.completion.stop_file
    if name is None:
        return False
    try:
        mtime = spec.resolve(name).stat().st_mtime
    except OSError:
        return False
    return mtime >= created_at - 1.0
