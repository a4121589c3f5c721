"""Loopback stand-ins of the OpenAI Responses API and the Anthropic Messages API.

Run as a program: ``python standins.py --log <requests.jsonl> --port-file <file>``. It listens
on 127.0.0.1 (an ephemeral port, written to ``--port-file`` once listening), serves both APIs
on one port, and appends one JSON line per request it received to ``--log``::

    {"n": 1, "method": "POST", "path": "/v1/responses", "api": "openai", "mode": "normal",
     "status": 200, "usage": {"input": 1000, "cached": 100, "output": 10}, "body": {...}}

``usage`` is what the stand-in reported for that request (null for an error or a side call),
so a test can add up exactly what was served.

Modes (``--mode``, or ``POST /__standin/mode`` with ``{"mode": ...}`` while it runs):

* ``normal``: model call k (counted across both APIs, from 1) reports 1000·k input tokens of
  which 100·k cached, and 10·k output tokens; the assistant says ``TEXT``.
* ``401``: every model call is refused as an invalid key.
* ``429``: every model call is refused as a usage limit that resets ``--reset-in`` seconds
  from now (the reset time is logged as ``resets_at``).
* ``context``: the next model call is refused as too long for the context window; the mode
  then returns to ``normal``.
* ``write``: as ``normal``, but a call that does not carry a tool's result asks the CLI to
  create the file ``path`` (given with the mode) containing ``WRITTEN``: codex with its
  ``apply_patch`` tool, claude with ``Write``. The call after it answers ``TEXT``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import trio

TEXT = "Done with this step. TASK COMPLETE"
MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
MODES = ("normal", "401", "429", "context", "write")
WRITTEN = "hello from the stand-in\n"


class Standin:
    """The state shared by every connection: the mode, the call counter, the request log."""

    def __init__(self, log: Path, mode: str, reset_in: float) -> None:
        self.log = log
        self.mode = mode
        self.reset_in = reset_in
        self.write_path = ""
        self.requests = 0
        self.calls = 0

    def record(self, entry: dict[str, Any]) -> None:
        self.requests += 1
        with self.log.open("a") as handle:
            handle.write(json.dumps({"n": self.requests, **entry}) + "\n")

    def next_usage(self) -> dict[str, int]:
        self.calls += 1
        k = self.calls
        return {"input": 1000 * k, "cached": 100 * k, "output": 10 * k, "reasoning": k}


# -- HTTP ------------------------------------------------------------------------------------


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = target.split("?", 1)[0]
        self.target = target
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return {"unparsed_bytes": len(self.body)}


class Response:
    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    def encode(self) -> bytes:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
        lines = [
            f"HTTP/1.1 {self.status} {reason.get(self.status, 'Error')}",
            f"content-type: {self.content_type}",
            f"content-length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def as_json(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(value).encode(), headers=headers)


def as_sse(events: list[tuple[str, dict[str, Any]]]) -> Response:
    chunks = [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events]
    return Response(200, "".join(chunks).encode(), content_type="text/event-stream")


async def read_request(stream: trio.SocketStream, buffer: bytearray) -> Request | None:
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            return None
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, rest = await read_chunked(stream, body)
    else:
        length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
        while len(body) < length:
            data = await stream.receive_some(65536)
            if not data:
                return None
            body += data
        body, rest = body[:length], body[length:]
    buffer[:] = rest
    return Request(method, target, headers, bytes(body))


async def read_chunked(stream: trio.SocketStream, data: bytearray) -> tuple[bytearray, bytearray]:
    body = bytearray()
    while True:
        while b"\r\n" not in data:
            more = await stream.receive_some(65536)
            if not more:
                return body, bytearray()
            data += more
        size_line, _, data = bytes(data).partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        data = bytearray(data)
        while len(data) < size + 2:
            more = await stream.receive_some(65536)
            if not more:
                return body, bytearray()
            data += more
        if size == 0:
            rest = bytes(data)
            return body, bytearray(rest.partition(b"\r\n")[2] if rest.startswith(b"\r\n") else rest)
        body += data[:size]
        data = data[size + 2 :]


# -- the two APIs ----------------------------------------------------------------------------


def openai_call(standin: Standin, body: Any) -> tuple[Response, dict[str, Any]]:
    mode = standin.mode
    if mode == "401":
        error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
        return as_json(401, {"error": {**error, "code": "invalid_api_key"}}), {}
    if mode == "429":
        resets_at = int(time.time() + standin.reset_in)
        error = {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "plus",
            "resets_at": resets_at,
            "resets_in_seconds": int(standin.reset_in),
        }
        headers = {
            "retry-after": str(int(standin.reset_in)),
            "x-codex-primary-used-percent": "100.0",
            "x-codex-primary-window-minutes": "300",
            "x-codex-primary-reset-at": str(resets_at),
            "x-codex-primary-reset-after-seconds": str(int(standin.reset_in)),
        }
        return as_json(429, {"error": error}, headers), {"resets_at": resets_at}
    if mode == "context":
        standin.mode = "normal"
        error = {
            "code": "context_length_exceeded",
            "message": "Your input exceeds the context window of this model. "
            "Please adjust your input and try again.",
        }
        events = [
            ("response.created", {"type": "response.created", "response": {"id": "resp_ctx"}}),
            (
                "response.failed",
                {"type": "response.failed", "response": {"id": "resp_ctx", "error": error}},
            ),
        ]
        return as_sse(events), {"error": "context_length_exceeded"}
    usage = standin.next_usage()
    rid = f"resp_{standin.calls}"
    item: dict[str, Any] = {
        "type": "message",
        "role": "assistant",
        "id": f"msg_{standin.calls}",
        "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
    }
    inputs = body.get("input") if isinstance(body, dict) else None
    last = inputs[-1] if isinstance(inputs, list) and inputs else {}
    if mode == "write" and not str(last.get("type", "")).endswith("_output"):
        lines = "".join(f"+{line}\n" for line in WRITTEN.splitlines())
        patch = f"*** Begin Patch\n*** Add File: {standin.write_path}\n{lines}*** End Patch\n"
        item = {
            "type": "custom_tool_call",
            "id": f"ctc_{standin.calls}",
            "call_id": f"call_{standin.calls}",
            "name": "apply_patch",
            "input": patch,
            "status": "completed",
        }
    completed = {
        "id": rid,
        "usage": {
            "input_tokens": usage["input"],
            "input_tokens_details": {"cached_tokens": usage["cached"]},
            "output_tokens": usage["output"],
            "output_tokens_details": {"reasoning_tokens": usage["reasoning"]},
            "total_tokens": usage["input"] + usage["output"],
        },
    }
    events = [
        ("response.created", {"type": "response.created", "response": {"id": rid}}),
        ("response.output_item.added", {"type": "response.output_item.added", "item": item}),
        ("response.output_item.done", {"type": "response.output_item.done", "item": item}),
        ("response.completed", {"type": "response.completed", "response": completed}),
    ]
    return as_sse(events), {"usage": usage}


def anthropic_error(status: int, kind: str, message: str, headers: dict[str, str]) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return as_json(status, body, {"request-id": "req_standin", **headers})


def anthropic_call(standin: Standin, body: Any) -> tuple[Response, dict[str, Any]]:
    mode = standin.mode
    if mode == "401":
        return anthropic_error(401, "authentication_error", "invalid x-api-key", {}), {}
    if mode == "429":
        resets_at = int(time.time() + standin.reset_in)
        headers = {
            "retry-after": str(int(standin.reset_in)),
            "anthropic-ratelimit-unified-status": "rejected",
            "anthropic-ratelimit-unified-reset": str(resets_at),
            "anthropic-ratelimit-unified-representative-claim": "five_hour",
            "anthropic-ratelimit-unified-5h-status": "rejected",
            "anthropic-ratelimit-unified-5h-reset": str(resets_at),
            "anthropic-ratelimit-unified-5h-utilization": "1.0",
        }
        at = time.strftime("%-I:%M%p", time.localtime(resets_at)).lower()
        message = f"You've hit your limit · resets {at}"
        error = anthropic_error(429, "rate_limit_error", message, headers)
        return error, {"resets_at": resets_at}
    if mode == "context":
        standin.mode = "normal"
        message = "prompt is too long: 250000 tokens > 200000 maximum"
        return anthropic_error(400, "invalid_request_error", message, {}), {
            "error": "prompt_too_long"
        }
    usage = standin.next_usage()
    model = body.get("model", "claude-standin") if isinstance(body, dict) else "claude-standin"
    mid = f"msg_standin_{standin.calls}"
    start_usage = {
        "input_tokens": usage["input"] - usage["cached"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage["cached"],
        "output_tokens": 1,
    }
    message = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    block, delta, stop = anthropic_block(standin, body)
    events = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {**start_usage, "output_tokens": usage["output"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return as_sse(events), {"usage": usage}


def anthropic_block(standin: Standin, body: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The one content block of a reply: ``TEXT``, or in ``write`` mode a ``Write`` call."""
    messages = body.get("messages") if isinstance(body, dict) else None
    last = messages[-1] if isinstance(messages, list) and messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    answered = isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    )
    if standin.mode == "write" and not answered:
        arguments = json.dumps({"file_path": standin.write_path, "content": WRITTEN})
        block = {"type": "tool_use", "id": f"toolu_{standin.calls}", "name": "Write", "input": {}}
        return block, {"type": "input_json_delta", "partial_json": arguments}, "tool_use"
    return {"type": "text", "text": ""}, {"type": "text_delta", "text": TEXT}, "end_turn"


def side_call(request: Request) -> Response:
    """Whatever else a CLI asks at start: answered minimally, never counted."""
    if request.path.endswith("/models"):
        return as_json(200, {"object": "list", "data": [], "models": []})
    if request.path.endswith("/count_tokens"):
        return as_json(200, {"input_tokens": 1000})
    return as_json(404, {"error": {"type": "not_found_error", "message": "not found"}})


def handle(standin: Standin, request: Request) -> Response:
    body = request.json()
    entry: dict[str, Any] = {
        "method": request.method,
        "path": request.target,
        "mode": standin.mode,
        "usage": None,
    }
    if request.method == "POST" and request.path == "/__standin/mode":
        mode = body.get("mode") if isinstance(body, dict) else None
        if mode not in MODES:
            return as_json(400, {"error": f"mode: expected one of {MODES}"})
        standin.mode = mode
        standin.write_path = str(body.get("path", ""))
        return as_json(200, {"mode": mode})
    if request.method == "POST" and request.path.endswith("/responses"):
        entry["api"] = "openai"
        response, extra = openai_call(standin, body)
    elif request.method == "POST" and request.path.endswith("/v1/messages"):
        entry["api"] = "anthropic"
        response, extra = anthropic_call(standin, body)
    else:
        entry["api"] = None
        response, extra = side_call(request), {}
    entry.update(extra, status=response.status, body=body)
    standin.record(entry)
    return response


async def serve_connection(standin: Standin, stream: trio.SocketStream) -> None:
    buffer = bytearray()
    try:
        while True:
            with trio.move_on_after(120):
                request = await read_request(stream, buffer)
            if request is None:
                return
            await stream.send_all(handle(standin, request).encode())
    except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
        return
    finally:
        with trio.move_on_after(1):
            await stream.aclose()


async def main(args: argparse.Namespace) -> None:
    standin = Standin(Path(args.log), args.mode, args.reset_in)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(port))
    tmp.rename(args.port_file)

    async def connection(stream: trio.SocketStream) -> None:
        await serve_connection(standin, stream)

    await trio.serve_listeners(connection, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--reset-in", type=float, default=600.0)
    trio.run(main, parser.parse_args())
