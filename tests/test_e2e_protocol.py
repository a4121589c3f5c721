"""End to end: the socket protocol of a real daemon, spoken byte by byte over a real socket."""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import msgpack
import pytest

from codyd.errors import Overloaded

from conftest import Daemon, agent, wait_until


class Raw:
    """A bare protocol client: frames in and out, nothing else."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(os.fspath(path))

    def send(self, message: Any) -> None:
        self.send_body(msgpack.packb(message, use_bin_type=True))

    def send_body(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return data

    def recv(self) -> dict[str, Any]:
        (length,) = struct.unpack(">I", self._exactly(4))
        return msgpack.unpackb(self._exactly(length), raw=False)  # type: ignore[no-any-return]

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def test_hello_ping_and_info(daemon: Daemon) -> None:
    """daemon.hello, daemon.ping and daemon.info answer with the documented fields."""
    raw = Raw(daemon.socket)
    raw.send({"id": 0, "method": "daemon.hello", "params": {"protocol": 1, "client": "test"}})
    hello = raw.recv()
    assert hello["id"] == 0
    assert hello["result"]["server"] == "codyd" and hello["result"]["protocol"] == 1
    raw.send({"id": 1, "method": "daemon.ping"})
    assert raw.recv()["result"]["pong"] is True
    raw.send({"id": 2, "method": "daemon.info", "params": {}})
    info = raw.recv()["result"]
    assert set(info) >= {
        "version",
        "pid",
        "node",
        "started_at",
        "uptime_s",
        "runs",
        "mirror",
        "store",
        "connections",
    }
    assert info["mirror"]["enabled"] is False and info["connections"] == 1


def test_frame_that_is_not_a_map_gets_bad_request_and_close(daemon: Daemon) -> None:
    """A frame holding a msgpack list gets bad_request with id null, then the connection closes."""
    raw = Raw(daemon.socket)
    raw.send([1, 2, 3])
    response = raw.recv()
    assert response["id"] is None and response["error"]["code"] == "bad_request"
    assert raw.closed()


def test_oversize_frame_is_refused_before_its_body(daemon: Daemon) -> None:
    """A header announcing more than max_frame_bytes gets frame_too_large and a close."""
    raw = Raw(daemon.socket)
    raw.sock.sendall(struct.pack(">I", 64 * 1024 * 1024))
    response = raw.recv()
    assert response == {
        "id": None,
        "error": {
            "code": "frame_too_large",
            "message": response["error"]["message"],
            "retryable": False,
        },
    }
    assert raw.closed()


def test_random_bytes_do_not_hurt_other_clients(daemon: Daemon) -> None:
    """Garbage on one connection is answered or dropped; another connection keeps working."""
    bystander = Raw(daemon.socket)
    for garbage in (b"\x00\x00\x00\x03\xc1\xc1\xc1", os.urandom(64), b"\x00\x00\x00\x01\x93"):
        raw = Raw(daemon.socket)
        raw.sock.sendall(garbage)
        raw.sock.shutdown(socket.SHUT_WR)
        try:
            while True:
                raw.recv()
        except (EOFError, ConnectionResetError):
            pass
        raw.close()
    bystander.send({"id": 5, "method": "daemon.ping"})
    assert bystander.recv()["result"]["pong"] is True


def test_client_vanishing_mid_frame_leaves_others_unaffected(daemon: Daemon) -> None:
    """A client that sends half a frame and disconnects costs nothing to the others."""
    bystander = Raw(daemon.socket)
    for _ in range(20):
        raw = Raw(daemon.socket)
        body = msgpack.packb({"id": 1, "method": "daemon.ping"})
        raw.sock.sendall(struct.pack(">I", len(body)) + body[:3])
        raw.close()
    bystander.send({"id": 9, "method": "daemon.ping"})
    assert bystander.recv()["id"] == 9
    wait_until(lambda: daemon.call("daemon.info")["connections"] == 2, what="dead peers dropped")


def test_bad_envelopes_get_errors_and_keep_the_connection(daemon: Daemon) -> None:
    """A map that is not a valid request gets bad_request; the connection stays usable."""
    raw = Raw(daemon.socket)
    raw.send({"id": 1})
    response = raw.recv()
    assert response["id"] == 1 and response["error"]["code"] == "bad_request"
    raw.send({"id": "x", "method": "daemon.ping"})
    assert raw.recv()["error"]["code"] == "bad_request"
    raw.send({"id": 3, "method": "daemon.ping", "params": [1]})
    response = raw.recv()
    assert response["id"] == 3 and response["error"]["code"] == "bad_request"
    raw.send({"id": 4, "method": "no.such"})
    assert raw.recv() == {
        "id": 4,
        "error": {
            "code": "unknown_method",
            "message": "unknown method 'no.such'",
            "retryable": False,
        },
    }
    raw.send({"id": 5, "method": "run.list", "params": {"limit": "ten"}})
    error = raw.recv()["error"]
    assert error["code"] == "invalid_params" and error["data"] == {"field": "limit"}
    for bad_labels in (["a"], {"a": 1}):
        raw.send({"id": 7, "method": "run.list", "params": {"labels": bad_labels}})
        error = raw.recv()["error"]
        assert error["message"] == "labels: expected a map of strings to strings"
        assert error["data"] == {"field": "labels"}
    raw.send({"id": 8, "method": "run.list", "params": {"limit": True}})
    error = raw.recv()["error"]
    assert error["message"] == "limit: expected an integer from 1 to 1000, got True"
    raw.send({"id": 6, "method": "daemon.ping"})
    assert raw.recv()["result"]["pong"] is True


def test_pipelined_requests_answer_out_of_order(daemon: Daemon) -> None:
    """A slow stream and a fast ping on one connection: the ping's answer overtakes the stream's."""
    daemon.start_run(agent("sleeper"), run_id="pipe")
    raw = Raw(daemon.socket)
    raw.send({"id": 1, "method": "run.events", "params": {"run_id": "pipe", "follow": True}})
    raw.send({"id": 2, "method": "daemon.ping"})
    first = raw.recv()
    while "keepalive" in first or "event" in first:
        first = raw.recv()
    assert first["id"] == 2
    raw.send({"id": 3, "method": "rpc.cancel", "params": {"id": 1}})
    seen: dict[int, dict[str, Any]] = {}
    while 1 not in seen or 3 not in seen:
        message = raw.recv()
        if "result" in message or "error" in message:
            seen[message["id"]] = message
    assert seen[3]["result"] == {"ok": True}
    assert seen[1]["result"]["end"] == "cancelled"
    daemon.call("run.cancel", {"run_id": "pipe"})


def test_events_after_zero_and_trimmed_cursor(daemon: Daemon) -> None:
    """after=0 replays from the first event; follow=false ends caught_up with last_seq."""
    daemon.start_run(agent("printer"), run_id="ev", max_turns=1)
    daemon.wait_state("ev", "completed")
    with daemon.client() as client:
        events = list(client.stream("run.events", {"run_id": "ev", "after": 0}))
        assert client.last_stream_result == {"end": "caught_up", "last_seq": events[-1]["seq"]}
        tail = list(client.stream("run.events", {"run_id": "ev", "after": 3}))
        assert [e["seq"] for e in tail] == [e["seq"] for e in events[3:]]
        only = list(
            client.stream("run.events", {"run_id": "ev", "after": 0, "types": ["turn_started"]})
        )
        assert [e["type"] for e in only] == ["turn_started"]
        everything = list(client.stream("run.events", {"after": 0}))
        assert [e["gid"] for e in everything] == sorted(e["gid"] for e in everything)


def test_stream_limit_answers_overloaded(daemon: Daemon) -> None:
    """A 17th stream on one connection gets overloaded (retryable); the others go on."""
    raw = Raw(daemon.socket)
    for i in range(17):
        raw.send({"id": i, "method": "run.events", "params": {"follow": True}})
    response = raw.recv()
    while "error" not in response:
        response = raw.recv()
    assert response["id"] == 16 and response["error"]["code"] == "overloaded"
    assert response["error"]["retryable"] is True
    raw.send({"id": 100, "method": "daemon.ping"})
    while response.get("id") != 100:
        response = raw.recv()
    assert response["result"]["pong"] is True


def test_in_flight_limit_answers_overloaded(daemon: Daemon) -> None:
    """Past 64 requests in flight on one connection the extra ones get overloaded; all are answered."""
    raw = Raw(daemon.socket)
    frames = b"".join(
        struct.pack(">I", len(body)) + body
        for body in (msgpack.packb({"id": i, "method": "run.list"}) for i in range(200))
    )
    raw.sock.sendall(frames)
    answers = [raw.recv() for _ in range(200)]
    assert sorted(a["id"] for a in answers) == list(range(200))
    codes = [a["error"]["code"] for a in answers if "error" in a]
    assert codes and set(codes) == {"overloaded"}
    assert sum("result" in a for a in answers) >= 64
    raw.send({"id": 500, "method": "daemon.ping"})
    assert raw.recv()["result"]["pong"] is True


def admitted(daemon: Daemon) -> Raw | None:
    """A connection that codyd accepted, or None while it still counts clients that left."""
    raw = Raw(daemon.socket)
    try:
        raw.send({"id": 1, "method": "daemon.ping"})
        if "result" in raw.recv():
            return raw
    except (OSError, EOFError):
        pass
    raw.close()
    return None


def test_max_connections_answers_overloaded_and_recovers(daemon_factory) -> None:
    """Past max_connections a client gets overloaded (id null) and is closed; later ones get in."""
    daemon = daemon_factory(env={"CODYD_MAX_CONNECTIONS": "2"})
    first = wait_until(lambda: admitted(daemon), what="a first connection")
    second = wait_until(lambda: admitted(daemon), what="a second connection")
    third = Raw(daemon.socket)
    response = third.recv()
    assert response["id"] is None and response["error"]["code"] == "overloaded"
    assert third.closed()
    first.close()

    def ping_gets_in() -> bool:
        try:
            return bool(daemon.call("daemon.ping")["pong"])
        except Overloaded:
            return False  # codyd has not yet seen the first client go

    wait_until(ping_gets_in, what="a free connection slot")
    second.close()


@pytest.mark.parametrize("method", ["run.status", "run.pause", "run.resume", "run.cancel"])
def test_run_methods_validate_run_id(daemon: Daemon, method: str) -> None:
    """Every run method refuses a missing or malformed run_id with invalid_params naming it."""
    raw = Raw(daemon.socket)
    for params in ({}, {"run_id": 5}, {"run_id": "../../x"}):
        raw.send({"id": 1, "method": method, "params": params})
        error = raw.recv()["error"]
        assert error["code"] == "invalid_params" and error["data"]["field"] == "run_id"


def test_shutdown_method_ends_streams_and_exits(daemon: Daemon) -> None:
    """daemon.shutdown answers ok; open streams end with end: shutdown; codyd exits 0."""
    raw = Raw(daemon.socket)
    raw.send({"id": 1, "method": "run.events", "params": {"follow": True}})
    other = Raw(daemon.socket)
    other.send({"id": 2, "method": "daemon.shutdown"})
    assert other.recv() == {"id": 2, "result": {"ok": True}}
    response = raw.recv()
    while "keepalive" in response:
        response = raw.recv()
    assert response["result"]["end"] == "shutdown"
    assert daemon.wait_exit(15) == 0
