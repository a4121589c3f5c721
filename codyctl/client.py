"""A blocking client for the codyd socket protocol.

One :class:`Client` is one Unix-socket connection. Requests carry increasing ids
and may be pipelined (:meth:`Client.submit` then :meth:`Client.result`); frames
are routed to the request they answer, so responses may arrive in any order.
Error responses are raised as the matching :class:`~codyd.errors.CodydError`
subclass. This module must stay light: ``codyctl`` imports it on every call.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from codyd import paths
from codyd.errors import CodydError, error_from_wire
from codyd.protocol import FrameDecoder, pack

DEFAULT_TIMEOUT_S = 30.0
# Responses may be larger than the requests a daemon accepts (snapshots, log chunks).
MAX_RESPONSE_FRAME_BYTES = 64 * 1024 * 1024
_RECV_BYTES = 256 * 1024
_STREAM_ITEM_KEYS = ("event", "chunk")


class ConnectError(Exception):
    """The daemon cannot be reached (or stopped answering) at a socket path."""

    def __init__(self, message: str, socket_path: str) -> None:
        super().__init__(message)
        self.socket_path = socket_path


class ConnectionLost(ConnectError):
    """The daemon closed the connection or it broke mid-conversation."""


class ResponseTimeout(ConnectError):
    """The daemon sent nothing for longer than the client's timeout."""


class DeadlineExceeded(Exception):
    """The caller's own deadline (:attr:`Client.deadline`) passed while waiting."""


def default_socket_path() -> str:
    """The daemon's default socket path: the very rule codyd follows (codyd.paths)."""
    return paths.default_socket_path(os.environ)


def resolve_socket_path(socket_path: str | os.PathLike[str] | None = None) -> str:
    """An explicit path wins, then ``CODYD_SOCKET``, then the default path."""
    if socket_path is not None:
        return os.fspath(socket_path)
    return os.environ.get("CODYD_SOCKET") or default_socket_path()


def start_hint(socket_path: str) -> str:
    """The command that starts a daemon listening on ``socket_path``."""
    if socket_path == resolve_socket_path():
        return "codyd serve"
    import shlex

    return f"codyd serve --socket {shlex.quote(socket_path)}"


class Client:
    """One connection to codyd; not thread-safe."""

    def __init__(
        self, socket_path: str | os.PathLike[str], timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.deadline: float | None = None
        """A ``time.monotonic()`` instant after which waiting raises :class:`DeadlineExceeded`."""
        self.last_stream_result: dict[str, Any] | None = None
        self._next_id = 1
        self._decoder = FrameDecoder(MAX_RESPONSE_FRAME_BYTES)
        self._queues: dict[int, deque[dict[str, Any]]] = {}
        self._sock = self._open_socket()

    @classmethod
    def connect(
        cls,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> Client:
        """Connect to ``socket_path``, else ``CODYD_SOCKET``, else the default path."""
        return cls(resolve_socket_path(socket_path), timeout)

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            raise ConnectError(
                f"cannot reach codyd at {self.socket_path} ({reason}); "
                f"start it with: {start_hint(self.socket_path)}",
                self.socket_path,
            ) from exc
        return sock

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result, raising its error."""
        return self.result(self.submit(method, params))

    def submit(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send one request without waiting; returns its id for :meth:`result`."""
        request_id = self._next_id
        self._next_id += 1
        self._queues[request_id] = deque()
        try:
            self._send(request_id, method, params)
        except OSError as exc:
            del self._queues[request_id]
            # codyd may have refused the connection (unauthorized, overloaded) and closed
            # it before our request went out: its reason is waiting to be read.
            self._raise_pending_refusal()
            raise self._lost(exc) from exc
        return request_id

    def _raise_pending_refusal(self) -> None:
        """Raise an id-null error codyd sent before closing, if one is buffered."""
        try:
            self._sock.settimeout(0.5)
            data = self._sock.recv(_RECV_BYTES)
        except OSError:
            return
        try:
            frames = self._decoder.feed(data)
        except CodydError:
            return
        for frame in frames:
            if frame.get("id") is None and "error" in frame:
                raise error_from_wire(frame["error"])

    def result(self, request_id: int) -> Any:
        """Wait for the response to a submitted request; stream items for it are skipped."""
        while True:
            frame = self._take(request_id)
            if self._is_final(frame):
                return self._unwrap(request_id, frame)

    def stream(self, method: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield the items of a stream; its final result lands in :attr:`last_stream_result`.

        Abandoning the iterator early cancels the stream on the daemon.
        """
        self.last_stream_result = None
        return self.items(self.submit(method, params))

    def items(self, request_id: int) -> Iterator[dict[str, Any]]:
        """Yield the items of a stream already sent with :meth:`submit` (so it can be pipelined).

        Its final result lands in :attr:`last_stream_result`; abandoning the iterator early
        cancels the stream on the daemon.
        """
        finished = False
        try:
            while True:
                frame = self._take(request_id)
                if self._is_final(frame):
                    finished = True
                    result = self._unwrap(request_id, frame)
                    self.last_stream_result = result if isinstance(result, dict) else {}
                    return
                for key in _STREAM_ITEM_KEYS:
                    if key in frame:
                        yield frame[key]
        finally:
            if not finished:
                self._abandon(request_id)

    def cancel(self, request_id: int) -> None:
        """Ask the daemon to end the stream opened by ``request_id`` (``rpc.cancel``)."""
        self.call("rpc.cancel", {"id": request_id})

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.socket_path!r}, timeout={self.timeout!r})"

    @staticmethod
    def _is_final(frame: dict[str, Any]) -> bool:
        return "result" in frame or "error" in frame

    def _unwrap(self, request_id: int, frame: dict[str, Any]) -> Any:
        self._queues.pop(request_id, None)
        if "error" in frame:
            raise error_from_wire(frame["error"])
        return frame["result"]

    def _abandon(self, request_id: int) -> None:
        """Stop routing a stream's frames and cancel it without waiting for the answer."""
        self._queues.pop(request_id, None)
        cancel_id = self._next_id
        self._next_id += 1
        # If the connection is gone, so is the stream.
        with contextlib.suppress(OSError):
            self._send(cancel_id, "rpc.cancel", {"id": request_id})

    def _send(self, request_id: int, method: str, params: dict[str, Any] | None) -> None:
        self._sock.sendall(pack({"id": request_id, "method": method, "params": params or {}}))

    def _take(self, request_id: int) -> dict[str, Any]:
        queue = self._queues.get(request_id)
        if queue is None:
            raise ValueError(f"request {request_id} is not awaiting a response on this client")
        while not queue:
            self._receive()
        return queue.popleft()

    def _receive(self) -> None:
        """Read once from the socket and route every whole frame to its request's queue."""
        timeout, deadline_bound = self._recv_timeout()
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_RECV_BYTES)
        except TimeoutError:
            if deadline_bound:
                raise DeadlineExceeded("the deadline passed while waiting for codyd") from None
            raise ResponseTimeout(
                f"codyd at {self.socket_path} sent nothing for {timeout:g} s", self.socket_path
            ) from None
        except OSError as exc:
            raise self._lost(exc) from exc
        if not data:
            raise ConnectionLost(
                f"codyd at {self.socket_path} closed the connection", self.socket_path
            )
        for frame in self._decoder.feed(data):
            self._route(frame)

    def _route(self, frame: dict[str, Any]) -> None:
        frame_id = frame.get("id")
        if frame_id is None:
            if "error" in frame:
                raise error_from_wire(frame["error"])
            return
        queue = self._queues.get(frame_id)
        if queue is not None:
            queue.append(frame)
        # Frames for abandoned streams and fire-and-forget cancels are dropped.

    def _recv_timeout(self) -> tuple[float | None, bool]:
        """The socket timeout for the next read, and whether the deadline is what bounds it."""
        if self.deadline is None:
            return self.timeout, False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed while waiting for codyd")
        if self.timeout is not None and self.timeout < remaining:
            return self.timeout, False
        return remaining, True

    def _lost(self, exc: OSError) -> ConnectionLost:
        reason = exc.strerror or str(exc)
        return ConnectionLost(
            f"connection to codyd at {self.socket_path} was lost ({reason})", self.socket_path
        )
