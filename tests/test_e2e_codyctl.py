"""End to end: the real ``codyctl`` command line against a real codyd daemon."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from conftest import Daemon, agent, short_tempdir, wait_until

SNAPSHOT_FIELDS = {
    "run_id",
    "name",
    "state",
    "phase",
    "workspace",
    "agent",
    "labels",
    "created_at",
    "started_at",
    "updated_at",
    "finished_at",
    "last_activity",
    "pid",
    "current_turn",
    "session_id",
    "stats",
    "completion",
    "error",
    "node",
    "last_seq",
}
GENERATED_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# An agent whose stdout and stderr are bytes that are not UTF-8, with CR LF line ends.
RAW_BYTES_AGENT = [
    sys.executable,
    "-c",
    "import sys; sys.stdin.read(); "
    "sys.stdout.buffer.write(b'caf\\xe9 \\xff\\xfe raw\\r\\nsecond line\\n'); "
    "sys.stderr.buffer.write(b'warn \\x80\\n')",
]
# Not on any PATH: codyctl leaves a bare program name to the daemon, whose spawn fails.
MISSING_BINARY = ["codyd-test-no-such-agent-binary"]


def codyctl_argv(daemon: Daemon, *args: str) -> list[str]:
    """argv of ``codyctl`` talking to ``daemon``; a leading ``--json`` stays a global option."""
    return [sys.executable, "-m", "codyctl", "--socket", str(daemon.socket), *args]


def codyctl(
    daemon: Daemon, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Run ``codyctl`` to its end and capture its raw output."""
    return subprocess.run(
        codyctl_argv(daemon, *args),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """The stdout of a run that must have succeeded."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout.decode()


def json_lines(stdout: bytes | str) -> list[Any]:
    """Every stdout line parsed as JSON: anything else on stdout fails the test."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    lines = text.splitlines()
    assert lines, "expected JSON on stdout, got nothing"
    return [json.loads(line) for line in lines]


def start_args(workspace: Path, command: list[str], *options: str, max_turns: int = 1) -> list[str]:
    """``start`` arguments for a command agent with a prompt."""
    return [
        "start",
        str(workspace),
        "--prompt",
        "do the work",
        "--max-turns",
        str(max_turns),
        *options,
        "--",
        *command,
    ]


def start_run(
    daemon: Daemon,
    command: list[str],
    *options: str,
    workspace: str = "ws",
    max_turns: int = 1,
) -> str:
    """Start a run through ``codyctl start`` and return the id it printed."""
    stdout = ok(
        codyctl(
            daemon, *start_args(daemon.workspace(workspace), command, *options, max_turns=max_turns)
        )
    )
    return stdout.splitlines()[0]


def finished_run(daemon: Daemon, run_id: str, command: list[str], workspace: str = "ws") -> str:
    """Start a run and wait until the daemon has finished it.

    A missing binary fails the run at its first turn; any other command completes after one.
    """
    max_turns = 5 if command == MISSING_BINARY else 1
    start_run(daemon, command, "--run-id", run_id, workspace=workspace, max_turns=max_turns)
    daemon.wait_state(run_id, "completed", "failed")
    return run_id


def live_sleeper(daemon: Daemon, run_id: str, workspace: str = "ws") -> dict[str, Any]:
    """Start a sleeper run and return its ``turn_started`` event once its agent is alive."""
    start_run(daemon, agent("sleeper"), "--run-id", run_id, workspace=workspace, max_turns=5)
    return daemon.wait_event(run_id, "turn_started")


def seq_of(line: str) -> int:
    """The seq a human ``tail`` line starts with."""
    return int(line.split(" ", 1)[0])


@contextmanager
def background(daemon: Daemon, out: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``codyctl`` process writing its stdout to ``out``; killed if the test leaves it behind."""
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            codyctl_argv(daemon, *args),
            stdout=sink,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stderr: IO[bytes] | None = proc.stderr
        if stderr is not None:
            stderr.close()


def lines_in(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- start ---------------------------------------------------------------------------------------


def test_start_prints_the_run_id_alone_on_the_first_line(daemon: Daemon) -> None:
    """``start`` prints the generated run id alone on line 1, and that run exists."""
    result = codyctl(daemon, *start_args(daemon.workspace(), agent("printer")))
    lines = ok(result).splitlines()
    assert len(lines) == 1
    run_id = lines[0]
    assert GENERATED_RUN_ID.match(run_id)
    assert daemon.call("run.status", {"run_id": run_id})["run_id"] == run_id


def test_start_with_run_id_prints_that_id(daemon: Daemon) -> None:
    """``start --run-id X`` prints X on line 1 and the daemon knows the run as X."""
    result = codyctl(
        daemon, *start_args(daemon.workspace(), agent("printer"), "--run-id", "chosen-1")
    )
    assert ok(result).splitlines() == ["chosen-1"]
    snapshot = daemon.call("run.status", {"run_id": "chosen-1"})
    assert snapshot["workspace"] == os.path.realpath(daemon.workspace())


def test_json_start_prints_exactly_one_snapshot(daemon: Daemon) -> None:
    """``--json start`` prints one JSON object: the queued snapshot."""
    result = codyctl(
        daemon, "--json", *start_args(daemon.workspace(), agent("printer"), "--run-id", "js")
    )
    (snapshot,) = json_lines(ok(result))
    assert snapshot.keys() >= SNAPSHOT_FIELDS
    assert snapshot["run_id"] == "js" and snapshot["state"] == "queued"


def test_start_wait_exits_0_when_the_run_completes(daemon: Daemon) -> None:
    """``start --wait`` prints the id, then the final state, and exits 0 once the run completes."""
    result = codyctl(
        daemon, *start_args(daemon.workspace(), agent("printer"), "--run-id", "sw", "--wait")
    )
    assert ok(result).splitlines() == ["sw", "sw completed"]
    assert daemon.call("run.status", {"run_id": "sw"})["state"] == "completed"


def test_start_wait_exits_4_when_the_run_fails(daemon: Daemon) -> None:
    """``start --wait`` exits 4 when the run fails (an agent binary that does not exist)."""
    result = codyctl(
        daemon,
        *start_args(daemon.workspace(), MISSING_BINARY, "--run-id", "sf", "--wait", max_turns=5),
    )
    assert result.returncode == 4, result.stderr
    assert result.stdout.decode().splitlines() == ["sf", "sf failed"]
    snapshot = daemon.call("run.status", {"run_id": "sf"})
    assert snapshot["state"] == "failed" and snapshot["current_turn"] == 1
    assert snapshot["error"]["retryable"] is False


def test_start_wait_exits_4_when_the_only_turn_cannot_spawn(daemon: Daemon) -> None:
    """A missing agent binary fails the run at once, even when it was the last allowed turn."""
    result = codyctl(
        daemon, *start_args(daemon.workspace(), MISSING_BINARY, "--run-id", "s1", "--wait")
    )
    assert result.returncode == 4
    assert daemon.call("run.status", {"run_id": "s1"})["state"] == "failed"


def test_start_follow_prints_events_until_the_run_ends(daemon: Daemon) -> None:
    """``start --follow`` prints the id, then every event of the run, and exits 0 at its end."""
    result = codyctl(
        daemon,
        *start_args(
            daemon.workspace(), agent("printer"), "--run-id", "sfl", "--follow", max_turns=2
        ),
    )
    lines = ok(result).splitlines()
    assert lines[0] == "sfl"
    events = daemon.events("sfl")
    assert [seq_of(line) for line in lines[1:]] == [e["seq"] for e in events]
    assert events[-1]["type"] == "run_completed"
    assert " run_completed " in lines[-1]


# --- status and list -----------------------------------------------------------------------------


def test_status_human_output_mentions_the_state(daemon: Daemon) -> None:
    """``status RUN`` prints a readable snapshot naming the run and its state."""
    finished_run(daemon, "st", agent("printer"))
    stdout = ok(codyctl(daemon, "status", "st"))
    assert re.search(r"^run:\s+st$", stdout, re.MULTILINE)
    assert re.search(r"^state:\s+completed\b", stdout, re.MULTILINE)


def test_json_status_has_the_snapshot_fields(daemon: Daemon) -> None:
    """``--json status RUN`` prints the snapshot as one JSON object, as the daemon has it."""
    finished_run(daemon, "stj", agent("printer"))
    (snapshot,) = json_lines(ok(codyctl(daemon, "--json", "status", "stj")))
    assert snapshot.keys() >= SNAPSHOT_FIELDS
    assert snapshot == daemon.call("run.status", {"run_id": "stj"})


def test_list_shows_the_runs(daemon: Daemon) -> None:
    """``list`` prints a table with a header and one row per run, with its state."""
    finished_run(daemon, "la", agent("printer"), workspace="a")
    finished_run(daemon, "lb", MISSING_BINARY, workspace="b")
    lines = ok(codyctl(daemon, "list")).splitlines()
    assert lines[0].split()[:4] == ["RUN", "ID", "NAME", "STATE"]
    rows = {line.split()[0]: line.split()[2] for line in lines[1:]}
    assert rows == {"la": "completed", "lb": "failed"}


def test_list_state_filter(daemon: Daemon) -> None:
    """``list --state completed`` shows only completed runs."""
    finished_run(daemon, "done", agent("printer"), workspace="a")
    finished_run(daemon, "broke", MISSING_BINARY, workspace="b")
    rows = ok(codyctl(daemon, "list", "--state", "completed")).splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["done"]
    rows = ok(codyctl(daemon, "list", "--state", "failed", "--state", "completed")).splitlines()
    assert sorted(row.split()[0] for row in rows[1:]) == ["broke", "done"]


def test_json_list_is_one_object_with_the_runs(daemon: Daemon) -> None:
    """``--json list`` prints one JSON object whose runs are the daemon's summaries."""
    finished_run(daemon, "j1", agent("printer"), workspace="a")
    finished_run(daemon, "j2", agent("printer"), workspace="b")
    (page,) = json_lines(ok(codyctl(daemon, "--json", "list")))
    assert [run["run_id"] for run in page["runs"]] == ["j2", "j1"]
    assert all(run["state"] == "completed" for run in page["runs"])


def test_list_label_filter(daemon: Daemon) -> None:
    """``list --label team=x`` shows only the runs carrying that label."""
    start_run(daemon, agent("printer"), "--run-id", "tx", "--label", "team=x", workspace="a")
    start_run(daemon, agent("printer"), "--run-id", "ty", "--label", "team=y", workspace="b")
    start_run(daemon, agent("printer"), "--run-id", "tn", workspace="c")
    rows = ok(codyctl(daemon, "list", "--label", "team=x")).splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["tx"]


# --- control -------------------------------------------------------------------------------------


def test_pause_prints_run_and_state(daemon: Daemon) -> None:
    """``pause RUN --now`` prints ``<run_id> pausing`` and the run ends up paused."""
    live_sleeper(daemon, "cp")
    assert ok(codyctl(daemon, "pause", "cp", "--now", "--reason", "lunch")) == "cp pausing\n"
    snapshot = daemon.wait_state("cp", "paused")
    assert snapshot["pid"] is None
    control = [e["data"] for e in daemon.events("cp") if e["type"] == "control_received"]
    assert control == [{"action": "pause", "source": "rpc", "reason": "lunch"}]


def test_resume_prints_run_and_state(daemon: Daemon) -> None:
    """``resume RUN`` on a paused run prints ``<run_id> running`` and a new turn starts."""
    live_sleeper(daemon, "cr")
    daemon.call("run.pause", {"run_id": "cr", "now": True})
    daemon.wait_state("cr", "paused")
    assert ok(codyctl(daemon, "resume", "cr")) == "cr running\n"
    wait_until(
        lambda: daemon.call("run.status", {"run_id": "cr"})["current_turn"] == 2, what="turn 2"
    )
    assert daemon.call("run.status", {"run_id": "cr"})["state"] == "running"


def test_cancel_prints_run_and_state(daemon: Daemon) -> None:
    """``cancel RUN`` on a live run prints ``<run_id> cancelling`` and the run ends cancelled."""
    live_sleeper(daemon, "cc")
    assert ok(codyctl(daemon, "cancel", "cc", "--reason", "enough")) == "cc cancelling\n"
    daemon.wait_state("cc", "cancelled")
    cancelled = daemon.events("cc")[-1]
    assert cancelled["type"] == "run_cancelled" and cancelled["data"]["reason"] == "enough"


def test_cancel_of_a_finished_run_exits_1_with_invalid_state(daemon: Daemon) -> None:
    """``cancel`` on a completed run exits 1 with ``codyctl: invalid_state: ...`` on stderr."""
    finished_run(daemon, "old", agent("printer"))
    result = codyctl(daemon, "cancel", "old")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().startswith("codyctl: invalid_state: ")


# --- tail ----------------------------------------------------------------------------------------


def test_tail_prints_one_line_per_event(daemon: Daemon) -> None:
    """``tail RUN`` prints each event on exactly one line, even output spanning several lines."""
    finished_run(daemon, "tl", agent("printer", 3))
    events = daemon.events("tl")
    assert any("\n" in e["data"].get("text", "").rstrip("\n") for e in events)
    lines = ok(codyctl(daemon, "tail", "tl")).splitlines()
    assert [seq_of(line) for line in lines] == [e["seq"] for e in events]
    assert [line.split()[3] for line in lines] == [e["type"] for e in events]


def test_tail_follow_exits_0_once_the_run_is_terminal(daemon: Daemon, tmp_path: Path) -> None:
    """``tail RUN -f`` keeps following a live run and exits 0 after printing its last event."""
    live_sleeper(daemon, "tf")
    out = tmp_path / "tail.out"
    with background(daemon, out, "tail", "tf", "-f") as proc:
        wait_until(lambda: any(" turn_started " in line for line in lines_in(out)), what="tail")
        assert proc.poll() is None
        daemon.call("run.cancel", {"run_id": "tf"})
        assert proc.wait(20) == 0
    lines = lines_in(out)
    assert [seq_of(line) for line in lines] == [e["seq"] for e in daemon.events("tf")]
    assert " run_cancelled " in lines[-1]


def test_json_tail_prints_json_lines_only(daemon: Daemon) -> None:
    """``--json tail RUN`` prints one JSON event per line and nothing else."""
    finished_run(daemon, "tj", agent("printer", 3))
    events = json_lines(ok(codyctl(daemon, "--json", "tail", "tj")))
    assert events == daemon.events("tj")


def test_tail_after_starts_after_that_seq(daemon: Daemon) -> None:
    """``tail RUN --after N`` starts with the event of seq N + 1."""
    finished_run(daemon, "ta", agent("printer"))
    last_seq = daemon.call("run.status", {"run_id": "ta"})["last_seq"]
    lines = ok(codyctl(daemon, "tail", "ta", "--after", "3")).splitlines()
    assert [seq_of(line) for line in lines] == list(range(4, last_seq + 1))
    assert ok(codyctl(daemon, "tail", "ta", "--after", str(last_seq))) == ""


def test_tail_type_filter(daemon: Daemon) -> None:
    """``tail RUN --type turn_started`` prints only the turn_started events."""
    start_run(daemon, agent("printer"), "--run-id", "tt", max_turns=2)
    daemon.wait_state("tt", "completed")
    lines = ok(codyctl(daemon, "tail", "tt", "--after", "0", "--type", "turn_started"))
    assert [line.split()[2:4] for line in lines.splitlines()] == [
        ["1", "turn_started"],
        ["2", "turn_started"],
    ]


def test_tail_follow_survives_a_daemon_restart(daemon: Daemon, tmp_path: Path) -> None:
    """``tail -f`` reconnects after a restart and prints every event once, in order, to the end."""
    live_sleeper(daemon, "rs")
    out = tmp_path / "tail.jsonl"
    with background(daemon, out, "--json", "tail", "rs", "-f") as proc:
        wait_until(lambda: any("turn_started" in line for line in lines_in(out)), what="tail")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        daemon.start()
        daemon.wait_event("rs", "run_recovered")
        assert proc.poll() is None
        daemon.call("run.cancel", {"run_id": "rs"})
        assert proc.wait(30) == 0
    events = json_lines(out.read_text())
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert events[-1]["type"] == "run_cancelled"
    assert seqs[-1] == daemon.call("run.status", {"run_id": "rs"})["last_seq"]
    kinds = [e["type"] for e in events]
    assert kinds.index("run_interrupted") < kinds.index("run_recovered")


# --- logs ----------------------------------------------------------------------------------------


def test_logs_writes_the_raw_bytes_of_stdout(daemon: Daemon) -> None:
    """``logs RUN`` writes stdout.log byte for byte, invalid UTF-8 and CR LF included."""
    finished_run(daemon, "lo", RAW_BYTES_AGENT)
    stdout_log = daemon.state_dir / "runs" / "lo" / "turns" / "1" / "stdout.log"
    assert stdout_log.read_bytes() == b"caf\xe9 \xff\xfe raw\r\nsecond line\n"
    result = codyctl(daemon, "logs", "lo")
    assert result.returncode == 0 and result.stdout == stdout_log.read_bytes()


def test_logs_stderr_writes_the_raw_bytes_of_stderr(daemon: Daemon) -> None:
    """``logs RUN --stderr`` writes stderr.log byte for byte."""
    finished_run(daemon, "le", RAW_BYTES_AGENT)
    result = codyctl(daemon, "logs", "le", "--stderr")
    assert result.returncode == 0 and result.stdout == b"warn \x80\n"


def test_json_logs_prints_chunks_with_decoded_data(daemon: Daemon) -> None:
    """``--json logs RUN`` prints one JSON object per chunk, data decoded with replacement."""
    finished_run(daemon, "lj", RAW_BYTES_AGENT)
    chunks = json_lines(ok(codyctl(daemon, "--json", "logs", "lj")))
    assert all(c["turn"] == 1 and c["stream"] == "stdout" for c in chunks)
    assert "".join(c["data"] for c in chunks) == "caf\ufffd \ufffd\ufffd raw\r\nsecond line\n"


# --- wait ----------------------------------------------------------------------------------------


def test_wait_exits_0_when_the_run_completed(daemon: Daemon) -> None:
    """``wait RUN`` on a run that completes exits 0 and prints its final state."""
    start_run(daemon, agent("sleeper", 0.3), "--run-id", "w0")
    assert ok(codyctl(daemon, "wait", "w0")) == "w0 completed\n"


def test_wait_exits_4_when_the_run_is_cancelled(daemon: Daemon, tmp_path: Path) -> None:
    """``wait RUN`` blocks on a live run and exits 4 once it is cancelled."""
    live_sleeper(daemon, "w4")
    out = tmp_path / "wait.out"
    with background(daemon, out, "wait", "w4") as proc:
        wait_until(lambda: daemon.call("daemon.info")["connections"] >= 2, what="wait to connect")
        assert proc.poll() is None
        daemon.call("run.cancel", {"run_id": "w4"})
        assert proc.wait(20) == 4
    assert lines_in(out) == ["w4 cancelled"]


def test_wait_timeout_exits_5_while_the_run_is_live(daemon: Daemon) -> None:
    """``wait RUN --timeout 0.5`` on a live run exits 5, and the run goes on."""
    live_sleeper(daemon, "w5")
    result = codyctl(daemon, "wait", "w5", "--timeout", "0.5")
    assert result.returncode == 5
    assert b"w5" in result.stderr
    assert daemon.call("run.status", {"run_id": "w5"})["state"] == "running"


# --- daemon commands -----------------------------------------------------------------------------


def test_info_shows_the_daemon(daemon: Daemon) -> None:
    """``info`` prints the daemon's pid, version and run counts."""
    assert daemon.proc is not None
    stdout = ok(codyctl(daemon, "info"))
    assert re.search(rf"^pid: {daemon.proc.pid}$", stdout, re.MULTILINE)
    assert re.search(r"^version: \S+$", stdout, re.MULTILINE)
    assert re.search(r"^runs:$", stdout, re.MULTILINE)


def test_ping_prints_the_round_trip(daemon: Daemon) -> None:
    """``ping`` prints the round-trip time."""
    assert re.fullmatch(r"pong in \d+\.\d\d ms\n", ok(codyctl(daemon, "ping")))


def test_json_ping_is_one_object(daemon: Daemon) -> None:
    """``--json ping`` prints the daemon's answer and the round trip as one JSON object."""
    (answer,) = json_lines(ok(codyctl(daemon, "--json", "ping")))
    assert answer["pong"] is True
    assert isinstance(answer["time"], float) and answer["round_trip_ms"] >= 0


def test_shutdown_stops_the_daemon(daemon: Daemon) -> None:
    """``shutdown`` exits 0 and the daemon then exits 0 and removes its socket."""
    ok(codyctl(daemon, "shutdown"))
    assert daemon.wait_exit() == 0
    assert not daemon.socket.exists()


# --- errors --------------------------------------------------------------------------------------


def test_unreachable_daemon_exits_3_naming_the_socket() -> None:
    """With nothing listening, codyctl exits 3 naming the socket path and ``codyd serve``."""
    root = short_tempdir()
    try:
        socket_path = root / "nobody.sock"
        result = subprocess.run(
            [sys.executable, "-m", "codyctl", "--socket", str(socket_path), "status", "x"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        root.rmdir()
    assert result.returncode == 3
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert str(socket_path) in stderr and "codyd serve" in stderr


def test_env_without_equals_is_a_usage_error(daemon: Daemon) -> None:
    """``start --env NOEQUALS`` exits 2 and creates no run."""
    result = codyctl(daemon, *start_args(daemon.workspace(), agent("printer"), "--env", "NOEQUALS"))
    assert result.returncode == 2
    assert b"NOEQUALS" in result.stderr
    assert daemon.call("run.list")["runs"] == []


def test_max_turns_zero_is_a_usage_error_naming_the_flag(daemon: Daemon) -> None:
    """``start --max-turns 0``: the daemon's invalid_params comes back as exit 2 naming the flag."""
    result = codyctl(daemon, *start_args(daemon.workspace(), agent("printer"), max_turns=0))
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert "Error: --max-turns: expected an integer >= 1, got 0" in stderr
    assert "max_turns" not in stderr
    assert daemon.call("run.list")["runs"] == []


def test_json_on_every_command_prints_only_json(daemon: Daemon) -> None:
    """With ``--json``, every command's stdout is JSON lines and nothing else."""
    workspace = str(daemon.workspace())
    commands: list[list[str]] = [
        start_args(daemon.workspace("done"), agent("printer"), "--run-id", "jd", "--wait"),
        start_args(daemon.workspace("f"), agent("printer"), "--run-id", "jf", "--follow"),
        ["start", workspace, "--prompt", "p", "--run-id", "jl", "--", *agent("sleeper")],
        ["status", "jd"],
        ["list"],
        ["tail", "jd"],
        ["logs", "jd"],
        ["wait", "jd"],
        ["pause", "jl", "--now"],
        ["resume", "jl"],
        ["cancel", "jl"],
        ["tail", "jl", "-f"],
        ["info"],
        ["ping"],
        ["shutdown"],
    ]
    for args in commands:
        result = codyctl(daemon, "--json", *args)
        assert result.returncode == 0, (args, result.stderr)
        for value in json_lines(result.stdout):
            assert isinstance(value, dict), (args, value)
    assert daemon.wait_exit() == 0


def test_tail_reports_trimmed_and_continues_from_the_oldest_event(daemon_factory) -> None:
    """When events after the cursor were trimmed, tail warns on stderr and prints from the oldest retained one."""
    daemon = daemon_factory(env={"CODYD_EVENT_RETENTION__MAX_EVENTS_PER_RUN": "5"})
    daemon.start_run(agent("sentinels"), run_id="tr", max_turns=3)
    daemon.wait_state("tr", "completed")
    oldest = wait_until(
        lambda: (first := daemon.events("tr")[0]["seq"]) > 1 and first,
        what="retention to trim the run's events",
    )
    result = codyctl(daemon, "--json", "tail", "tr", "--after", "1")
    assert result.returncode == 0, result.stderr
    assert "trimmed" in result.stderr.decode()
    seqs = [json.loads(line)["seq"] for line in result.stdout.decode().splitlines()]
    assert seqs[0] == oldest and seqs == list(range(oldest, oldest + len(seqs)))


def test_watch_once_shows_the_runs_table(daemon: Daemon) -> None:
    """``watch --once`` prints one table: state, phase, turn, activity, tokens, cost, last event."""
    finished_run(daemon, "w1", agent("sentinels"))
    result = codyctl(daemon, "watch", "--once")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    header = next(line for line in lines if line.startswith("RUN ID"))
    for column in ("STATE", "PHASE", "TURN", "LAST ACTIVITY", "TOKENS", "COST", "LAST EVENT"):
        assert column in header
    row = next(line for line in lines if line.startswith("w1"))
    assert "completed" in row and "run_completed" in row and "$0.2500" in row and "120" in row
    frame = json.loads(codyctl(daemon, "--json", "watch", "--once").stdout)
    assert frame["runs"][0]["run_id"] == "w1"


def test_watch_leaves_cleanly_on_ctrl_c(daemon: Daemon) -> None:
    """``watch`` keeps refreshing until SIGINT, then exits 0 without a traceback or escapes."""
    finished_run(daemon, "w2", agent("printer"))
    proc = subprocess.Popen(
        codyctl_argv(daemon, "watch", "--interval", "0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = b""
    while seen.count(b"RUN ID") < 2:  # two refreshes drawn
        chunk = proc.stdout.read1(4096)
        assert chunk, "watch ended early"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"Traceback" not in err
    # stdout is a pipe: plain tables, never terminal control codes.
    assert b"\x1b" not in seen
