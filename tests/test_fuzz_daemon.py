"""Hostile clients against a live daemon: random and mutated frames, odd params, huge values.

Every case must be answered (an error with the request's id, or id null and a
close) and the daemon must keep serving a bystander connection throughout.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Daemon, short_tempdir

METHODS = [
    "daemon.hello", "daemon.ping", "daemon.info", "run.start", "run.status", "run.get",
    "run.list", "run.pause", "run.resume", "run.cancel", "run.events", "run.logs", "rpc.cancel",
]  # fmt: skip
PARAM_NAMES = [
    "run_id", "workspace", "prompt", "command", "after", "follow", "types", "states", "labels",
    "limit", "cursor", "reason", "now", "turn", "stream", "offset", "id", "protocol", "agent",
    "completion", "budget", "env", "max_turns",
]  # fmt: skip
CASES = {"count": 0}

scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=50) | st.binary(max_size=50)
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
params = st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=10), values, max_size=6)


class Conn:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: Any) -> None:
        body = msgpack.packb(message, use_bin_type=True)
        self.send_raw(struct.pack(">I", len(body)) + body)

    def recv(self) -> dict[str, Any] | None:
        header = self._exactly(4)
        if header is None:
            return None
        body = self._exactly(struct.unpack(">I", header)[0])
        return None if body is None else msgpack.unpackb(body, raw=False)

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def live() -> Iterator[Daemon]:
    daemon = Daemon(short_tempdir()).start()
    yield daemon
    daemon.stop()


def answer_for(conn: Conn, request_id: Any) -> dict[str, Any] | None:
    """The final response to ``request_id`` (stream items skipped), or None if codyd closed."""
    while True:
        message = conn.recv()
        if message is None:
            return None
        if ("result" in message or "error" in message) and message["id"] in (request_id, None):
            return message


def check_bystander(daemon: Daemon) -> None:
    bystander = Conn(str(daemon.socket))
    bystander.send({"id": 1, "method": "daemon.ping"})
    reply = bystander.recv()
    bystander.close()
    assert reply is not None and reply["result"]["pong"] is True


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=st.sampled_from(METHODS) | st.text(max_size=20),
    params=params,
    request_id=st.integers(0, 2**63 - 1),
)
def test_random_requests_are_answered(
    live: Daemon, method: str, params: dict, request_id: int
) -> None:
    """Any method with any params gets exactly one answer carrying its id; the daemon lives on."""
    CASES["count"] += 1
    conn = Conn(str(live.socket))
    try:
        request = {"id": request_id, "method": method, "params": params}
        if method in ("run.events", "run.logs"):
            params["follow"] = False  # a following stream would wait for events forever
        conn.send(request)
        answer = answer_for(conn, request_id)
        assert answer is not None
        assert answer["id"] == request_id
        if "error" in answer:
            error = answer["error"]
            assert error["code"] != "internal", error
            assert isinstance(error["message"], str) and isinstance(error["retryable"], bool)
    finally:
        conn.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=512))
def test_random_bytes_are_answered_or_closed(live: Daemon, data: bytes) -> None:
    """Random bytes get an error with id null and a close, or wait for more; others are unaffected."""
    CASES["count"] += 1
    conn = Conn(str(live.socket))
    try:
        conn.send_raw(data)
        conn.sock.shutdown(socket.SHUT_WR)
        while (message := conn.recv()) is not None:
            assert "error" in message or "result" in message
    finally:
        conn.close()
    check_bystander(live)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(position=st.integers(0, 10_000), flip=st.integers(1, 255), method=st.sampled_from(METHODS))
def test_mutated_frames_are_answered_or_closed(
    live: Daemon, position: int, flip: int, method: str
) -> None:
    """A valid frame with one byte changed is answered or refused; codyd keeps serving."""
    CASES["count"] += 1
    body = msgpack.packb({"id": 7, "method": method, "params": {"run_id": "r", "limit": 5}})
    frame = bytearray(struct.pack(">I", len(body)) + body)
    frame[position % len(frame)] ^= flip
    conn = Conn(str(live.socket))
    try:
        conn.send_raw(bytes(frame))
        conn.sock.shutdown(socket.SHUT_WR)
        while conn.recv() is not None:
            pass
    finally:
        conn.close()
    check_bystander(live)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x91" * 200_000 + b"\xc0", id="200k-nested-arrays"),
        pytest.param(b"\x81\xa1a" * 100_000 + b"\xc0", id="100k-nested-maps"),
        pytest.param(
            msgpack.packb(
                {
                    "id": 1,
                    "method": "run.start",
                    "params": {"prompt": "x" * (4 * 1024 * 1024 - 200)},
                }
            ),
            id="near-4MiB-string",
        ),
        pytest.param(
            msgpack.packb(
                {
                    "id": 1,
                    "method": "run.list",
                    "params": {"labels": {str(i): "v" for i in range(200_000)}},
                }
            ),
            id="200k-entry-map",
        ),
        pytest.param(
            msgpack.packb({"id": 1, "method": "run.status", "params": {"run_id": 1.5}}),
            id="float-run-id",
        ),
        pytest.param(
            msgpack.packb(
                {"id": 1, "method": "run.events", "params": {"after": -1, "types": [1, None]}}
            ),
            id="negative-after",
        ),
    ],
)
def test_extreme_frames(live: Daemon, payload: bytes) -> None:
    """Deep nesting, huge maps and strings and wrong types are answered without harm."""
    CASES["count"] += 1
    conn = Conn(str(live.socket))
    try:
        conn.send_raw(struct.pack(">I", len(payload)) + payload)
        reply = conn.recv()
        assert reply is not None and ("error" in reply or "result" in reply)
        if "error" in reply:
            assert reply["error"]["code"] in ("bad_request", "invalid_params", "frame_too_large")
    finally:
        conn.close()
    check_bystander(live)


def test_zz_report_case_count(live: Daemon) -> None:
    """Prints how many hostile cases were tried against this daemon (for the record)."""
    print(f"\nhostile cases tried against one daemon: {CASES['count']}")
    assert live.proc is not None and live.proc.poll() is None
    log = live.log()
    assert "Traceback" not in log, log[-3000:]
    assert os.path.exists(live.socket)
