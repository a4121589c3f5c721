"""Resumable streams for codyctl: follow events or logs across daemon restarts.

A cursor knows where a stream is and builds the request that resumes it; the
loop reconnects with capped exponential backoff after a lost connection, a
``shutting_down`` answer or an ``end: shutdown``, so nothing is handled twice
or skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import click

from codyctl.client import (
    DEFAULT_TIMEOUT_S,
    Client,
    ConnectError,
    ConnectionLost,
    DeadlineExceeded,
    resolve_socket_path,
)
from codyd.errors import ShuttingDown, Trimmed

# A followed stream is presumed dead after this long without a frame: three keepalive intervals.
FOLLOW_IDLE_TIMEOUT_S = 45.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0

Item = dict[str, Any]
ItemHandler = Callable[[Item], None]


class Settings(NamedTuple):
    """The global options, shared by every command."""

    socket: str | None
    json: bool
    timeout: float | None

    def open(self, *, following: bool = False, deadline: float | None = None) -> Client:
        """Connect; a followed stream tolerates idle gaps between keepalives."""
        timeout = DEFAULT_TIMEOUT_S if self.timeout is None else self.timeout
        if following:
            timeout = max(timeout, FOLLOW_IDLE_TIMEOUT_S)
        client = Client.connect(self.socket, timeout)
        client.deadline = deadline
        return client

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.open() as client:
            return client.call(method, params)


def present(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that were given: no ``None``, no empty lists or maps."""
    return {key: value for key, value in fields.items() if value not in (None, [], {})}


class StreamCursor(Protocol):
    """Where a stream is: builds the request that resumes it after a reconnect."""

    method: str

    def params(self, follow: bool) -> dict[str, Any]: ...

    def advance(self, item: Item) -> None: ...

    def absorb_end(self, result: dict[str, Any]) -> None: ...

    def rewind(self, exc: Trimmed) -> None: ...


class EventCursor:
    """A ``run.events`` position: the run's ``seq``, or the global ``gid`` over all runs."""

    method = "run.events"

    def __init__(self, run_id: str | None, types: list[str], after: int | None = None) -> None:
        self.run_id = run_id
        self.types = types
        self.after = after

    def params(self, follow: bool) -> dict[str, Any]:
        return present(
            {"run_id": self.run_id, "after": self.after, "follow": follow, "types": self.types}
        )

    def advance(self, item: Item) -> None:
        position = item.get("seq" if self.run_id is not None else "gid")
        if isinstance(position, int):
            self.after = position

    def absorb_end(self, result: dict[str, Any]) -> None:
        # With no event seen yet, the stream's end position is where "new events" began.
        last_seq = result.get("last_seq")
        if self.after is None and isinstance(last_seq, int):
            self.after = last_seq

    def rewind(self, exc: Trimmed) -> None:
        oldest_seq = exc.data.get("oldest_seq")
        if not isinstance(oldest_seq, int) or (
            self.after is not None and oldest_seq - 1 <= self.after
        ):
            raise exc
        click.echo(f"codyctl: events before seq {oldest_seq} were trimmed", err=True)
        self.after = oldest_seq - 1


class LogCursor:
    """A ``run.logs`` position: the turn and the byte offset after the last chunk."""

    method = "run.logs"

    def __init__(self, run_id: str, stream: str, turn: int | None) -> None:
        self.run_id = run_id
        self.stream = stream
        self.turn = turn
        self.offset: int | None = None

    def params(self, follow: bool) -> dict[str, Any]:
        return present(
            {
                "run_id": self.run_id,
                "stream": self.stream,
                "turn": self.turn,
                "offset": self.offset,
                "follow": follow,
            }
        )

    def advance(self, item: Item) -> None:
        self.turn = item.get("turn", self.turn)
        self.offset = int(item.get("offset", 0)) + len(item.get("data", b""))

    def absorb_end(self, result: dict[str, Any]) -> None:
        pass

    def rewind(self, exc: Trimmed) -> None:
        raise exc


class Backoff:
    """Capped exponential pauses between reconnects; gives up ``give_up_s`` after the loss."""

    def __init__(self, give_up_s: float | None, deadline: float | None) -> None:
        self.give_up_s = give_up_s
        self.deadline = deadline
        self.delay = BACKOFF_FIRST_S
        self.lost_at: float | None = None

    def connected(self) -> None:
        if self.lost_at is not None:
            click.echo("codyctl: reconnected", err=True)
        self.lost_at = None

    def progressed(self) -> None:
        self.delay = BACKOFF_FIRST_S

    def pause(self, cause: Exception) -> None:
        """Sleep before the next attempt, or raise ``cause`` once it is time to give up."""
        now = time.monotonic()
        if self.lost_at is None:
            self.lost_at = now
            # Said once per loss, so that a silent follower is never mistaken for a hung one.
            click.echo("codyctl: reconnecting to codyd…", err=True)
        if self.give_up_s is not None and now - self.lost_at >= self.give_up_s:
            raise cause
        pause = self.delay
        if self.deadline is not None:
            if now >= self.deadline:
                raise DeadlineExceeded("the deadline passed while reconnecting to codyd")
            pause = min(pause, self.deadline - now)
        time.sleep(pause)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)


def run_stream(
    settings: Settings,
    cursor: StreamCursor,
    on_item: ItemHandler,
    *,
    follow: bool,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Run a stream to its final result; when following, outlive daemon restarts.

    After a lost connection, a ``shutting_down`` answer or an ``end: shutdown``,
    it reconnects and resumes after the last item handled, so nothing is handled
    twice or skipped. Only the first connection must succeed at once.
    """
    backoff = Backoff(settings.timeout, deadline)
    connected = False
    while True:
        try:
            with settings.open(following=follow, deadline=deadline) as client:
                connected = True
                backoff.connected()
                for item in client.stream(cursor.method, cursor.params(follow)):
                    on_item(item)
                    cursor.advance(item)
                    backoff.progressed()
                result = client.last_stream_result or {}
        except Trimmed as exc:
            cursor.rewind(exc)
            continue
        except (ConnectError, ShuttingDown) as exc:
            if not (follow and connected):
                raise
            backoff.pause(exc)
            continue
        if not (follow and result.get("end") == "shutdown"):
            return result
        cursor.absorb_end(result)
        path = resolve_socket_path(settings.socket)
        backoff.pause(ConnectionLost(f"codyd at {path} shut down", path))
