"""The loopback API stand-ins of the real-agent tier, checked with a plain HTTP client.

These run in the everyday suite: they need no CLI, and they keep the stand-ins honest where
npm cannot install the CLIs.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from realtier import Standin, standin
from standins import TEXT, WRITTEN


@pytest.fixture(scope="module")
def server() -> Iterator[Standin]:
    with standin() as running:
        yield running


@pytest.fixture(autouse=True)
def normal(server: Standin) -> None:
    server.set_mode("normal")


def post(
    server: Standin, path: str, body: Any, *, chunked: bool = False
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = json.dumps(body).encode()
        if chunked:
            connection.request("POST", path, body=iter([data[:5], data[5:]]), encode_chunked=True)
        else:
            connection.request("POST", path, body=data)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.decode().split("\n\n"):
        if chunk.strip():
            name, data = chunk.split("\n", 1)
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_usage_grows_per_call_across_both_apis(server: Standin) -> None:
    before = len(server.requests())
    status, headers, raw = post(server, "/v1/responses", {"model": "m", "input": []})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = sse(raw)
    assert events[0][0] == "response.created"
    assert events[-1][0] == "response.completed"
    first = events[-1][1]["response"]["usage"]
    status, _, raw = post(server, "/v1/messages?beta=true", {"model": "m", "messages": []})
    names = [name for name, _ in sse(raw)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = sse(raw)[0][1]["message"]["usage"], sse(raw)[4][1]
    assert sse(raw)[2][1]["delta"] == {"type": "text_delta", "text": TEXT}
    k = first["input_tokens"] // 1000
    assert first["input_tokens_details"]["cached_tokens"] == 100 * k
    assert first["output_tokens"] == 10 * k
    # the next call is k + 1; Anthropic's input_tokens leaves the cache reads out
    assert start["input_tokens"] + start["cache_read_input_tokens"] == 1000 * (k + 1)
    assert start["cache_read_input_tokens"] == 100 * (k + 1)
    assert delta["usage"]["output_tokens"] == 10 * (k + 1)
    logged = server.requests()[before:]
    assert [(r["api"], r["status"]) for r in logged] == [("openai", 200), ("anthropic", 200)]
    assert [r["usage"]["input"] for r in logged] == [1000 * k, 1000 * (k + 1)]
    assert logged[0]["body"] == {"model": "m", "input": []}


def test_chunked_request_bodies_are_read(server: Standin) -> None:
    status, _, _ = post(server, "/v1/responses", {"model": "chunked", "input": []}, chunked=True)
    assert status == 200
    assert server.requests()[-1]["body"] == {"model": "chunked", "input": []}


def test_invalid_key_mode(server: Standin) -> None:
    server.set_mode("401")
    status, _, raw = post(server, "/v1/responses", {"input": []})
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    status, _, raw = post(server, "/v1/messages", {"messages": []})
    assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
    assert [r["usage"] for r in server.requests()[-2:]] == [None, None]


def test_usage_limit_mode_says_when_it_resets(server: Standin) -> None:
    server.set_mode("429")
    now = time.time()
    status, headers, raw = post(server, "/v1/responses", {"input": []})
    error = json.loads(raw)["error"]
    assert status == 429 and error["type"] == "usage_limit_reached"
    assert now + 590 <= error["resets_at"] <= now + 610
    assert server.requests()[-1]["resets_at"] == error["resets_at"]
    status, headers, raw = post(server, "/v1/messages", {"messages": []})
    assert status == 429 and headers["anthropic-ratelimit-unified-status"] == "rejected"
    reset = int(headers["anthropic-ratelimit-unified-reset"])
    assert now + 590 <= reset <= now + 610
    assert "resets " in json.loads(raw)["error"]["message"]


def test_context_mode_refuses_once(server: Standin) -> None:
    server.set_mode("context")
    status, _, raw = post(server, "/v1/responses", {"input": []})
    failed = sse(raw)[-1]
    assert status == 200 and failed[0] == "response.failed"
    assert failed[1]["response"]["error"]["code"] == "context_length_exceeded"
    status, _, _ = post(server, "/v1/responses", {"input": []})
    assert status == 200 and server.requests()[-1]["usage"] is not None
    server.set_mode("context")
    status, _, raw = post(server, "/v1/messages", {"messages": []})
    assert status == 400 and "prompt is too long" in json.loads(raw)["error"]["message"]


def test_write_mode_asks_for_the_file_then_answers(server: Standin) -> None:
    server.set_mode("write", path="/srv/ws/hello.txt")
    _, _, raw = post(server, "/v1/responses", {"input": [{"type": "message"}]})
    item = sse(raw)[-2][1]["item"]
    assert item["type"] == "custom_tool_call" and item["name"] == "apply_patch"
    assert "*** Add File: /srv/ws/hello.txt\n+" in item["input"]
    answered = {"input": [{"type": "custom_tool_call_output", "output": "ok"}]}
    _, _, raw = post(server, "/v1/responses", answered)
    assert sse(raw)[-2][1]["item"]["type"] == "message"
    _, _, raw = post(server, "/v1/messages", {"messages": [{"role": "user", "content": "go"}]})
    events = sse(raw)
    assert events[1][1]["content_block"]["name"] == "Write"
    arguments = json.loads(events[2][1]["delta"]["partial_json"])
    assert arguments == {"file_path": "/srv/ws/hello.txt", "content": WRITTEN}
    assert events[4][1]["delta"]["stop_reason"] == "tool_use"
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
    _, _, raw = post(server, "/v1/messages", {"messages": [result]})
    assert sse(raw)[4][1]["delta"]["stop_reason"] == "end_turn"


def test_other_calls_and_bad_modes(server: Standin) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/v1/models")
    assert connection.getresponse().status == 200
    connection.close()
    assert server.requests()[-1]["api"] is None and server.requests()[-1]["usage"] is None
    status, _, raw = post(server, "/__standin/mode", {"mode": "sleepy"})
    assert status == 400 and b"mode: expected one of" in raw
