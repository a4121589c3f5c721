"""Streamed answers: server-sent events, raw log bytes, and the JSON page of events.

A stream's method (``run.events``, ``run.logs``) runs as it does for the socket
and hands each item to the response, which writes it before the method reads
on: a slow client slows only its own stream, and nothing is buffered for it.
The status line goes out only once the method has checked its params and begun
(its first item or its first wait), so a bad cursor is still a 400 or a 410.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from codyd.http.adapter import (
    Adapter,
    HttpCall,
    error_body,
    error_headers,
    status_of,
    to_json,
)
from codyd.http.hub import SseHub, sse_frame

SSE_RETRY_MS = 2000


class _Streamed(Response):
    method = ""
    content_type = "application/octet-stream"

    def __init__(self, adapter: Adapter, params: dict[str, Any]) -> None:
        super().__init__(b"", 200)
        self.adapter = adapter
        self.params = params
        self._send: Send | None = None
        self._started = False
        self._gone = False
        self._call: HttpCall | None = None

    # What each kind of stream writes.

    def preamble(self) -> bytes:
        return b""

    def encode(self, key: str, value: Any) -> bytes:
        raise NotImplementedError

    def tail(self, response: dict[str, Any]) -> bytes:
        return b""

    async def invoke(self, call: HttpCall) -> dict[str, Any]:
        return await self.adapter.invoke(call)

    # The ASGI side.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        call = self._call = self.adapter.call(self.method, self.params, self._item, self._start)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, call)
            response = await self.invoke(call)
            nursery.cancel_scope.cancel()
        if self._gone:
            return
        error = response.get("error")
        if not self._started and error is not None:
            headers = [(k.lower().encode(), v.encode()) for k, v in error_headers(error).items()]
            await send(
                {
                    "type": "http.response.start",
                    "status": status_of(error),
                    "headers": [(b"content-type", b"application/json"), *headers],
                }
            )
            await send({"type": "http.response.body", "body": to_json(error_body(error))})
            return
        await self._start()
        await send({"type": "http.response.body", "body": self.tail(response)})

    async def _watch_disconnect(self, receive: Receive, call: HttpCall) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                call.end("cancelled")
                return

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        assert self._send is not None
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", self.content_type.encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await self._write(self.preamble())

    async def _item(self, key: str, value: Any) -> None:
        await self._start()
        await self._write(self.encode(key, value))

    async def _write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._gone:
            assert self._call is not None
            self._call.end("cancelled")
            return
        assert self._send is not None
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})


class EventStream(_Streamed):
    """``text/event-stream`` of docs/http.md over ``run.events`` with ``follow``."""

    method = "run.events"
    content_type = "text/event-stream; charset=utf-8"

    def preamble(self) -> bytes:
        return f"retry: {SSE_RETRY_MS}\n\n".encode()

    def encode(self, key: str, value: Any) -> bytes:
        if key == "keepalive":
            return b": keepalive\n\n"
        if key == "frames":  # encoded already, by the hub
            frames: bytes = value
            return frames
        return sse_frame(value["seq"] if "run_id" in self.params else value["gid"], value)

    def tail(self, response: dict[str, Any]) -> bytes:
        error = response.get("error")
        if error is not None:
            return b"event: error\ndata: %s\n\n" % to_json(error_body(error))
        result = response["result"]
        if result.get("end") == "finished":
            return b"event: end\ndata: %s\n\n" % to_json(result)
        return b""  # shut down or cancelled: the client reconnects with its Last-Event-ID


class HubEventStream(EventStream):
    """The all-runs stream, fed by the :class:`~codyd.http.hub.SseHub` instead of its own reads."""

    def __init__(self, adapter: Adapter, params: dict[str, Any], hub: SseHub) -> None:
        super().__init__(adapter, params)
        self.hub = hub

    async def invoke(self, call: HttpCall) -> dict[str, Any]:
        return await self.adapter.invoke(call, self.hub.follow)


class LogBytes(_Streamed):
    """A turn's output as it is on disk, over ``run.logs`` (not following)."""

    method = "run.logs"

    def encode(self, key: str, value: Any) -> bytes:
        if key != "chunk":
            return b""
        data: bytes = value["data"]
        return data


class EventPage:
    """The JSON page ``{events, last_seq}`` the event URLs answer without text/event-stream."""

    def __init__(self, adapter: Adapter, params: dict[str, Any], limit: int) -> None:
        self.adapter = adapter
        self.params = {**params, "follow": False}
        self.limit = limit
        self.events: list[dict[str, Any]] = []
        self._call: HttpCall | None = None

    async def _item(self, key: str, value: Any) -> None:
        if key != "event":
            return
        if len(self.events) >= self.limit:
            assert self._call is not None
            self._call.end("page_full")
            return
        self.events.append(value)

    async def answer(self) -> Response:
        self._call = self.adapter.call("run.events", self.params, self._item)
        response = await self.adapter.invoke(self._call)
        error = response.get("error")
        if error is not None:
            return Response(
                to_json(error_body(error)),
                status_of(error),
                error_headers(error),
                media_type="application/json",
            )
        last_seq = response["result"]["last_seq"]
        if self._call.end_reason == "page_full":
            last = self.events[-1]
            last_seq = last["seq"] if "run_id" in self.params else last["gid"]
        return Response(
            to_json({"events": self.events, "last_seq": last_seq}), media_type="application/json"
        )
