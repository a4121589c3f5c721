"""The methods of the socket protocol (docs/protocol.md §5): parameter checks and dispatch."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import trio

from codyd import __version__
from codyd.checks import MAX_INT64, is_int_in, is_str_map
from codyd.config import Config
from codyd.errors import InvalidParams, NotFound, Overloaded, Trimmed, UnknownMethod
from codyd.model.events import Event
from codyd.model.layout import LOG_STREAMS
from codyd.model.record import RunRecord
from codyd.model.state import Phase, State
from codyd.protocol import MAX_LIST_LIMIT, PROTOCOL_VERSION, Encoded
from codyd.runs.supervisor import Supervisor
from codyd.server import OUT_OF_DESCRIPTORS, Call
from codyd.store import Store

LOG_CHUNK = 65536
STATE_NAMES = frozenset(state.value for state in State)
LOG_POLL_S = 0.1


# -- parameter checks: each names the field and what was expected --------------------------


def allow_only(params: Mapping[str, Any], *names: str) -> None:
    for key in params:
        if key not in names:
            raise InvalidParams(
                key, f"unknown parameter; expected one of {', '.join(names) or 'none'}"
            )


def opt_int(
    params: Mapping[str, Any], name: str, minimum: int = 0, maximum: int = MAX_INT64
) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not is_int_in(value, minimum, maximum):
        raise InvalidParams(name, f"expected an integer from {minimum} to {maximum}, got {value!r}")
    return value


def opt_bool(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidParams(name, f"expected true or false, got {value!r}")
    return value


def opt_str(params: Mapping[str, Any], name: str, max_len: int = 1000) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidParams(name, f"expected a string of at most {max_len} characters")
    return value


def opt_str_list(
    params: Mapping[str, Any], name: str, allowed: frozenset[str] | None = None
) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidParams(name, "expected a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or (allowed is not None and item not in allowed):
            expected = f"one of {', '.join(sorted(allowed))}" if allowed else "a string"
            raise InvalidParams(f"{name}.{index}", f"expected {expected}, got {item!r}")
    return value


# Refused while the store cannot write: their answer promises something durable.
MUTATING_METHODS = frozenset(
    {"run.start", "run.pause", "run.resume", "run.cancel", "run.retry", "run.forget"}
    | {"run.update", "run.say"}
)


# -- the methods --------------------------------------------------------------------------------


class DaemonView(Protocol):
    """What the methods use of the daemon that serves them (:class:`codyd.daemon.Daemon`)."""

    config: Config
    store: Store
    supervisor: Supervisor
    stopping: bool  # shutting down: streams end

    def info(self) -> dict[str, Any]: ...

    def request_shutdown(self, reason: str) -> None: ...


class Methods:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.supervisor = daemon.supervisor
        self.store = daemon.store
        self.table: dict[str, Callable[[Call, Mapping[str, Any]], Awaitable[Any]]] = {
            "daemon.hello": self.hello,
            "daemon.ping": self.ping,
            "daemon.info": self.info,
            "daemon.shutdown": self.shutdown,
            "run.start": self.start,
            "run.status": self.status,
            "run.get": self.status,
            "run.list": self.list_runs,
            "run.pause": self.pause,
            "run.resume": self.resume,
            "run.cancel": self.cancel,
            "run.retry": self.retry,
            "run.events": self.events,
            "run.logs": self.logs,
            "run.forget": self.forget,
            "run.update": self.update,
            "run.say": self.say,
            "rpc.cancel": self.rpc_cancel,
        }

    async def dispatch(self, call: Call) -> Any:
        method = self.table.get(call.request.method)
        if method is None:
            raise UnknownMethod(f"unknown method {call.request.method!r}")
        if call.request.method in MUTATING_METHODS:
            self.store.refuse_if_unwritable()
        return await method(call, call.request.params)

    # daemon.*

    async def hello(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "protocol", "client")
        protocol = params.get("protocol")
        if protocol != PROTOCOL_VERSION or isinstance(protocol, bool):
            raise InvalidParams("protocol", f"expected {PROTOCOL_VERSION}, got {protocol!r}")
        opt_str(params, "client")
        return {
            "server": "codyd",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "node": self.daemon.config.node,
            "pid": os.getpid(),
        }

    async def ping(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params)
        return {"pong": True, "time": time.time()}

    async def info(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params)
        return self.daemon.info()

    async def shutdown(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params)
        self.daemon.request_shutdown("daemon.shutdown")
        return {"ok": True}

    # run.* control

    async def start(self, call: Call, params: Mapping[str, Any]) -> Any:
        return await self.supervisor.start(dict(params))

    async def status(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id")
        record = self.supervisor.get(params.get("run_id"))
        await self.store.settle()
        return record.snapshot()

    async def pause(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id", "reason", "now")
        reason = opt_str(params, "reason")
        now = opt_bool(params, "now")
        return await self.supervisor.pause(params.get("run_id"), reason, now)

    async def resume(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id")
        return await self.supervisor.resume(params.get("run_id"))

    async def cancel(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id", "reason")
        reason = opt_str(params, "reason")
        return await self.supervisor.cancel(params.get("run_id"), reason)

    async def retry(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id", "reason")
        reason = opt_str(params, "reason")
        return await self.supervisor.retry(params.get("run_id"), reason)

    async def list_runs(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "states", "labels", "limit", "cursor")
        states = set(opt_str_list(params, "states", STATE_NAMES))
        labels = params.get("labels") or {}
        if not is_str_map(labels):
            raise InvalidParams("labels", "expected a map of strings to strings")
        limit = opt_int(params, "limit", 1, MAX_LIST_LIMIT) or 100
        cursor = opt_str(params, "cursor")
        position = _parse_cursor(cursor) if cursor else None
        page: list[RunRecord] = []
        for record in self.store.newest_first(position):
            if states and record.state.value not in states:
                continue
            if any(record.spec.labels.get(k) != v for k, v in labels.items()):
                continue
            page.append(record)
            if len(page) > limit:
                break
        more = len(page) > limit
        page = page[:limit]
        next_cursor = f"{page[-1].created_at!r}/{page[-1].run_id}" if more and page else None
        await self.store.settle()
        runs = Encoded.array([record.packed_summary() for record in page])
        return Encoded.map({"runs": runs, "cursor": next_cursor})

    async def forget(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id")
        return await self.supervisor.forget(params.get("run_id"))

    async def update(self, call: Call, params: Mapping[str, Any]) -> Any:
        fields = {key: value for key, value in params.items() if key != "run_id"}
        return await self.supervisor.update(params.get("run_id"), fields)

    async def say(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id", "text")
        return await self.supervisor.say(params.get("run_id"), params.get("text"))

    # streams

    async def events(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id", "after", "follow", "types")
        run_id = params.get("run_id")
        record = self.supervisor.get(run_id) if run_id is not None else None
        after = opt_int(params, "after")
        follow = opt_bool(params, "follow")
        types = opt_str_list(params, "types") or None
        await self.store.settle()
        if record is not None:
            cursor = start_cursor(after, record.last_seq, record.oldest_seq, f"run {record.run_id}")
        else:
            oldest = await self.store.oldest_gid()
            cursor = start_cursor(after, self.store.committed_gid, oldest, "all runs")
        return await self._follow_events(call, record, cursor, types, follow)

    async def _follow_events(
        self,
        call: Call,
        record: RunRecord | None,
        cursor: int,
        types: list[str] | None,
        follow: bool,
    ) -> dict[str, Any]:
        store = self.store
        finish_at_gid: int | None = None
        keepalive_s = self.daemon.config.keepalive_s
        last_sent = trio.current_time()
        # A follower of one run wakes on every commit, but reads only when one held
        # something of its run: many followers must not each query on every commit.
        unread = True
        read_at: int | None = None
        while True:
            batch, read_at = await self._read_batch(record, cursor, types, read_at, unread)
            unread = bool(batch)  # a batch may be one of several: read on at once
            for event in batch:
                await call.send_item("event", event.to_wire())
                cursor = event.seq if record is not None else event.gid
                last_sent = trio.current_time()
            if call.end_reason is not None:
                return {"end": call.end_reason, "last_seq": cursor}
            if batch:
                continue
            if not follow:
                return {"end": "caught_up", "last_seq": cursor}
            if record is not None and record.terminal:
                # Finished once a read made after the final event's commit found nothing.
                if finish_at_gid is not None and store.committed_gid >= finish_at_gid:
                    return {"end": "finished", "last_seq": cursor}
                finish_at_gid = store.next_gid - 1
                if store.committed_gid >= finish_at_gid:
                    continue
            if self.daemon.stopping:
                call.end("shutdown")
                continue
            if _committed_mark(store, record) != read_at:
                continue  # a commit landed during the read and woke nobody: read again
            # Commits that bring this stream nothing do not count as activity.
            idle_for = trio.current_time() - last_sent
            await call.wait(store.wait_committed, max(0.0, keepalive_s - idle_for))
            if call.end_reason is None and trio.current_time() - last_sent >= keepalive_s:
                await call.send_item("keepalive", True)
                last_sent = trio.current_time()

    async def _read_batch(
        self,
        record: RunRecord | None,
        cursor: int,
        types: list[str] | None,
        read_at: int | None,
        unread: bool,
    ) -> tuple[list[Event], int | None]:
        """A stream's next events, and the commit mark its read began at.

        With nothing left ``unread`` and no commit of the run since ``read_at``, there is
        nothing new, and no query is made.
        """
        committed = _committed_mark(self.store, record)
        if record is not None and not unread and committed == read_at:
            return [], read_at
        run_id = record.run_id if record is not None else None
        return await self.store.read_events(run_id, cursor, types), committed

    async def logs(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "run_id", "turn", "stream", "offset", "follow")
        record = self.supervisor.get(params.get("run_id"))
        turn = opt_int(params, "turn", 1)
        if turn is None:
            turn = record.current_turn
        stream = params.get("stream", "stdout") or "stdout"
        if stream not in LOG_STREAMS:
            raise InvalidParams("stream", f"expected 'stdout' or 'stderr', got {stream!r}")
        offset = opt_int(params, "offset") or 0
        follow = opt_bool(params, "follow")
        if turn == 0 or turn > record.current_turn:
            raise NotFound(f"run {record.run_id} has no turn {turn} yet")
        log_file = _LogFile(self.supervisor.layout.turn_log(record.run_id, turn, stream))
        with log_file:
            return await self._follow_log(call, record, log_file, turn, stream, offset, follow)

    async def _follow_log(
        self,
        call: Call,
        record: RunRecord,
        log_file: _LogFile,
        turn: int,
        stream: str,
        offset: int,
        follow: bool,
    ) -> dict[str, Any]:
        keepalive_s = self.daemon.config.keepalive_s
        last_sent = trio.current_time()
        while True:
            sent_from = offset
            offset = await self._send_log(call, log_file, turn, stream, offset)
            now = trio.current_time()
            if offset != sent_from:
                last_sent = now
            elif follow and now - last_sent >= keepalive_s:
                await call.send_item("keepalive", True)
                last_sent = now
            if call.end_reason is not None:
                return {"end": call.end_reason, "last_seq": record.last_seq}
            if not follow:
                return {"end": "caught_up", "last_seq": record.last_seq}
            if _turn_over(record, turn):
                offset = await self._send_log(call, log_file, turn, stream, offset)
                return {"end": "turn_finished", "last_seq": record.last_seq}
            if self.daemon.stopping:
                call.end("shutdown")
                continue
            await call.wait(trio.sleep_forever, LOG_POLL_S)

    async def _send_log(
        self, call: Call, log_file: _LogFile, turn: int, stream: str, offset: int
    ) -> int:
        while call.end_reason is None:
            data = log_file.read(offset)
            if not data:
                break
            await call.send_item(
                "chunk", {"turn": turn, "stream": stream, "offset": offset, "data": data}
            )
            offset += len(data)
        return offset

    async def rpc_cancel(self, call: Call, params: Mapping[str, Any]) -> Any:
        allow_only(params, "id")
        target_id = opt_int(params, "id")
        if target_id is None:
            raise InvalidParams("id", "expected the id of a request in flight")
        target = call.connection.calls.get(target_id)
        if target is None:
            raise NotFound(f"no request {target_id} in flight on this connection")
        if target.is_stream:
            target.end("cancelled")
        return {"ok": True}


def _committed_mark(store: Store, record: RunRecord | None) -> int | None:
    """What a follower compares to know whether a commit may hold something for it."""
    return store.committed_seq(record.run_id) if record is not None else store.committed_gid


def start_cursor(after: int | None, newest: int, oldest: int, what: str) -> int:
    """Where a stream starts: after ``newest`` (only new events), or after the client's cursor."""
    if after is None:
        return newest
    if after == 0:
        return max(0, oldest - 1)
    if after < oldest - 1:
        raise Trimmed(f"events of {what} before {oldest} were trimmed", oldest_seq=oldest)
    return after


def _turn_over(record: RunRecord, turn: int) -> bool:
    return record.current_turn > turn or record.phase is not Phase.IN_TURN


class _LogFile:
    """A turn's log, opened once it exists and kept open while it is followed.

    The logs are append-only: a follower polling ten times a second reads from
    one handle instead of opening the file again each time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None

    def read(self, offset: int) -> bytes:
        if self._handle is None:
            try:
                self._handle = self.path.open("rb")
            except FileNotFoundError:
                return b""
            except OSError as exc:
                if exc.errno in OUT_OF_DESCRIPTORS:
                    raise Overloaded("codyd is out of file descriptors; retry later") from None
                raise
        self._handle.seek(offset)
        return self._handle.read(LOG_CHUNK)

    def __enter__(self) -> _LogFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()


def _parse_cursor(cursor: str) -> tuple[float, str]:
    created, _, run_id = cursor.partition("/")
    try:
        return (float(created), run_id)
    except ValueError:
        raise InvalidParams("cursor", "expected a cursor returned by run.list") from None
