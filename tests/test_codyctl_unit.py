"""The codyctl client library and command line, against a scripted daemon on a real socket."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codyctl.client import (
    Client,
    ConnectError,
    ConnectionLost,
    DeadlineExceeded,
    ResponseTimeout,
    default_socket_path,
)
from codyd.errors import (
    CodydError,
    InvalidParams,
    NotFound,
    ShuttingDown,
    Trimmed,
    Unauthorized,
    UnknownMethod,
)
from codyd.protocol import FrameDecoder, pack

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    "start",
    "status",
    "list",
    "pause",
    "resume",
    "cancel",
    "tail",
    "logs",
    "wait",
    "info",
    "ping",
    "shutdown",
    "watch",
    "completion",
    "man",
]
SNAPSHOT: dict[str, Any] = {
    "run_id": "r1",
    "name": "",
    "state": "queued",
    "phase": "idle",
    "workspace": "/ws",
    "agent": "command",
    "labels": {},
    "created_at": 1700000000.0,
    "started_at": None,
    "updated_at": 1700000000.0,
    "finished_at": None,
    "last_activity": None,
    "pid": None,
    "current_turn": 0,
    "session_id": None,
    "stats": {
        "turns": 0,
        "failed_turns": 0,
        "tokens": {"input": 0, "output": 0, "cached": 0, "total": 0},
        "cost_usd": 0.0,
        "files": {"read": 0, "written": 0, "deleted": 0},
        "tests": {"runs": 0, "passed": 0, "failed": 0},
    },
    "completion": {"detected": False, "reason": None, "line": None},
    "error": None,
    "node": "n1",
    "last_seq": 1,
}


def event(seq: int, kind: str = "message", **data: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "gid": 100 + seq,
        "run_id": "r1",
        "ts": 1700000000.0 + seq,
        "type": kind,
        "turn": 1,
        "data": data,
    }


class FakeConnection:
    """The daemon side of one accepted connection."""

    def __init__(self, sock: socket.socket, index: int, received: queue.Queue[Any]) -> None:
        self.sock = sock
        self.index = index
        self._received = received
        self._decoder = FrameDecoder()
        self._pending: list[dict[str, Any]] = []

    def request(self) -> dict[str, Any] | None:
        """The next request, or None once the client has closed the connection."""
        while not self._pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self._pending.extend(self._decoder.feed(data))
        request = self._pending.pop(0)
        self._received.put(request)
        return request

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(pack(message))

    def reply(self, request: dict[str, Any], result: Any) -> None:
        self.send({"id": request["id"], "result": result})

    def fail(self, request: dict[str, Any], error: CodydError) -> None:
        self.send({"id": request["id"], "error": error.to_wire()})


Session = Callable[[FakeConnection], None]


class FakeDaemon:
    """A Unix-socket server running ``session`` for each connection, in threads."""

    def __init__(self, path: str, session: Session) -> None:
        self.path = path
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        connections = iter(range(1_000_000))
        received = self.received

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                session(FakeConnection(self.request, next(connections), received))

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far, in order."""
        items = []
        while not self.received.empty():
            items.append(self.received.get_nowait())
        return items

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer_methods(
    handlers: dict[str, Callable[[FakeConnection, dict[str, Any]], None]],
) -> Session:
    """A session that dispatches every request to the handler of its method."""

    def session(conn: FakeConnection) -> None:
        while (request := conn.request()) is not None:
            handler = handlers.get(request["method"])
            if handler is None:
                conn.fail(request, UnknownMethod(f"unknown method {request['method']!r}"))
            else:
                handler(conn, request)

    return session


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="codyctl-", dir="/tmp")
    yield Path(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def serve(socket_dir: Path) -> Iterator[Callable[[Session], FakeDaemon]]:
    daemons: list[FakeDaemon] = []

    def start(session: Session) -> FakeDaemon:
        daemon = FakeDaemon(str(socket_dir / f"d{len(daemons)}.sock"), session)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()


def codyctl(
    *args: str,
    socket_path: str | None = None,
    stdin: Any = subprocess.DEVNULL,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path = REPO_ROOT,
    python_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run the real ``codyctl`` in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    prefix = ["--socket", socket_path] if socket_path is not None else []
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "codyctl", *prefix, *args],
        stdin=None if input_text is not None else stdin,
        input=input_text,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
    )


# --- the command line without a daemon ----------------------------------------------------------


def test_unreachable_socket_exits_3_naming_the_path(socket_dir: Path) -> None:
    """A missing socket exits 3 with a message naming the path and how to start codyd."""
    path = str(socket_dir / "missing.sock")
    result = codyctl("status", "r1", socket_path=path)
    assert result.returncode == 3
    assert path in result.stderr
    assert "codyd serve" in result.stderr
    assert result.stdout == ""


def test_codyd_socket_environment_variable_picks_the_socket(socket_dir: Path) -> None:
    """CODYD_SOCKET replaces the default socket path."""
    path = str(socket_dir / "from-env.sock")
    result = codyctl("ping", env={"CODYD_SOCKET": path})
    assert result.returncode == 3
    assert path in result.stderr


def test_default_socket_path_follows_runtime_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default path is under RUNTIME_DIRECTORY, else XDG_RUNTIME_DIR, else /tmp."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/codyd:/run/other")
    assert default_socket_path() == "/run/codyd/codyd.sock"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert default_socket_path() == "/run/user/7/codyd/codyd.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket_path() == f"/tmp/codyd-{os.getuid()}/codyd.sock"


@pytest.mark.parametrize("flag", ["--env", "--label"])
def test_pair_without_equals_is_a_usage_error(flag: str, socket_dir: Path) -> None:
    """``--env FOO`` or ``--label FOO`` exits 2 naming the flag."""
    result = codyctl(
        "start", str(socket_dir), "--prompt", "p", flag, "FOO", socket_path="/nonexistent.sock"
    )
    assert result.returncode == 2
    assert flag in result.stderr


def test_start_without_workspace_is_a_usage_error() -> None:
    """``start`` with no workspace exits 2."""
    result = codyctl("start", socket_path="/nonexistent.sock")
    assert result.returncode == 2
    assert "WORKSPACE" in result.stderr


def test_start_without_prompt_on_a_terminal_is_a_usage_error(socket_dir: Path) -> None:
    """With no prompt option and a terminal on stdin, start exits 2 instead of blocking."""
    controller, terminal = os.openpty()
    try:
        result = codyctl("start", str(socket_dir), stdin=terminal, socket_path="/nonexistent.sock")
    finally:
        os.close(controller)
        os.close(terminal)
    assert result.returncode == 2
    assert "--prompt" in result.stderr


def test_follow_and_wait_together_are_a_usage_error(socket_dir: Path) -> None:
    """``start --follow --wait`` exits 2."""
    result = codyctl(
        "start", str(socket_dir), "--prompt", "p", "--follow", "--wait", socket_path="/x.sock"
    )
    assert result.returncode == 2


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(command: str | None) -> None:
    """``--help`` works for the group and every command."""
    result = codyctl(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: codyctl")


def test_help_imports_no_trio() -> None:
    """Starting codyctl never imports trio."""
    result = codyctl("--help", python_flags=("-X", "importtime"))
    assert result.returncode == 0
    modules = [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "click" in modules
    assert not [name for name in modules if name == "trio" or name.startswith("trio.")]


# --- the client library -------------------------------------------------------------------------


def test_out_of_order_responses_are_matched_by_id(serve: Callable[[Session], FakeDaemon]) -> None:
    """Pipelined requests get their own results even when answered in reverse order."""

    def session(conn: FakeConnection) -> None:
        first, second = conn.request(), conn.request()
        assert first is not None and second is not None
        conn.reply(second, {"answer": second["method"]})
        conn.reply(first, {"answer": first["method"]})

    daemon = serve(session)
    with Client(daemon.path, timeout=10) as client:
        first_id = client.submit("daemon.ping")
        second_id = client.submit("daemon.info", {"x": 1})
        assert client.result(first_id) == {"answer": "daemon.ping"}
        assert client.result(second_id) == {"answer": "daemon.info"}
    requests = daemon.requests()
    assert [r["id"] for r in requests] == [first_id, second_id]
    assert first_id < second_id
    assert requests[1]["params"] == {"x": 1}


def test_error_responses_raise_the_matching_error_class(
    serve: Callable[[Session], FakeDaemon],
) -> None:
    """Error codes become their CodydError subclass, unknown codes a CodydError with that code."""

    def reply_error(conn: FakeConnection, request: dict[str, Any]) -> None:
        errors = {
            "a": {"code": "not_found", "message": "no run r9", "retryable": False},
            "b": {
                "code": "invalid_params",
                "message": "max_turns: expected an int",
                "retryable": False,
                "data": {"field": "max_turns"},
            },
            "c": {"code": "brand_new", "message": "later protocol", "retryable": True},
        }
        conn.send({"id": request["id"], "error": errors[request["params"]["which"]]})

    daemon = serve(answer_methods({"m": reply_error}))
    with Client(daemon.path, timeout=10) as client:
        with pytest.raises(NotFound, match="no run r9"):
            client.call("m", {"which": "a"})
        with pytest.raises(InvalidParams) as invalid:
            client.call("m", {"which": "b"})
        assert invalid.value.field == "max_turns"
        assert invalid.value.message == "max_turns: expected an int"
        with pytest.raises(CodydError) as unknown:
            client.call("m", {"which": "c"})
        assert unknown.value.code == "brand_new"
        assert unknown.value.retryable is True


def test_connection_level_error_is_raised(serve: Callable[[Session], FakeDaemon]) -> None:
    """An error frame with id null (e.g. unauthorized) is raised as that error."""

    def session(conn: FakeConnection) -> None:
        conn.send({"id": None, "error": Unauthorized("uid 1234 is not allowed").to_wire()})

    daemon = serve(session)
    with Client(daemon.path, timeout=10) as client, pytest.raises(Unauthorized, match="1234"):
        client.call("daemon.ping")


def test_stream_yields_items_and_skips_keepalives(serve: Callable[[Session], FakeDaemon]) -> None:
    """A stream yields its events, skips keepalives and keeps the final result."""

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.send({"id": request["id"], "event": event(1)})
        conn.send({"id": request["id"], "keepalive": True})
        conn.send({"id": 999, "event": event(50)})  # another request's frame is not ours
        conn.send({"id": request["id"], "event": event(2)})
        conn.reply(request, {"end": "caught_up", "last_seq": 2})

    daemon = serve(answer_methods({"run.events": events}))
    with Client(daemon.path, timeout=10) as client:
        items = list(client.stream("run.events", {"run_id": "r1", "after": 0}))
        assert [item["seq"] for item in items] == [1, 2]
        assert client.last_stream_result == {"end": "caught_up", "last_seq": 2}


def test_stream_error_is_raised(serve: Callable[[Session], FakeDaemon]) -> None:
    """A stream ending in an error raises it after the items before it."""

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.send({"id": request["id"], "event": event(1)})
        conn.fail(request, NotFound("no run r1"))

    daemon = serve(answer_methods({"run.events": events}))
    seen: list[int] = []
    with Client(daemon.path, timeout=10) as client, pytest.raises(NotFound):
        for item in client.stream("run.events", {"run_id": "r1"}):
            seen.append(item["seq"])
    assert seen == [1]


def test_abandoned_stream_is_cancelled(serve: Callable[[Session], FakeDaemon]) -> None:
    """Leaving a stream early sends rpc.cancel for it, and the connection stays usable."""

    def session(conn: FakeConnection) -> None:
        stream = conn.request()
        assert stream is not None
        conn.send({"id": stream["id"], "event": event(1)})
        while (request := conn.request()) is not None:
            if request["method"] == "rpc.cancel":
                conn.reply(request, {"ok": True})
                conn.reply(stream, {"end": "cancelled", "last_seq": 1})
            else:
                conn.reply(request, {"pong": True})

    daemon = serve(session)
    with Client(daemon.path, timeout=10) as client:
        for item in client.stream("run.events", {"follow": True}):
            assert item["seq"] == 1
            break
        assert client.call("daemon.ping") == {"pong": True}
    requests = daemon.requests()
    stream_id = requests[0]["id"]
    assert requests[1]["method"] == "rpc.cancel"
    assert requests[1]["params"] == {"id": stream_id}


def test_closed_connection_raises_connection_lost(serve: Callable[[Session], FakeDaemon]) -> None:
    """A daemon closing the connection mid-call raises ConnectionLost, a ConnectError."""

    def session(conn: FakeConnection) -> None:
        conn.request()

    daemon = serve(session)
    with Client(daemon.path, timeout=10) as client, pytest.raises(ConnectionLost) as lost:
        client.call("daemon.ping")
    assert isinstance(lost.value, ConnectError)
    assert daemon.path in str(lost.value)


def test_silence_raises_timeout_or_deadline(serve: Callable[[Session], FakeDaemon]) -> None:
    """No answer within the timeout raises ResponseTimeout; past the deadline, DeadlineExceeded."""

    def session(conn: FakeConnection) -> None:
        while conn.request() is not None:
            pass

    daemon = serve(session)
    with Client(daemon.path, timeout=0.2) as client, pytest.raises(ResponseTimeout):
        client.call("daemon.ping")
    with Client(daemon.path, timeout=30) as client:
        client.deadline = 0.0  # long past
        with pytest.raises(DeadlineExceeded):
            client.call("daemon.ping")


def test_connect_failure_names_the_socket(socket_dir: Path) -> None:
    """Connecting to a missing socket raises ConnectError naming the path."""
    path = str(socket_dir / "none.sock")
    with pytest.raises(ConnectError, match=r"none\.sock") as error:
        Client.connect(path)
    assert error.value.socket_path == path


# --- the command line against a scripted daemon -------------------------------------------------


def test_start_sends_the_spec_and_prints_the_run_id(
    serve: Callable[[Session], FakeDaemon], socket_dir: Path
) -> None:
    """start builds the run spec from its options and prints the run id alone on line 1."""
    daemon = serve(answer_methods({"run.start": lambda conn, req: conn.reply(req, SNAPSHOT)}))
    result = codyctl(
        "start",
        "ws",
        "--prompt-file",
        "p.md",
        "--context-file",
        "a.md",
        "--context-file",
        "b.md",
        "--max-turns",
        "3",
        "--stop-file",
        "STOP",
        "--complete-pattern",
        "DONE",
        "--model",
        "m1",
        "--name",
        "nightly",
        "--run-id",
        "r1",
        "--env",
        "A=1",
        "--env",
        "B=x=y",
        "--label",
        "team=core",
        "--watch-log",
        "build.log",
        "--stall-timeout",
        "5",
        "--turn-timeout",
        "60.5",
        "--",
        "python",
        "-c",
        "print(1)",
        socket_path=daemon.path,
        cwd=socket_dir,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "r1\n"
    [request] = daemon.requests()
    assert request["method"] == "run.start"
    assert request["params"] == {
        "workspace": str(socket_dir / "ws"),
        "agent": "command",
        "command": ["python", "-c", "print(1)"],
        "prompt_file": "p.md",
        "context_files": ["a.md", "b.md"],
        "max_turns": 3,
        "completion": {"stop_file": "STOP", "pattern": "DONE"},
        "model": "m1",
        "name": "nightly",
        "run_id": "r1",
        "env": {"A": "1", "B": "x=y"},
        "labels": {"team": "core"},
        "watch_logs": ["build.log"],
        "stall_timeout_s": 5.0,
        "turn_timeout_s": 60.5,
    }


def test_start_reads_the_prompt_from_stdin(serve: Callable[[Session], FakeDaemon]) -> None:
    """Without --prompt/--prompt-file a piped stdin is the prompt; unset options are not sent."""
    daemon = serve(answer_methods({"run.start": lambda conn, req: conn.reply(req, SNAPSHOT)}))
    result = codyctl(
        "--json", "start", "/ws", "--agent", "codex", socket_path=daemon.path, input_text="fix it\n"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == SNAPSHOT
    [request] = daemon.requests()
    assert request["params"] == {"workspace": "/ws", "agent": "codex", "prompt": "fix it\n"}


def test_daemon_error_exits_1(serve: Callable[[Session], FakeDaemon]) -> None:
    """An error prints ``codyctl: <code>: <message>``, with --json also the error object; exit 1."""
    daemon = serve(answer_methods({"run.status": lambda c, r: c.fail(r, NotFound("no run r9"))}))
    result = codyctl("--json", "status", "r9", socket_path=daemon.path)
    assert result.returncode == 1
    assert result.stderr.strip() == "codyctl: not_found: no run r9"
    error = {"code": "not_found", "message": "no run r9", "retryable": False, "data": {}}
    assert json.loads(result.stdout) == {"error": error}


def test_status_prints_snapshot(serve: Callable[[Session], FakeDaemon]) -> None:
    """status renders a snapshot for humans and as one JSON object with --json."""

    def no_events(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.reply(request, {"end": "caught_up", "last_seq": 1})

    daemon = serve(
        answer_methods(
            {"run.status": lambda conn, req: conn.reply(req, SNAPSHOT), "run.events": no_events}
        )
    )
    human = codyctl("status", "r1", socket_path=daemon.path)
    assert human.returncode == 0, human.stderr
    assert "queued (idle)" in human.stdout
    assert "/ws" in human.stdout
    machine = codyctl("--json", "status", "r1", socket_path=daemon.path)
    assert json.loads(machine.stdout) == SNAPSHOT


def test_control_commands_print_a_summary(serve: Callable[[Session], FakeDaemon]) -> None:
    """pause sends its options and prints ``<run_id> <state>``."""

    def pause(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.reply(request, {**SNAPSHOT, "state": "pausing"})

    daemon = serve(answer_methods({"run.pause": pause}))
    result = codyctl("pause", "r1", "--now", "--reason", "lunch", socket_path=daemon.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "r1 pausing\n"
    [request] = daemon.requests()
    assert request["params"] == {"run_id": "r1", "now": True, "reason": "lunch"}


def waiting_daemon(final_state: str) -> Session:
    """A run in progress whose event stream ends ``finished`` in ``final_state``."""
    statuses = iter([{**SNAPSHOT, "state": "running", "last_seq": 7}])

    def status(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.reply(request, next(statuses, {**SNAPSHOT, "state": final_state, "last_seq": 9}))

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.send({"id": request["id"], "keepalive": True})
        conn.send({"id": request["id"], "event": event(9, f"run_{final_state}")})
        conn.reply(request, {"end": "finished", "last_seq": 9})

    return answer_methods({"run.status": status, "run.events": events})


@pytest.mark.parametrize(("final_state", "status"), [("completed", 0), ("failed", 4)])
def test_wait_exit_status_follows_the_final_state(
    serve: Callable[[Session], FakeDaemon], final_state: str, status: int
) -> None:
    """wait follows the run's events from its last seq and exits 0 or 4 by its final state."""
    daemon = serve(waiting_daemon(final_state))
    result = codyctl("wait", "r1", socket_path=daemon.path)
    assert result.returncode == status, result.stderr
    assert result.stdout == f"r1 {final_state}\n"
    stream = next(r for r in daemon.requests() if r["method"] == "run.events")
    assert stream["params"]["after"] == 7
    assert stream["params"]["follow"] is True
    assert stream["params"]["run_id"] == "r1"


def test_wait_timeout_exits_5(serve: Callable[[Session], FakeDaemon]) -> None:
    """wait --timeout exits 5 when the run does not end in time."""

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.send({"id": request["id"], "keepalive": True})

    def status(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.reply(request, {**SNAPSHOT, "state": "running"})

    daemon = serve(answer_methods({"run.status": status, "run.events": events}))
    result = codyctl("wait", "r1", "--timeout", "0.5", socket_path=daemon.path)
    assert result.returncode == 5
    assert "r1" in result.stderr


@pytest.mark.parametrize("interruption", ["close", "shutdown_end", "shutting_down"])
def test_tail_follow_resumes_after_the_daemon_goes_away(
    serve: Callable[[Session], FakeDaemon], interruption: str
) -> None:
    """tail -f reconnects and resumes after the last seq printed: no duplicate, no gap."""

    def session(conn: FakeConnection) -> None:
        request = conn.request()
        if request is None:
            return
        after = request["params"]["after"]
        if conn.index == 0:
            for seq in (after + 1, after + 2):
                conn.send({"id": request["id"], "event": event(seq, text=f"e{seq}")})
            if interruption == "shutdown_end":
                conn.reply(request, {"end": "shutdown", "last_seq": after + 2})
            elif interruption == "shutting_down":
                conn.fail(request, ShuttingDown("codyd is shutting down"))
        elif conn.index == 1 and interruption == "shutting_down":
            conn.fail(request, ShuttingDown("codyd is shutting down"))
        else:
            conn.send(
                {
                    "id": request["id"],
                    "event": event(after + 1, role="assistant", text="last words"),
                }
            )
            conn.reply(request, {"end": "finished", "last_seq": after + 1})

    daemon = serve(session)
    result = codyctl("tail", "r1", "-f", "--after", "0", socket_path=daemon.path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert lines[2].endswith(" 1 message assistant: last words")
    afters = [request["params"]["after"] for request in daemon.requests()]
    assert afters[0] == 0
    assert set(afters[1:]) == {2}


def test_tail_restarts_after_trimmed_events(serve: Callable[[Session], FakeDaemon]) -> None:
    """On ``trimmed`` tail warns on stderr and continues from the oldest retained event."""

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        if request["params"]["after"] < 4:
            conn.fail(request, Trimmed("events were trimmed", oldest_seq=5))
            return
        conn.send({"id": request["id"], "event": event(5, "subprocess_output", text="hi\n")})
        conn.reply(request, {"end": "caught_up", "last_seq": 5})

    daemon = serve(answer_methods({"run.events": events}))
    result = codyctl("tail", "r1", "--after", "2", socket_path=daemon.path)
    assert result.returncode == 0, result.stderr
    assert "codyctl: events before seq 5 were trimmed" in result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("5 ")
    assert line.endswith(" 1 subprocess_output hi")
    assert [r["params"]["after"] for r in daemon.requests()] == [2, 4]


def test_tail_without_after_starts_20_before_the_newest(
    serve: Callable[[Session], FakeDaemon],
) -> None:
    """Without --after, tail of a run starts at last_seq - 20, as JSON lines with --json."""

    def status(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.reply(request, {**SNAPSHOT, "last_seq": 30})

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        conn.send({"id": request["id"], "event": event(11)})
        conn.reply(request, {"end": "caught_up", "last_seq": 11})

    daemon = serve(answer_methods({"run.status": status, "run.events": events}))
    result = codyctl("--json", "tail", "r1", socket_path=daemon.path)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [event(11)]
    stream = daemon.requests()[-1]
    assert stream["params"] == {"run_id": "r1", "after": 10, "follow": False}


def test_tail_type_filters_the_whole_history_then_keeps_the_last_20(
    serve: Callable[[Session], FakeDaemon],
) -> None:
    """``tail --type T`` asks for T from the first event on and prints the last 20 of them."""

    def events(conn: FakeConnection, request: dict[str, Any]) -> None:
        for seq in range(1, 26):
            conn.send({"id": request["id"], "event": event(seq * 10)})
        conn.reply(request, {"end": "caught_up", "last_seq": 250})

    daemon = serve(answer_methods({"run.events": events}))
    result = codyctl("--json", "tail", "r1", "--type", "message", socket_path=daemon.path)
    assert result.returncode == 0, result.stderr
    seqs = [json.loads(line)["seq"] for line in result.stdout.splitlines()]
    assert seqs == [seq * 10 for seq in range(6, 26)]
    [stream] = daemon.requests()
    assert stream["params"] == {"run_id": "r1", "after": 0, "follow": False, "types": ["message"]}


def test_tail_refuses_an_unknown_type_naming_the_known_ones() -> None:
    """``tail --type nosuch`` exits 2 before connecting and lists the event types."""
    result = codyctl("tail", "r1", "--type", "turn_complete", socket_path="/nonexistent.sock")
    assert result.returncode == 2
    assert "unknown event type 'turn_complete'" in result.stderr
    assert "turn_completed" in result.stderr and "run_queued" in result.stderr


def test_logs_write_raw_bytes(serve: Callable[[Session], FakeDaemon]) -> None:
    """logs writes chunk bytes as they are; --json decodes them with replacement."""

    def logs(conn: FakeConnection, request: dict[str, Any]) -> None:
        for offset, data in ((0, b"caf\xc3\xa9 "), (6, b"\xff\x00end")):
            chunk = {"turn": 2, "stream": "stderr", "offset": offset, "data": data}
            conn.send({"id": request["id"], "chunk": chunk})
        conn.reply(request, {"end": "caught_up", "last_seq": 0})

    daemon = serve(answer_methods({"run.logs": logs}))
    raw = subprocess.run(
        [sys.executable, "-m", "codyctl", "--socket", daemon.path, "logs", "r1", "--stderr"],
        capture_output=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == b"caf\xc3\xa9 \xff\x00end"
    assert daemon.requests()[0]["params"] == {"run_id": "r1", "stream": "stderr", "follow": False}
    as_json = codyctl("--json", "logs", "r1", "--turn", "2", socket_path=daemon.path)
    chunks = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [chunk["data"] for chunk in chunks] == ["café ", "\ufffd\x00end"]


def test_list_follows_the_cursor_up_to_the_limit(serve: Callable[[Session], FakeDaemon]) -> None:
    """list pages with the cursor until --limit runs are shown, then renders a table."""

    def run_list(conn: FakeConnection, request: dict[str, Any]) -> None:
        page = 0 if "cursor" not in request["params"] else 1
        runs = [{**SNAPSHOT, "run_id": f"p{page}r{i}"} for i in range(request["params"]["limit"])]
        conn.reply(request, {"runs": runs[:2], "cursor": f"c{page + 1}"})

    daemon = serve(answer_methods({"run.list": run_list}))
    result = codyctl(
        "list", "--limit", "3", "--state", "queued", "--label", "a=b", socket_path=daemon.path
    )
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].split() == [
        "RUN",
        "ID",
        "NAME",
        "STATE",
        "PHASE",
        "TURN",
        "AGENT",
        "LAST",
        "ACTIVITY",
    ]
    assert [row.split()[0] for row in rows[1:]] == ["p0r0", "p0r1", "p1r0"]
    params = [request["params"] for request in daemon.requests()]
    assert params == [
        {"states": ["queued"], "labels": {"a": "b"}, "limit": 3},
        {"states": ["queued"], "labels": {"a": "b"}, "cursor": "c1", "limit": 1},
    ]


def test_ping_prints_the_round_trip(serve: Callable[[Session], FakeDaemon]) -> None:
    """ping prints the round trip in milliseconds."""
    daemon = serve(
        answer_methods({"daemon.ping": lambda c, r: c.reply(r, {"pong": True, "time": 1.0})})
    )
    result = codyctl("ping", socket_path=daemon.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pong in ")
    assert result.stdout.endswith(" ms\n")


@pytest.mark.parametrize(
    "env",
    [
        {"XDG_RUNTIME_DIR": "run/relative"},
        {"RUNTIME_DIRECTORY": ":/run/second"},
        {"RUNTIME_DIRECTORY": "", "XDG_RUNTIME_DIR": "/run/user/9"},
        {"RUNTIME_DIRECTORY": "/run/codyd", "XDG_RUNTIME_DIR": "/run/user/9"},
        {},
    ],
)
def test_codyctl_looks_where_codyd_listens(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """Whatever the environment, codyctl's default socket is the daemon's default socket."""
    from codyd.config import default_socket_path as daemon_default

    for name in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_socket_path() == str(daemon_default(env))
    assert default_socket_path().startswith("/")


def test_the_stop_file_default_is_codyds() -> None:
    """codyctl repeats codyd's default stop file (to stay light); the two must agree."""
    from codyctl import cli
    from codyd.spec import DEFAULT_STOP_FILE

    assert cli.DEFAULT_STOP_FILE == DEFAULT_STOP_FILE


@pytest.mark.parametrize(
    ("field", "message", "expected"),
    [
        ("max_turns", "max_turns: expected an int", "--max-turns: expected an int"),
        ("completion.stop_file", "completion.stop_file: bad", "--stop-file: bad"),
        ("context_files.1", "context_files.1: outside", "--context-file #2: outside"),
        ("env.A", "env.A: bad", "--env A: bad"),
        ("command", "command: expected a non-empty list", None),
        ("budget.max_tokens", "budget.max_tokens: bad", "--budget-tokens: bad"),
        ("resume_session", "resume_session: bad", None),
    ],
)
def test_protocol_fields_are_reworded_as_flags(
    field: str, message: str, expected: str | None
) -> None:
    from codyctl.startspec import flag_message

    reworded = flag_message(field, message)
    if field == "command":
        assert reworded is not None and reworded.startswith("give the agent's command after `--`")
    else:
        assert reworded == expected
