"""The mirror's one Redis connection, used from worker threads so trio never blocks.

redis-py's client is blocking. Every call runs in ``trio.to_thread.run_sync`` under a
``CapacityLimiter(1)``: one connection, one call at a time, in the order they were
made. Calls are abandoned on cancellation (the limiter stays held until the thread
returns, so calls never overlap), and socket timeouts bound how long a thread can
wait on a Redis that stopped answering. redis-py's own retries are off: the mirror
owns reconnection and its backoff. Batches are packed by ``resp`` and sent over
redis-py's connection as they are: one write, then one reply per command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
import trio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from codyd.errors import StartupError

SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0

T = TypeVar("T")


def _needs_command_name() -> bool:
    """redis-py before 5.3 requires ``get_connection``'s command name; later ones warn if given."""
    signature = inspect.signature(redis.ConnectionPool.get_connection)
    parameter = signature.parameters.get("command_name")
    return parameter is not None and parameter.default is inspect.Parameter.empty


# The pool's arguments for one connection: what this redis-py version wants.
_GET_CONNECTION_ARGS: tuple[str, ...] = ("XADD",) if _needs_command_name() else ()


class RedisUnavailable(Exception):
    """Redis cannot be reached now: refused, reset, timed out, or still loading its data."""


class RedisRefused(Exception):
    """Redis answered a single command with an error."""


def describe_error(exc: BaseException) -> str:
    """An error as one line for logs and ``daemon.info``."""
    return str(exc) or type(exc).__name__


class RedisLink:
    """One Redis connection for the mirror; every method is one round trip."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
                client_name="codyd",
            )
        except ValueError as exc:
            # The URL is not shown: it may hold a password.
            raise StartupError(
                f"redis_url: cannot be used ({exc}); expected e.g. redis://host:6379/0"
            ) from None
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(
            _translated, fn, limiter=self._limiter, abandon_on_cancel=True
        )

    async def ping(self) -> None:
        await self._run(self._client.ping)

    async def pipeline(self, build: Callable[[], tuple[bytes, int]]) -> list[Any]:
        """Build a packed pipeline in the worker thread, send it, read its replies.

        ``build`` returns the RESP bytes of every command and how many there are.
        A command Redis refuses gets its exception in the reply list; a lost
        connection raises :class:`RedisUnavailable` for the whole pipeline.
        """

        def send() -> list[Any]:
            payload, count = build()
            pool = self._client.connection_pool
            connection = pool.get_connection(*_GET_CONNECTION_ARGS)
            try:
                connection.send_packed_command([payload])  # type: ignore[no-untyped-call]
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(connection)

        return await self._run(send)

    async def xread(self, streams: Mapping[str, str], count: int) -> list[Any]:
        """One non-blocking XREAD over many streams; ``[[key, [(id, {field: value})]]]``."""

        def read() -> list[Any]:
            reply: Any = self._client.xread(dict[Any, Any](streams), count=count)
            if isinstance(reply, dict):  # RESP3 answers with a map
                return [[key, entries] for key, entries in reply.items()]
            return list(reply or [])

        return await self._run(read)

    async def execute(self, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(client)`` in the worker thread: a few commands of one small job."""
        return await self._run(lambda: fn(self._client))

    async def delete(self, key: str) -> None:
        await self._run(lambda: self._client.delete(key))

    async def aclose(self) -> None:
        await self._run(self._client.close)


def _translated(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ResponseError as exc:
        raise RedisRefused(describe_error(exc)) from exc
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(describe_error(exc)) from exc
