"""The socket server: Unix stream socket, framing, peer credentials, limits.

The wire side is docs/protocol.md: transport §1, framing §2, messages §3, limits §7.

Each connection has one reader (frames in), request tasks (one per request, so
responses may go out of order) and a send lock so frames never interleave.
Protocol errors are answered and the connection closed; no client can crash
the daemon or slow another connection.

Faults stop at one place, :meth:`Server.handle`, which owns a connection from
accept to close: a peer that resets, closes or half-closes its socket ends that
connection and its calls (:class:`PeerGone`); any other exception escaping a
connection is a bug, logged with its traceback, and it too ends only that
connection. Clients are refused before they take the descriptors the daemon
keeps for its own files, and running out of descriptors in ``accept()`` pauses
accepting instead of ending the server.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import resource
import socket as stdsocket
import stat
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from codyd.config import Config
from codyd.errors import (
    CodydError,
    FrameTooLarge,
    Internal,
    Overloaded,
    StartupError,
    Unauthorized,
)
from codyd.protocol import (
    FrameDecoder,
    Request,
    echo_id,
    error_response,
    pack,
    parse_request,
    result_response,
)

log = structlog.get_logger("codyd.server")

MAX_IN_FLIGHT = 64
MAX_STREAMS = 16
STREAM_METHODS = frozenset({"run.events", "run.logs"})
# Methods that never wait on anything: served inline, in order, by the connection's reader.
INSTANT_METHODS = frozenset({"daemon.ping", "daemon.hello", "daemon.info", "rpc.cancel"})
RECEIVE_BYTES = 65536
# Error codes that say the daemon could not do what was asked, logged at warning; every
# other refused request is the client's mistake, logged at info.
DAEMON_SIDE_CODES = frozenset({"internal", "overloaded", "shutting_down"})
# accept() failures that mean "no room now": the process or system is out of
# descriptors, or the kernel out of buffers. Accepting pauses, from the first
# pause doubling up to the last while the trouble lasts.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
OUT_OF_MEMORY = frozenset({errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE_FIRST_S = 0.01
ACCEPT_PAUSE_LAST_S = 0.5
# Clients answered `overloaded` in one go while out of descriptors, before pausing.
REFUSE_BURST = 64
# A client that went away between the kernel queueing it and accept() taking it.
ACCEPT_ABORTED = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
# Descriptors kept from client connections for the daemon's own files: the top
# sixteenth of the open-files limit, at least 8 (see descriptor_ceiling).
FD_HEADROOM_MIN = 8
FD_HEADROOM_SHARE = 16


class PeerGone(Exception):
    """This connection's peer is gone: it reset or closed its socket, or we closed ours.

    Raised by every read and write of a :class:`Connection`, and so out of any call
    that sends, it ends the whole connection at :meth:`Server.handle` and nowhere else.
    """


def _holds_peer_gone(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(PeerGone) is not None
    return isinstance(exc, PeerGone)


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass(slots=True)
class Call:
    """One request being served, with the means to send stream items for it."""

    connection: Connection
    request: Request
    # Why a stream must end ("cancelled", "shutdown"), and the wait to interrupt for it.
    end_reason: str | None = None
    wait_scope: trio.CancelScope | None = None
    is_stream: bool = False

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self.wait_scope is not None:
            self.wait_scope.cancel()

    async def wait(self, waiter: Callable[[], Awaitable[Any]], timeout: float) -> bool:
        """Wait for ``waiter`` up to ``timeout`` s, or until the stream must end; True if fired."""
        if self.end_reason is not None:
            return False
        with trio.move_on_after(timeout) as scope:
            self.wait_scope = scope
            try:
                await waiter()
            finally:
                self.wait_scope = None
            return True
        return False

    async def send_item(self, key: str, value: Any) -> None:
        await self.connection.send({"id": self.request.id, key: value})


Handler = Callable[[Call], Awaitable[Any]]


def peer_credentials(sock: trio.socket.SocketType) -> Peer:
    raw = sock.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _resolve_gid(group: str | int) -> int | None:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


class PeerPolicy:
    """Who may talk to the daemon: its own uid, root, allowed uids and group members."""

    def __init__(self, config: Config) -> None:
        self.uids = {os.getuid(), 0, *config.allowed_uids}
        self.gids = {g for g in (_resolve_gid(x) for x in config.allowed_groups) if g is not None}

    def allows(self, peer: Peer) -> bool:
        if peer.uid in self.uids or peer.gid in self.gids:
            return True
        if not self.gids:
            return False
        try:
            import pwd

            name = pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            return False
        return any(name in _members(gid) for gid in self.gids)


def _members(gid: int) -> list[str]:
    """The group's listed members; none for a group that no longer exists."""
    try:
        return list(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return []


class Connection:
    """One client: any byte stream and the peer at its other end.

    A Unix socket in the daemon; an in-memory stream pair in tests, so that limits
    and the ways a stream can end are exercised without a socket.
    """

    def __init__(self, server: Server, stream: trio.abc.Stream, peer: Peer) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.calls: dict[int, Call] = {}
        self._send_lock = trio.Lock()
        self._closed = False

    async def send(self, message: dict[str, Any]) -> None:
        frame = pack(message)
        # Frames never interleave; an uncontended lock is taken without a scheduling round.
        if self._send_lock.locked():
            await self._send_lock.acquire()
        else:
            self._send_lock.acquire_nowait()
        try:
            if self._closed:
                raise PeerGone("connection closed")
            await self.stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._closed = True
            raise PeerGone(f"sending failed: {exc}") from exc
        except BaseException:
            # Gone, or cancelled mid-frame: whatever followed would not be framed.
            self._closed = True
            raise
        finally:
            self._send_lock.release()

    async def send_error(self, request_id: int | None, error: CodydError) -> None:
        await self.send(error_response(request_id, error.to_wire()))

    async def _receive(self) -> bytes | bytearray:
        try:
            return await self.stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"receiving failed: {exc}") from exc

    async def serve(self) -> None:
        """Read requests until the peer closes its side; every call in flight ends with it."""
        async with trio.open_nursery() as nursery:
            try:
                await self._read_requests(nursery)
            finally:
                self._closed = True
                nursery.cancel_scope.cancel()

    async def _read_requests(self, nursery: trio.Nursery) -> None:
        decoder = FrameDecoder(self.server.config.max_frame_bytes)
        while data := await self._receive():
            try:
                messages = decoder.feed(data)
            except CodydError as exc:
                log.info(
                    "protocol error; closing connection",
                    code=exc.code,
                    error=exc.message,
                    peer_pid=self.peer.pid,
                )
                await self.send_error(None, exc)
                return
            for message in messages:
                await self._accept(nursery, message)

    async def _accept(self, nursery: trio.Nursery, message: dict[str, Any]) -> None:
        try:
            request = parse_request(message)
        except CodydError as exc:
            await self.send_error(echo_id(message), exc)
            return
        if len(self.calls) >= MAX_IN_FLIGHT:
            await self.send_error(
                request.id,
                Overloaded(f"more than {MAX_IN_FLIGHT} requests in flight on this connection"),
            )
            return
        if request.id in self.calls:
            await self.send_error(
                request.id, Overloaded(f"request id {request.id} is already in flight")
            )
            return
        is_stream = request.method in STREAM_METHODS
        if is_stream and sum(c.is_stream for c in self.calls.values()) >= MAX_STREAMS:
            await self.send_error(
                request.id, Overloaded(f"more than {MAX_STREAMS} streams on this connection")
            )
            return
        call = Call(self, request, is_stream=is_stream)
        self.calls[request.id] = call
        if request.method in INSTANT_METHODS:
            # Answered in the reader itself: a task per ping would cost more than the ping.
            await self._run_call(call)
        else:
            nursery.start_soon(self._run_call, call)

    async def _run_call(self, call: Call) -> None:
        self.server.call_began()
        try:
            began = time.perf_counter()
            response = await self._respond(call)
            if self.server.on_response is not None:
                self.server.on_response(call.request.method, response, time.perf_counter() - began)
            # Out of the table before the answer leaves: the client may reuse the id at once.
            self.calls.pop(call.request.id, None)
            await self.send(response)
        finally:
            if self.calls.get(call.request.id) is call:
                del self.calls[call.request.id]
            self.server.call_ended()

    async def _respond(self, call: Call) -> dict[str, Any]:
        request = call.request
        if self.server.debug:
            log.debug("request", method=request.method, id=request.id, peer_pid=self.peer.pid)
        try:
            return result_response(request.id, await self.server.dispatch(call))
        except CodydError as exc:
            if exc.code != "trimmed":
                # A client's mistake (a bad param, a run that is not there) is no trouble
                # of the daemon's: info. What the daemon could not do is a warning.
                report = log.warning if exc.code in DAEMON_SIDE_CODES else log.info
                report("request failed", method=request.method, code=exc.code, error=exc.message)
            return error_response(request.id, exc.to_wire())
        except Exception as exc:
            if _holds_peer_gone(exc):
                raise  # the connection is over, not the request: Server.handle ends it
            log.exception("request crashed", method=request.method)
            return error_response(
                request.id, Internal("internal error; see the daemon log").to_wire()
            )


def refuse_if_listening(path: Path) -> None:
    """Raise :class:`StartupError` naming the pid of a daemon that answers on ``path``.

    ``codyd serve`` asks this before it touches its state directory, so a second
    daemon started by mistake leaves no store behind; binding asks again.
    """
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        pid, _, _ = struct.unpack(
            "3i",
            probe.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i")),
        )
    except OSError:
        return  # nobody listens there (a stale socket file, or none at all)
    finally:
        probe.close()
    raise StartupError(
        f"another codyd (pid {pid}) is listening on {path}; "
        "stop it, or give this one another --socket"
    )


class Server:
    def __init__(self, config: Config, dispatch: Callable[[Call], Awaitable[Any]]) -> None:
        self.config = config
        self.dispatch = dispatch
        self.policy = PeerPolicy(config)
        self.connections: set[Connection] = set()
        self.path = config.socket
        # Checked before each request so a quiet daemon pays nothing for debug logging.
        self.debug = config.log_level == "debug"
        # Told of every answered request: (method, response, seconds); the metrics count them.
        self.on_response: Callable[[str, dict[str, Any], float], None] | None = None
        self._sock: trio.socket.SocketType | None = None
        self._listening: stdsocket.socket | None = None
        # Held so that, out of descriptors, one can be freed to answer a waiting client.
        self._spare_fd: int | None = None
        self._calls = 0
        self._no_calls = trio.Event()
        self._no_calls.set()
        self._accept_trouble: str | None = None
        # Refuse clients before the last descriptors go (see descriptor_ceiling).
        self.keep_fd_headroom = True
        self._refused_in_trouble = 0

    def call_began(self) -> None:
        if self._calls == 0:
            self._no_calls = trio.Event()
        self._calls += 1

    def call_ended(self) -> None:
        self._calls -= 1
        if self._calls == 0:
            self._no_calls.set()

    async def wait_calls_done(self) -> None:
        """Return once no call of any connection is in flight: each answered or abandoned."""
        while self._calls:
            await self._no_calls.wait()

    def _prepare_path(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            others = self.config.socket_mode & 0o007
            parent.mkdir(parents=True, mode=0o755 if others else 0o750)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise StartupError(
                    f"{self.path} exists and is not a socket; refusing to replace it"
                )
            refuse_if_listening(self.path)
            self.path.unlink()  # a stale socket from a daemon that died

    def bind(self) -> None:
        """Claim the socket path and listen; fails fast, before any run is touched.

        The socket is bound under a staging name and renamed into place, so nobody
        ever sees it before its owner and mode are right. Connections wait in the
        backlog until :meth:`serve` accepts them.
        """
        if self._sock is not None:
            return
        self._prepare_path()
        sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(staging))
            if self.config.socket_group is not None:
                gid = _resolve_gid(self.config.socket_group)
                if gid is None:
                    raise StartupError(f"socket_group {self.config.socket_group!r} not found")
                os.chown(staging, -1, gid)
            os.chmod(staging, self.config.socket_mode)
            # A backlog as deep as the connections allowed: a burst of clients all get in.
            sock.listen(max(128, self.config.max_connections))
            staging.rename(self.path)
        except BaseException:
            sock.close()
            staging.unlink(missing_ok=True)
            raise
        finally:
            os.umask(old_umask)
        self._listening = sock
        self._sock = trio.socket.from_stdlib_socket(sock)
        self._spare_fd = _reserve_descriptor()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.bind()
        sock = self._sock
        assert sock is not None
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await self._accept_forever(sock, nursery)
        finally:
            with contextlib.suppress(OSError):
                self.path.unlink()
            sock.close()
            self._sock = self._listening = None
            if self._spare_fd is not None:
                os.close(self._spare_fd)
                self._spare_fd = None

    async def _accept_forever(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        pause = ACCEPT_PAUSE_FIRST_S
        while True:
            try:
                client, _ = await sock.accept()
            except OSError as exc:
                if exc.errno in ACCEPT_ABORTED:
                    continue
                if exc.errno not in OUT_OF_DESCRIPTORS | OUT_OF_MEMORY:
                    raise
                await self._accept_failed(exc, pause)
                pause = min(pause * 2, ACCEPT_PAUSE_LAST_S)
                continue
            pause = ACCEPT_PAUSE_FIRST_S
            if self.keep_fd_headroom and client.fileno() >= descriptor_ceiling():
                self._refuse_near_limit(client)
                continue
            if self._accept_trouble is not None:
                self._accept_recovered()
            nursery.start_soon(self.handle, trio.SocketStream(client))

    def _refuse_near_limit(self, client: trio.socket.SocketType) -> None:
        """Descriptors are numbered lowest first: a client given one this high means the
        daemon is near its limit. The rest are kept for its own files (store, logs, turns)."""
        if self._accept_trouble is None:
            self._accept_trouble = "near the open-files limit"
            self._refused_in_trouble = 0
            log.warning(
                "cannot accept connections; answering overloaded",
                error=self._accept_trouble,
                connections=len(self.connections),
            )
        _refuse(client)
        self._refused_in_trouble += 1

    async def _accept_failed(self, exc: OSError, pause: float) -> None:
        """No room for a client: answer the waiting ones ``overloaded`` if we can, then pause."""
        if self._accept_trouble is None:
            self._accept_trouble = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self._refused_in_trouble = 0
            log.warning(
                "cannot accept connections; answering overloaded and pausing",
                error=self._accept_trouble,
                connections=len(self.connections),
            )
        if exc.errno in OUT_OF_DESCRIPTORS:
            self._refused_in_trouble += self._refuse_waiting()
        await trio.sleep(pause)
        assert self._listening is not None
        # accept() fails for lack of descriptors whether or not anyone is waiting:
        # go round again only once someone is.
        await trio.lowlevel.wait_readable(self._listening)

    def _accept_recovered(self) -> None:
        log.info(
            "accepting connections again",
            after=self._accept_trouble,
            refused=self._refused_in_trouble,
        )
        self._accept_trouble = None
        if self._spare_fd is None:
            self._spare_fd = _reserve_descriptor()

    def _refuse_waiting(self) -> int:
        """Free the spare descriptor to tell each waiting client ``overloaded`` and close it.

        Returns how many were answered. The spare is taken back before anything else
        in the daemon can claim the freed slot for good.
        """
        if self._spare_fd is None or self._listening is None:
            return 0
        os.close(self._spare_fd)
        self._spare_fd = None
        refused = 0
        try:
            while refused < REFUSE_BURST:
                try:
                    client, _ = self._listening.accept()
                except OSError:
                    break  # nobody waiting any more, or the slot was taken
                client.setblocking(False)
                _refuse(client)
                refused += 1
        finally:
            self._spare_fd = _reserve_descriptor()
        return refused

    async def handle(self, stream: trio.abc.Stream, peer: Peer | None = None) -> None:
        """Serve one client from accept to close: the one place where its faults stop.

        ``peer`` is read from the socket's credentials when not given. A peer that
        resets, closes or stops answering ends this connection and its calls; any
        other exception out of it is a bug, logged with its traceback, that also
        ends this connection and nothing else.
        """
        try:
            async with stream:
                await self._admit_and_serve(stream, peer)
        except* (PeerGone, trio.BrokenResourceError, trio.ClosedResourceError):
            if self.debug:
                log.debug("connection ended by its peer")
        except* Exception:
            log.exception("connection failed; closed it")

    async def _admit_and_serve(self, stream: trio.abc.Stream, peer: Peer | None) -> None:
        if peer is None:
            if not isinstance(stream, trio.SocketStream):
                raise TypeError("a peer must be given for a stream that is not a socket")
            try:
                peer = peer_credentials(stream.socket)
            except OSError as exc:
                log.warning("connection dropped: its peer credentials are unreadable", error=exc)
                return
        if not self.policy.allows(peer):
            log.warning(
                "connection refused: peer not allowed", peer_uid=peer.uid, peer_pid=peer.pid
            )
            await _send_and_close(
                stream, Unauthorized(f"uid {peer.uid} is not allowed to use codyd")
            )
            return
        if len(self.connections) >= self.config.max_connections:
            await _send_and_close(
                stream,
                Overloaded(f"codyd has max_connections={self.config.max_connections} clients"),
            )
            return
        connection = Connection(self, stream, peer)
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)


def descriptor_ceiling() -> int:
    """The lowest descriptor number a client connection may not have.

    The top sixteenth of the open-files limit (at least 8) stays for the daemon's
    own files: the heartbeat, the store's connections, the logs and pipes of turns.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return soft - max(FD_HEADROOM_MIN, soft // FD_HEADROOM_SHARE)


def _refuse(client: stdsocket.socket | trio.socket.SocketType) -> None:
    """Tell a client just accepted that codyd is out of descriptors, and close it at once."""
    with client, contextlib.suppress(OSError):
        # A fresh socket's buffer is empty: the small frame fits without waiting, or is dropped.
        os.write(client.fileno(), _OUT_OF_DESCRIPTORS_FRAME)


def _reserve_descriptor() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # out of descriptors already: the next recovery takes one


async def _send_and_close(stream: trio.abc.Stream, error: CodydError) -> None:
    """A refusal: one error frame (a peer that does not read it gets no longer than 1 s)."""
    with trio.move_on_after(1):
        await stream.send_all(pack(error_response(None, error.to_wire())))


_OUT_OF_DESCRIPTORS_FRAME = pack(
    error_response(None, Overloaded("codyd is out of file descriptors; retry later").to_wire())
)

__all__ = ["Call", "Connection", "FrameTooLarge", "Peer", "PeerGone", "Server"]
