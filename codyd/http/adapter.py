"""Socket-protocol methods called over HTTP: the same table, checks, results and errors.

An HTTP request becomes a :class:`HttpCall` given to ``Methods.dispatch``; stream
items (events, log chunks, keepalives) go to the call's ``sink`` as the method
sends them, so a slow HTTP client is read for at its own pace, as on the socket.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from codyd.errors import CodydError, Internal, Overloaded
from codyd.protocol import Encoded, Request
from codyd.server import DAEMON_SIDE_CODES, Call, Connection, Peer, Server

if TYPE_CHECKING:
    from codyd.http.metrics import Metrics
    from codyd.rpc import Methods

# The one mapping from an error code to an HTTP status.
STATUS_OF_CODE: dict[str, int] = {
    "bad_request": 400,
    "invalid_params": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "unknown_method": 404,
    "method_not_allowed": 405,
    "invalid_state": 409,
    "conflict": 409,
    "trimmed": 410,
    "frame_too_large": 413,
    "internal": 500,
    "shutting_down": 503,
    "overloaded": 503,
}
RETRY_AFTER_S = "1"
# Streams (SSE, logs) open at once over HTTP; each holds a connection and a store reader.
MAX_STREAMS = 256

log = structlog.get_logger("codyd.http")

Sink = Callable[[str, Any], Awaitable[None]]


class Forbidden(CodydError):
    """A read token on a control endpoint (HTTP only: the socket knows peers, not tokens)."""

    code = "forbidden"


class MethodNotAllowed(CodydError):
    code = "method_not_allowed"


def status_of(error: dict[str, Any]) -> int:
    return STATUS_OF_CODE.get(str(error.get("code")), 500)


def error_body(error: dict[str, Any]) -> dict[str, Any]:
    """``{"error": {code, message, retryable, data}}``: data is always there, if empty."""
    return {"error": {"data": {}, **error}}


def error_headers(error: dict[str, Any], *, bearer: bool = False) -> dict[str, str]:
    headers = {}
    if status_of(error) == 503:
        headers["Retry-After"] = RETRY_AFTER_S
    if error.get("code") == "unauthorized" or bearer:
        headers["WWW-Authenticate"] = 'Bearer realm="codyd"'
    return headers


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Encoded):
        return msgpack.unpackb(value.data, raw=False)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON")


class _HttpOrigin(Connection):
    """What an HTTP call has for a connection: no socket, and no calls to cancel by id."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peer = Peer(os.getpid(), os.getuid(), os.getgid())
        self.calls: dict[int, Call] = {}

    async def send(self, message: dict[str, Any]) -> None:
        raise AssertionError("HTTP calls send through their sink")


@dataclass(slots=True)
class HttpCall(Call):
    sink: Sink | None = None
    # Called the first time the method waits: it has checked its params and begun.
    on_wait: Callable[[], Awaitable[None]] | None = None

    async def send_item(self, key: str, value: Any) -> None:
        assert self.sink is not None
        await self.sink(key, value)

    async def wait(self, waiter: Callable[[], Awaitable[Any]], timeout: float) -> bool:
        if self.on_wait is not None:
            await self.on_wait()
        return await Call.wait(self, waiter, timeout)


class Adapter:
    def __init__(self, methods: Methods, server: Server, metrics: Metrics | None) -> None:
        self.methods = methods
        self.origin = _HttpOrigin(server)
        self.metrics = metrics
        # By id(): calls are dataclasses compared by value, and so not hashable.
        self.streams: dict[int, HttpCall] = {}

    def call(
        self,
        method: str,
        params: dict[str, Any],
        sink: Sink | None = None,
        on_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> HttpCall:
        return HttpCall(
            self.origin,
            Request(0, method, params),
            is_stream=sink is not None,
            sink=sink,
            on_wait=on_wait,
        )

    async def invoke(
        self, call: HttpCall, run: Callable[[HttpCall], Awaitable[Any]] | None = None
    ) -> dict[str, Any]:
        """``{"result": ...}`` or ``{"error": {...}}``, as the socket would answer.

        ``run`` answers the call in the method's place (the SSE hub's streams); the
        limits, the errors and the metrics are the same.
        """
        began = time.perf_counter()
        try:
            if call.is_stream:
                if len(self.streams) >= MAX_STREAMS:
                    raise Overloaded(f"more than {MAX_STREAMS} HTTP streams are open")
                self.streams[id(call)] = call
            result = await (run(call) if run is not None else self.methods.dispatch(call))
            response = {"result": result}
        except CodydError as exc:
            if exc.code != "trimmed":  # as on the socket: the daemon's trouble is a warning
                report = log.warning if exc.code in DAEMON_SIDE_CODES else log.info
                report("HTTP request failed", method=call.request.method, code=exc.code)
            response = {"error": exc.to_wire()}
        except Exception:
            log.exception("request crashed", method=call.request.method)
            response = {"error": Internal("internal error; see the daemon log").to_wire()}
        finally:
            self.streams.pop(id(call), None)
        if self.metrics is not None:
            self.metrics.observe_request(call.request.method, response, time.perf_counter() - began)
        return response

    def end_streams(self, reason: str) -> None:
        for call in list(self.streams.values()):
            call.end(reason)
