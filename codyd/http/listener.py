"""The HTTP listener: hypercorn's trio server in the daemon's nursery.

The socket is bound by :meth:`HttpListener.bind` before any run is touched (a
taken port is a start-up error), then handed to hypercorn by descriptor. The
limits that keep a client from hurting the daemon: h11 refuses a request head
still incomplete past ``MAX_HEAD_BYTES`` (a header flood; hypercorn reads 64 KiB
at a time, so a whole head within one read is taken up to that), an idle
connection is closed after ``KEEP_ALIVE_S``, a body over ``max_frame_bytes`` is
refused with 413 before it is read, and at shutdown a connection still open
after ``GRACE_S`` is cut.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from codyd.errors import StartupError
from codyd.http.adapter import Adapter
from codyd.http.app import HttpApi
from codyd.http.hub import SseHub
from codyd.http.metrics import Metrics
from codyd.http.refusals import install as json_refusals

if TYPE_CHECKING:
    from codyd.http.view import HttpDaemon

MAX_HEAD_BYTES = 16 * 1024
KEEP_ALIVE_S = 5.0
GRACE_S = 0.5  # within the second the daemon keeps for what follows the turns
BACKLOG = 512
WILDCARDS = frozenset({"0.0.0.0", "::"})


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (as config normalises it) → (host, port)."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


class HttpListener:
    def __init__(self, daemon: HttpDaemon, address: str) -> None:
        self.address = address
        self.metrics = Metrics(daemon, daemon.methods.table)
        self.adapter = Adapter(daemon.methods, daemon.server, self.metrics)
        self.hub = SseHub(daemon)
        self.app = HttpApi(daemon, self.adapter, self.metrics, self.hub).app()
        self._sock: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self._closed = trio.Event()

    def bind(self) -> None:
        host, port = split_address(self.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            # Listening from now on: a client that connects before hypercorn runs waits.
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise StartupError(
                f"cannot listen on http_listen={self.address}: {exc.strerror or exc}"
            ) from None
        self._sock = sock
        self._bound = sock.getsockname()[:2]

    def _hypercorn_config(self, fd: int) -> HypercornConfig:
        json_refusals()
        config = HypercornConfig()
        config.bind = [f"fd://{fd}"]
        config.backlog = BACKLOG
        config.h11_max_incomplete_size = MAX_HEAD_BYTES
        config.h2_max_header_list_size = MAX_HEAD_BYTES
        config.keep_alive_timeout = KEEP_ALIVE_S
        config.graceful_timeout = GRACE_S
        config.include_server_header = False
        config.accesslog = None
        config.errorlog = logging.getLogger("codyd.http.server")
        return config

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._sock is not None, "bind() first"
        config = self._hypercorn_config(self._sock.detach())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cut_after_grace)
            await nursery.start(self._serve, config)
            # The hub ends with the listener: once the server has stopped, nothing reads it.
            nursery.start_soon(self._hub_until_closed)
            task_status.started()

    async def _serve(
        self, config: HypercornConfig, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        # Starlette's ASGI types are looser than hypercorn's; the app is ASGI 3 all the same.
        app = cast(ASGIFramework, self.app)
        await serve(app, config, shutdown_trigger=self._closed.wait, task_status=task_status)

    async def _hub_until_closed(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.hub.run)
            await self._closed.wait()
            await trio.sleep(GRACE_S + 0.1)  # the streams still open may read the ring
            nursery.cancel_scope.cancel()

    def end_streams(self) -> None:
        """Every open stream ends now (the daemon is stopping): SSE clients reconnect later."""
        self.adapter.end_streams("shutdown")

    def close(self) -> None:
        """Stop accepting; what is still open GRACE_S later is cut."""
        self._closed.set()

    async def _cut_after_grace(self) -> None:
        try:
            await self._closed.wait()
            with trio.CancelScope(shield=True):
                await trio.sleep(GRACE_S + 0.1)
        finally:
            self._cut_connections()

    def status(self) -> dict[str, Any]:
        """``daemon.info.http``: where the listener is, and the dashboard's URL."""
        host, port = split_address(self.address)
        shown = f"[{host}]" if ":" in host else host
        return {"enabled": True, "listen": self.address, "url": f"http://{shown}:{port}/"}

    def _accepted_here(self, sock: socket.socket) -> bool:
        """A socket of this listener: its port, and its address unless bound to every one."""
        assert self._bound is not None
        host, port = sock.getsockname()[:2]
        bound_host, bound_port = self._bound
        return bool(port == bound_port and (bound_host in WILDCARDS or host == bound_host))

    def _cut_connections(self) -> None:
        """Shut down every accepted socket of the listener, whatever its task is doing.

        hypercorn writes a response under a cancel shield: a client that stops
        reading would hold that write, and so the daemon's shutdown, forever.
        Shutting the socket down fails the write at once.
        """
        if self._bound is None:
            return
        descriptors: list[str] = []
        with contextlib.suppress(OSError):
            descriptors = os.listdir("/proc/self/fd")
        for name in descriptors:
            with contextlib.suppress(OSError, ValueError):
                fd = int(name)
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                with socket.socket(fileno=os.dup(fd)) as sock:
                    if sock.type != socket.SOCK_STREAM or not self._accepted_here(sock):
                        continue
                    sock.getpeername()  # the listening socket has no peer: skipped
                    sock.shutdown(socket.SHUT_RDWR)
