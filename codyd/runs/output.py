"""The output pipeline of a turn: bytes → capped log file, lines, paced output events.

Each piece is a small object with one job, tested alone: :class:`CappedLog`
keeps the complete output on disk, :class:`LineSplitter` cuts bytes into lines
(splitting absurdly long ones), :class:`OutputThrottle` paces and coalesces
``subprocess_output`` events (docs/events.md §5).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import structlog

log = structlog.get_logger("codyd.run")

OUTPUT_INTERVAL_S = 0.1
OUTPUT_TEXT_BYTES = 2048


class CappedLog:
    """An append-only log file that stops growing at ``cap`` bytes and says so once.

    A file that cannot be written (a full disk, an I/O error, no descriptor left)
    stops the log where it is, never the turn: what follows is counted as dropped,
    and closing tries to append one line saying why.
    """

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.written = 0
        self.dropped = 0
        self.error: OSError | None = None
        self._fd = -1
        self._closed = False
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self._stop(exc)

    def write(self, data: bytes) -> None:
        room = self.cap - self.written if self.error is None else 0
        if room > 0:
            chunk = data[:room]
            done = self._write_all(chunk)
            self.written += done
            self.dropped += len(chunk) - done
        self.dropped += max(0, len(data) - max(room, 0))

    def _write_all(self, data: bytes) -> int:
        """Write all of ``data``, or stop the log at the first error; the bytes written."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                done += os.write(self._fd, view[done:])
            except OSError as exc:
                self._stop(exc)
                break
        return done

    def _stop(self, exc: OSError) -> None:
        self.error = exc
        log.warning(
            "turn log cannot be written; the rest of this output is dropped",
            path=str(self.path),
            error=str(exc),
            written=self.written,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd < 0:
            return
        if self.error is not None:
            why = self.error.strerror or str(self.error)
            marker = (
                f"\n[codyd: log stopped at {self.written} bytes: {why}; "
                f"{self.dropped} bytes dropped]\n"
            )
        elif self.dropped:
            marker = f"\n[codyd: log capped at {self.cap} bytes; {self.dropped} bytes dropped]\n"
        else:
            marker = ""
        if marker:
            # Once, and only if it fits: a disk that is still full just keeps it.
            with contextlib.suppress(OSError):
                os.write(self._fd, marker.encode())
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1


class Line(NamedTuple):
    text: bytes
    split: bool  # True when the line was cut at max_line_bytes (more of it follows)


class LineSplitter:
    """Cuts a byte stream into lines; a line longer than ``max_line_bytes`` is split."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back: the start of a line whose end has not come yet."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[Line]:
        if self._partial:
            data = bytes(self._partial) + data
            self._partial.clear()
        parts = data.split(b"\n")
        rest = parts.pop()  # what follows the last newline: an unfinished line
        lines: list[Line] = []
        limit = self.max_line_bytes
        for part in parts:
            if len(part) <= limit:
                lines.append(Line(part[:-1] if part.endswith(b"\r") else part, False))
            else:
                lines.extend(self._cut(part))
        if rest:
            self._partial += rest
            lines.extend(self._take_full_pieces())
        return lines

    def _take_full_pieces(self) -> list[Line]:
        """Pieces of the unfinished line that cannot be its last one.

        A trailing CR is not counted: if LF follows, it is not part of the line.
        """
        size = self.max_line_bytes
        known = len(self._partial) - self._partial.endswith(b"\r")
        cut = (known - 1) // size * size if known > 0 else 0
        pieces = [Line(bytes(self._partial[i : i + size]), split=True) for i in range(0, cut, size)]
        del self._partial[:cut]
        return pieces

    def _cut(self, line: bytes) -> list[Line]:
        size = self.max_line_bytes
        if line.endswith(b"\r"):
            line = line[:-1]
        pieces = [line[i : i + size] for i in range(0, len(line), size)] or [b""]
        result = [Line(piece, split=True) for piece in pieces[:-1]]
        result.append(Line(pieces[-1], split=False))
        return result

    def flush(self) -> list[Line]:
        if not self._partial:
            return []
        rest = bytes(self._partial)
        self._partial.clear()
        return self._cut(rest)


def _utf8_prefix(data: bytes, limit: int) -> bytes:
    """The longest prefix of ``data`` of at most ``limit`` bytes that ends on a character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


class OutputThrottle:
    """Coalesces output into events at most ``max_bytes`` long and ``interval`` apart.

    Pending text is kept per stream; bytes that do not fit the next event are
    counted in its ``dropped_bytes``. The caller decides when an event is due
    (see :meth:`next_due`) so timing stays in one place. Instants are the
    caller's clock; the pipeline passes ``trio.current_time()`` so a
    ``trio.testing.MockClock`` paces it in tests.
    """

    def __init__(self, interval: float = OUTPUT_INTERVAL_S, max_bytes: int = OUTPUT_TEXT_BYTES):
        self.interval = interval
        self.max_bytes = max_bytes
        self.last_emit = float("-inf")
        self._pending: dict[str, bytearray] = {}
        self._dropped: dict[str, int] = {}

    def add(self, stream: str, text: str | bytes) -> None:
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        if stream in self._dropped:
            # Once something was left out, later text is too: an event's text never has a hole.
            self._dropped[stream] += len(data)
            return
        buffer = self._pending.setdefault(stream, bytearray())
        room = self.max_bytes - len(buffer)
        kept = _utf8_prefix(data, max(room, 0))
        buffer += kept
        dropped = len(data) - len(kept)
        if dropped:
            self._dropped[stream] = self._dropped.get(stream, 0) + dropped

    def has_pending(self) -> bool:
        return bool(self._pending)

    def next_due(self) -> float:
        return self.last_emit + self.interval

    def take(self, now: float) -> dict[str, Any] | None:
        """The next event's data (oldest stream first), or None if nothing waits."""
        if not self._pending:
            return None
        stream = next(iter(self._pending))
        buffer = self._pending.pop(stream)
        data: dict[str, Any] = {"stream": stream, "text": buffer.decode("utf-8", "replace")}
        dropped = self._dropped.pop(stream, 0)
        if dropped:
            data["dropped_bytes"] = dropped
        self.last_emit = now
        return data
