"""The HTTP listener of a real daemon (docs/http.md), spoken to with httpx over loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from disk_faults import ext4_image, force_read_only
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from codyd.errors import CodydError

from conftest import Daemon, agent, wait_until

READ = "read-secret-1"
CONTROL = "control-secret-2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Http:
    def __init__(self, daemon: Daemon, port: int) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{port}"
        self.port = port

    def client(self, token: str | None = CONTROL, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def http_factory(daemon_factory: Callable[..., Daemon]) -> Iterator[Callable[..., Http]]:
    def make(env: dict[str, str] | None = None, host: str = "127.0.0.1", **kwargs: Any) -> Http:
        port = free_port()
        daemon = daemon_factory(
            env={
                "CODYD_HTTP_LISTEN": f"{host}:{port}",
                "CODYD_HTTP__READ_TOKEN": READ,
                "CODYD_HTTP__CONTROL_TOKEN": CONTROL,
                "CODYD_KEEPALIVE_S": "0.5",
                **(env or {}),
            },
            **kwargs,
        )
        return Http(daemon, port)

    yield make


@pytest.fixture
def http(http_factory: Callable[..., Http]) -> Http:
    return http_factory()


def start_spec(daemon: Daemon, *args: str) -> dict[str, Any]:
    return {
        "agent": "command",
        "command": agent("printer", *args),
        "workspace": str(daemon.workspace()),
        "prompt": "go",
        "max_turns": 1,
    }


def test_health_ready_and_metrics_need_no_token(http: Http) -> None:
    with http.client(token=None) as client:
        assert client.get("/healthz").json() == {"ok": True}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    for name in (
        "codyd_build_info",
        "codyd_runs",
        "codyd_runs_waiting",
        "codyd_turns",
        "codyd_turn_duration_seconds",
        "codyd_tokens",
        "codyd_cost_usd",
        "codyd_events",
        "codyd_rpc_requests",
        "codyd_rpc_duration_seconds",
        "codyd_connections",
        "codyd_mirror_lag_events",
        "codyd_webhook_lag_events",
    ):
        assert name in families, name


def test_auth_statuses(http: Http) -> None:
    with http.client(token=None) as anonymous:
        refused = anonymous.get("/api/v1/runs")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "unauthorized"
    with http.client(token="wrong") as wrong:
        assert wrong.get("/api/v1/info").status_code == 401
    with http.client(token=READ) as reader:
        assert reader.get("/api/v1/runs").status_code == 200
        forbidden = reader.post("/api/v1/runs", json=start_spec(http.daemon))
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
    with http.client(token=CONTROL) as controller:
        assert controller.get("/api/v1/info").json()["pid"] == http.daemon.proc.pid  # type: ignore[union-attr]
    assert READ not in http.daemon.log() and CONTROL not in http.daemon.log()


def test_no_token_refuses_api_unless_anonymous_read(http_factory: Callable[..., Http]) -> None:
    closed = http_factory(
        env={
            "CODYD_HTTP__READ_TOKEN": "",
            "CODYD_HTTP__CONTROL_TOKEN": "",
            "CODYD_HTTP__METRICS_AUTH": "true",
        }
    )
    with closed.client(token=None) as client:
        assert client.get("/api/v1/runs").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/healthz").status_code == 200
    open_ = http_factory(
        env={
            "CODYD_HTTP__READ_TOKEN": "",
            "CODYD_HTTP__CONTROL_TOKEN": "",
            "CODYD_HTTP__ANONYMOUS_READ": "true",
            "CODYD_HTTP__METRICS_AUTH": "true",
        }
    )
    with open_.client(token=None) as client:
        assert client.get("/api/v1/runs").status_code == 200
        assert client.post("/api/v1/runs", json={}).status_code == 401
        assert client.get("/metrics").status_code == 200  # anonymous read covers it


def test_runs_lifecycle_and_errors(http: Http) -> None:
    with http.client() as client:
        created = client.post("/api/v1/runs", json=start_spec(http.daemon))
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        assert created.headers["Location"] == f"/api/v1/runs/{run_id}"
        http.daemon.wait_state(run_id, "completed")
        run = client.get(f"/api/v1/runs/{run_id}").json()
        assert run["state"] == "completed"
        listed = client.get("/api/v1/runs", params={"state": "completed", "limit": 5}).json()
        bad_state = client.get("/api/v1/runs", params={"state": "sleepy"}).json()["error"]
        assert bad_state["data"] == {"field": "state"}, bad_state
        assert [r["run_id"] for r in listed["runs"]] == [run_id]
        assert client.get("/api/v1/runs", params={"label": "x=y"}).json()["runs"] == []
        logs = client.get(f"/api/v1/runs/{run_id}/logs", params={"turn": 1})
        assert (
            logs.status_code == 200 and logs.headers["content-type"] == "application/octet-stream"
        )
        # The same errors as the socket, at their statuses.
        cases = [
            (client.get("/api/v1/runs/nope"), 404, "not_found"),
            (client.post(f"/api/v1/runs/{run_id}/pause", json={}), 409, "invalid_state"),
            (client.post(f"/api/v1/runs/{run_id}/retry", json={}), 409, "invalid_state"),
            (client.delete("/api/v1/runs/nope"), 404, "not_found"),
            (client.post(f"/api/v1/runs/{run_id}/explode"), 404, "not_found"),
            (client.get("/api/v1/runs", params={"state": "sleepy"}), 400, "invalid_params"),
            (client.get("/api/v1/runs", params={"limit": "many"}), 400, "invalid_params"),
            (client.get("/api/v1/runs", params={"colour": "red"}), 400, "invalid_params"),
            (client.post("/api/v1/runs", json={"agent": "command"}), 400, "invalid_params"),
            (client.post("/api/v1/runs", content=b"{not json", headers=_json), 400, "bad_request"),
            (client.post("/api/v1/runs", content=b"[1]", headers=_json), 400, "bad_request"),
            (
                client.post("/api/v1/runs", content=b"{}", headers={"Content-Type": "text/plain"}),
                400,
                "bad_request",
            ),
            (client.get("/nowhere"), 404, "not_found"),
            (client.put("/api/v1/runs"), 405, "method_not_allowed"),
            (
                client.get(f"/api/v1/runs/{run_id}/events", params={"after": "-1"}),
                400,
                "invalid_params",
            ),
        ]
        for response, status, code in cases:
            assert response.status_code == status, (response.request.url, response.text)
            error = response.json()["error"]
            assert error["code"] == code
            assert set(error) == {"code", "message", "retryable", "data"}
        # A 405 names every method the path takes, though each has its own route.
        assert client.put("/api/v1/runs").headers["Allow"] == "GET, HEAD, POST"
        control_only = client.get(f"/api/v1/runs/{run_id}/pause")
        assert control_only.status_code == 405 and control_only.headers["Allow"] == "POST"
        # DELETE is run.forget: the finished run is gone.
        forgotten = client.delete(f"/api/v1/runs/{run_id}")
        assert forgotten.status_code == 200 and forgotten.json() == {"ok": True}
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 404


_json = {"Content-Type": "application/json"}


def test_control_endpoints_and_paging(http: Http) -> None:
    """pause, resume, cancel and retry answer the snapshot; run.list pages with its cursor."""
    daemon = http.daemon
    with http.client() as client:
        spec = {**start_spec(daemon), "command": agent("sleeper"), "max_turns": 5}
        run_id = client.post("/api/v1/runs", json=spec).json()["run_id"]
        daemon.wait_state(run_id, "running")
        paused = client.post(f"/api/v1/runs/{run_id}/pause", json={"now": True})
        assert paused.status_code == 200 and paused.json()["run_id"] == run_id, paused.text
        daemon.wait_state(run_id, "paused")
        resumed = client.post(f"/api/v1/runs/{run_id}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] in ("queued", "running")
        cancelled = client.post(f"/api/v1/runs/{run_id}/cancel", json={"reason": "done here"})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] in ("cancelling", "cancelled")
        daemon.wait_state(run_id, "cancelled")

        failing = {**start_spec(daemon), "command": agent("failer")}
        failed_id = client.post("/api/v1/runs", json=failing).json()["run_id"]
        daemon.wait_state(failed_id, "failed")
        retried = client.post(f"/api/v1/runs/{failed_id}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["state"] in ("queued", "running")

        third = client.post("/api/v1/runs", json=start_spec(daemon)).json()["run_id"]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/runs", params=params).json()
            assert len(page["runs"]) <= 1
            seen += [run["run_id"] for run in page["runs"]]
            cursor = page["cursor"]
            if cursor is None:
                break
    assert sorted(seen) == sorted({run_id, failed_id, third})


def test_run_start_errors_are_the_sockets(http: Http) -> None:
    """The same checks answer over HTTP and over the socket: code, message and data."""
    specs: list[dict[str, Any]] = [
        {"agent": "command"},
        {"agent": "nope", "prompt": "p", "workspace": "/tmp"},
        {"agent": "command", "command": ["x"], "prompt": "p", "workspace": "relative"},
    ]
    with http.client() as client:
        for spec in specs:
            over_http = client.post("/api/v1/runs", json=spec)
            with pytest.raises(CodydError) as over_socket:
                http.daemon.call("run.start", spec)
            assert over_http.status_code == 400
            error = over_http.json()["error"]
            assert (error["code"], error["message"], error["data"]) == (
                over_socket.value.code,
                over_socket.value.message,
                over_socket.value.data,
            )


def test_body_over_max_frame_bytes_is_413(http_factory: Callable[..., Http]) -> None:
    http = http_factory(env={"CODYD_MAX_FRAME_BYTES": "2048"})
    with http.client() as client:
        response = client.post("/api/v1/runs", content=b"x" * 5000, headers=_json)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "frame_too_large"
        assert client.get("/healthz").status_code == 200


def test_event_page_and_sse(http: Http) -> None:
    with http.client() as client:
        run_id = client.post("/api/v1/runs", json=start_spec(http.daemon)).json()["run_id"]
        http.daemon.wait_state(run_id, "completed")
        page = client.get(f"/api/v1/runs/{run_id}/events", params={"after": 0, "limit": 2}).json()
        assert [e["seq"] for e in page["events"]] == [1, 2] and page["last_seq"] == 2
        rest = client.get(f"/api/v1/runs/{run_id}/events", params={"after": 2}).json()
        assert rest["events"][0]["seq"] == 3
        last = rest["last_seq"]
        lines = _sse_lines(client, f"/api/v1/runs/{run_id}/events?after=0")
    assert lines[0] == "retry: 2000"
    ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert ids == list(range(1, last + 1))
    assert lines[-2] == "event: end"
    assert json.loads(lines[-1][6:]) == {"end": "finished", "last_seq": last}


def _sse_lines(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> list[str]:
    with client.stream("GET", url, headers={"Accept": "text/event-stream", **(headers or {})}) as r:
        assert r.status_code == 200, r.read()
        return [line for line in r.iter_lines() if line]


def test_sse_all_runs_resumes_across_a_restart(http: Http) -> None:
    """An SSE client resumes with Last-Event-ID after a restart: every gid once, none missed."""
    daemon = http.daemon
    seen: list[int] = []
    retries: list[int | None] = []

    def read_until_completed(client: httpx.Client, run_id: str, **kwargs: Any) -> None:
        with connect_sse(client, "GET", "/api/v1/events", **kwargs) as source:
            for sse in source.iter_sse():
                if sse.retry is not None or not sse.id:
                    retries.append(sse.retry)
                    continue
                event = sse.json()
                assert sse.event == event["type"] and int(sse.id) == event["gid"]
                seen.append(event["gid"])
                if event["type"] == "run_completed" and event["run_id"] == run_id:
                    return

    with http.client() as client:
        first = client.post("/api/v1/runs", json=start_spec(daemon)).json()["run_id"]
        daemon.wait_state(first, "completed")
        read_until_completed(client, first, params={"after": 0})
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    daemon.start()
    with http.client() as client:
        second = client.post("/api/v1/runs", json=start_spec(daemon)).json()["run_id"]
        daemon.wait_state(second, "completed")
        read_until_completed(client, second, headers={"Last-Event-ID": str(seen[-1])})
    assert seen == list(range(1, seen[-1] + 1))
    assert retries == [2000, 2000]


def test_sse_keepalive(http: Http) -> None:
    with http.client() as client:
        headers = {"Accept": "text/event-stream"}
        with client.stream("GET", "/api/v1/events", headers=headers) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            assert [next(lines) for _ in range(2)] == ["", ": keepalive"]


def test_sse_cursor_before_the_retained_events_is_410(http_factory: Callable[..., Http]) -> None:
    http = http_factory(env={"CODYD_EVENT_RETENTION__MAX_EVENTS_PER_RUN": "2"})
    with http.client() as client:
        run_id = client.post("/api/v1/runs", json=start_spec(http.daemon)).json()["run_id"]
        http.daemon.wait_state(run_id, "completed")
        url = f"/api/v1/runs/{run_id}/events"
        wait_until(lambda: client.get(url, params={"after": 0}).json()["events"][0]["seq"] > 2)
        headers = {"Accept": "text/event-stream"}
        trimmed = client.get(url, params={"after": 1}, headers=headers)
        assert trimmed.status_code == 410
        error = trimmed.json()["error"]
        assert error["code"] == "trimmed" and error["data"]["oldest_seq"] > 2
        assert client.get(url, headers={**headers, "Last-Event-ID": "x"}).status_code == 400


def test_metrics_count_turns_and_requests(http: Http) -> None:
    with http.client() as client:
        run_id = client.post("/api/v1/runs", json=start_spec(http.daemon)).json()["run_id"]
        http.daemon.wait_state(run_id, "completed")
        http.daemon.call("daemon.ping")
        text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("codyd_turns_total", (("agent", "command"), ("outcome", "ok")))] == 1
    assert samples[("codyd_runs", (("state", "completed"),))] == 1
    assert samples[("codyd_rpc_requests_total", (("code", "ok"), ("method", "run.start")))] == 1
    assert samples[("codyd_rpc_requests_total", (("code", "ok"), ("method", "daemon.ping")))] >= 1
    assert samples[("codyd_events_total", ())] >= 5
    assert all("run_id" not in labels for _, labels in ((k[0], dict(k[1])) for k in samples))


def test_metrics_count_waiting_runs_by_reason(http: Http) -> None:
    """A run waiting out a rate limit is one codyd_runs_waiting{reason="rate_limited"}."""
    spec = {**start_spec(http.daemon), "command": agent("reporter", "limit+3600"), "max_turns": 3}
    with http.client() as client:
        run_id = client.post("/api/v1/runs", json=spec).json()["run_id"]
        http.daemon.wait_event(run_id, "rate_limited")

        def waiting() -> dict[str, float]:
            text = client.get("/metrics").text
            return {
                s.labels["reason"]: s.value
                for family in text_string_to_metric_families(text)
                if family.name == "codyd_runs_waiting"
                for s in family.samples
            }

        deadline = time.monotonic() + 10
        while (seen := waiting()).get("rate_limited") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen == {"rate_limited": 1, "account_limited": 0, "unavailable": 0, "disk_full": 0}


def test_hostile_clients_do_not_block_the_daemon(http: Http) -> None:
    """Idle connections, a header flood, a half-sent request and a client gone mid-stream."""
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", http.port)))
        flood = socket.create_connection(("127.0.0.1", http.port))
        flood.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 100_000)
        half = socket.create_connection(("127.0.0.1", http.port))
        half.sendall(b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        garbage = socket.create_connection(("127.0.0.1", http.port))
        garbage.sendall(b"\x00\xff nonsense \r\n\r\n")
        idle += [flood, half, garbage]
        for refused, status in ((flood, b"431"), (garbage, b"400")):
            refused.settimeout(10)
            answer = b""
            while b"}}" not in answer and (chunk := refused.recv(4096)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 " + status), answer
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"content-type: application/json" in head.lower(), head
            assert json.loads(body)["error"]["code"] == "bad_request", body
        began = time.monotonic()
        assert http.daemon.call("daemon.ping")["pong"] is True
        with http.client() as client:
            assert client.get("/healthz").status_code == 200
            with client.stream("GET", "/api/v1/events", headers={"Accept": "text/event-stream"}):
                pass  # gone before reading a byte
            assert client.get("/readyz").status_code == 200
            # The daemon ended that stream (it is counted once it has ended).
            ended = 'codyd_rpc_requests_total{code="ok",method="run.events"} 1.0'
            wait_until(lambda: ended in client.get("/metrics").text, 10, "the stream to end")
        assert time.monotonic() - began < 10
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: http.daemon.call("daemon.info")["pid"], 10, "the daemon to answer")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_shutdown_is_not_held_by_a_client_that_stops_reading(
    http_factory: Callable[..., Http], host: str
) -> None:
    """A response the client never reads (megabytes of log) does not hold the shutdown.

    The daemon writes until the socket buffers are full and its write waits; at
    shutdown the listener cuts the connection after its grace (also when it listens
    on every address, and its connections' local address is not the one it bound).
    """
    http = http_factory(host=host)
    with http.client() as client:
        run_id = client.post("/api/v1/runs", json=start_spec(http.daemon, 400_000)).json()["run_id"]
    http.daemon.wait_state(run_id, "completed")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", http.port))
    stuck.sendall(
        f"GET /api/v1/runs/{run_id}/logs?turn=1 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {READ}\r\n\r\n".encode()
    )
    assert stuck.recv(100).startswith(b"HTTP/1.1 200")
    follower = socket.create_connection(("127.0.0.1", http.port), timeout=10)
    follower.sendall(
        b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        + f"Authorization: Bearer {READ}\r\n\r\n".encode()
    )
    received = b""
    while b"retry: 2000" not in received:  # the head and the first line may come apart
        received += follower.recv(4096)
    try:
        began = time.monotonic()
        http.daemon.signal(signal.SIGTERM)
        while chunk := follower.recv(4096):  # the stream closes, without an `end` event
            received += chunk
        assert b"event: end" not in received
        assert http.daemon.wait_exit(timeout=20) == 0
        assert time.monotonic() - began < 8
    finally:
        stuck.close()
        follower.close()


def test_bad_http_listen_is_a_config_error(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(env={"CODYD_HTTP_LISTEN": "localhost:http"}, start=False)
    daemon.start(wait=False)
    assert daemon.wait_exit() != 0
    assert "http_listen" in daemon.log()


def test_a_taken_port_stops_the_start(daemon_factory: Callable[..., Daemon]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemon_factory(env={"CODYD_HTTP_LISTEN": f"127.0.0.1:{port}"}, start=False)
        daemon.start(wait=False)
        assert daemon.wait_exit() == 1
    assert f"cannot listen on http_listen=127.0.0.1:{port}" in daemon.log()
    assert not daemon.socket.exists()


def test_readyz_says_why_while_the_store_cannot_write(http_factory: Callable[..., Http]) -> None:
    """The kernel turns the state dir read-only: /readyz is 503 naming the store, /healthz 200,
    and a control request is 503 overloaded with Retry-After."""
    http = http_factory(start=False)
    daemon = http.daemon
    daemon.env["CODYD_MIN_FREE_BYTES"] = "0"  # a 32 MiB file system: the disk guard is off
    with ext4_image(daemon.state_dir):
        daemon.start()
        with http.client() as client:
            assert client.get("/readyz").json() == {"ready": True}
            run_id = client.post(
                "/api/v1/runs",
                json={**start_spec(daemon), "command": agent("ticker", 0.002, 500_000)},
            ).json()["run_id"]
            daemon.wait_event(run_id, "subprocess_output")
            force_read_only(daemon.state_dir)
            ready = wait_until(
                lambda: (r := client.get("/readyz")).status_code == 503 and r, 20, "readyz 503"
            )
            body = ready.json()
            assert body["ready"] is False
            assert any("store cannot write" in reason for reason in body["reasons"]), body
            assert client.get("/healthz").status_code == 200
            refused = client.post(f"/api/v1/runs/{run_id}/cancel")
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
        daemon.signal(signal.SIGTERM)
        daemon.wait_exit(timeout=30)


def test_a_stream_nobody_reads_slows_no_run(http: Http) -> None:
    """An all-runs stream whose client never reads: runs go on, other streams are served."""
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", http.port))
    stuck.sendall(
        b"GET /api/v1/events?after=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        + f"Authorization: Bearer {READ}\r\n\r\n".encode()
    )
    try:
        with http.client() as client:
            chatty = agent("sentinel_stream", 100_000, 20_000)  # megabytes of events
            spec = {**start_spec(http.daemon), "command": chatty}
            run_id = client.post("/api/v1/runs", json=spec).json()["run_id"]
            http.daemon.wait_state(run_id, "completed", timeout=30)
            lines = _sse_lines(client, f"/api/v1/runs/{run_id}/events?after=0")
            assert sum(line.startswith("id: ") for line in lines) > 20_000
            assert lines[-2] == "event: end"
    finally:
        stuck.close()


def test_info_names_the_http_address_and_codyctl_shows_it(http: Http) -> None:
    """daemon.info says where HTTP listens; `codyctl info` prints it; off, it says so."""
    url = f"http://127.0.0.1:{http.port}/"
    info = http.daemon.call("daemon.info")
    assert info["http"] == {"enabled": True, "listen": f"127.0.0.1:{http.port}", "url": url}
    shown = subprocess.run(
        [sys.executable, "-m", "codyctl", "--socket", str(http.daemon.socket), "info"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert url in shown.stdout


def test_info_says_http_is_off_by_default(daemon: Daemon) -> None:
    """Without http_listen, daemon.info.http is just {enabled: false}."""
    assert daemon.call("daemon.info")["http"] == {"enabled": False}
