"""End to end: what a new user meets first in ``codyctl`` — flags, handles, errors, output.

Every test runs the real ``codyctl`` in a subprocess against a real codyd daemon.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, agent, wait_until

STOP_FILE = ".cody-harness/current-epic/.stop"
REPO_ROOT = Path(__file__).resolve().parent.parent


def codyctl(
    daemon: Daemon | None,
    *args: str,
    cwd: Path | None = None,
    stdin: Any = subprocess.DEVNULL,
    input_text: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """``codyctl ARGS``, finding ``daemon`` through CODYD_SOCKET (so no flag comes first)."""
    # The worktree's codyctl whatever the working directory (an installed one may differ).
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    if daemon is not None:
        full_env["CODYD_SOCKET"] = str(daemon.socket)
    done = subprocess.run(
        [sys.executable, "-m", "codyctl", *args],
        stdin=None if input_text is not None else stdin,
        input=input_text,
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def start(daemon: Daemon, *options: str, command: list[str] | None = None) -> str:
    """``codyctl start`` in the daemon's workspace; returns the printed run id."""
    argv = command if command is not None else agent("printer")
    args = ["start", str(daemon.workspace()), "--prompt", "go", *options, "--", *argv]
    return ok(codyctl(daemon, *args)).splitlines()[0]


def spec_of(daemon: Daemon, run_id: str) -> dict[str, Any]:
    """The normalized spec the daemon stored (its ``run_queued`` event)."""
    return daemon.events(run_id)[0]["data"]["spec"]  # type: ignore[no-any-return]


def error_object(stdout: str) -> dict[str, Any]:
    """The one ``{"error": ...}`` object that ``--json`` prints for an error."""
    (line,) = stdout.splitlines()
    error: dict[str, Any] = json.loads(line)["error"]
    assert set(error) == {"code", "message", "retryable", "data"}
    return error


# --- 3. global flags anywhere, one meaning each; -h and --version ------------------------------


def test_global_flags_work_after_the_command(daemon: Daemon) -> None:
    """``status RUN --json --socket S --timeout 5`` means what it means before the command."""
    run_id = start(daemon, "--run-id", "g1", "--max-turns", "1")
    daemon.wait_state(run_id, "completed")
    env = {"CODYD_SOCKET": "/nonexistent/elsewhere.sock"}
    after = codyctl(
        None, "status", "g1", "--json", "--socket", str(daemon.socket), "--timeout", "5", env=env
    )
    before = codyctl(None, "--json", "--socket", str(daemon.socket), "status", "g1", env=env)
    assert json.loads(ok(after)) == json.loads(ok(before))
    assert json.loads(after.stdout)["state"] == "completed"


def test_short_help_and_version() -> None:
    """``codyctl -h`` is the help, ``codyctl --version`` prints the version, both exit 0."""
    helped = codyctl(None, "-h")
    assert "Usage: codyctl" in ok(helped) and "start" in helped.stdout
    assert "Usage: codyctl start" in ok(codyctl(None, "start", "-h"))
    from codyd import __version__

    assert ok(codyctl(None, "--version")) == f"codyctl {__version__}\n"


def test_wait_for_and_timeout_bound_the_wait_alike(daemon: Daemon) -> None:
    """``wait --for S`` exits 5; ``--timeout S`` before or after ``wait`` does the same."""
    start(daemon, "--run-id", "w1", "--max-turns", "5", command=agent("sleeper"))
    for args in (["wait", "w1", "--for", "0.3"], ["--timeout", "0.3", "wait", "w1"]):
        result = codyctl(daemon, *args)
        assert result.returncode == 5, (args, result.stderr)
        assert "timed out waiting for run w1" in result.stderr
    late = codyctl(daemon, "wait", "w1", "--timeout", "0.3")
    assert late.returncode == 5


def test_json_errors_are_one_object_on_stdout(daemon: Daemon) -> None:
    """With --json, daemon, usage and connection errors print ``{"error": ...}`` and a line."""
    missing = codyctl(daemon, "status", "no-such-run", "--json")
    assert missing.returncode == 1
    error = error_object(missing.stdout)
    assert error["code"] == "not_found" and error["retryable"] is False
    assert missing.stderr.startswith("codyctl: not_found: ")

    usage = codyctl(daemon, "--json", "tail", "--type", "nosuch")
    assert usage.returncode == 2
    assert error_object(usage.stdout)["code"] == "usage"
    assert "nosuch" in usage.stderr

    gone = codyctl(None, "ping", "--json", "--socket", "/nonexistent/codyd.sock")
    assert gone.returncode == 3
    unreachable = error_object(gone.stdout)
    assert unreachable["code"] == "unreachable" and unreachable["retryable"] is True
    assert unreachable["data"] == {"socket": "/nonexistent/codyd.sock"}


# --- 4. run handles ----------------------------------------------------------------------------


def test_an_id_prefix_or_a_name_names_a_run(daemon: Daemon) -> None:
    """A unique 8-character prefix and a unique name work wherever RUN is taken."""
    run_id = start(daemon, "--name", "nightly", "--max-turns", "5", command=agent("sleeper"))
    assert len(run_id) == 32
    assert json.loads(ok(codyctl(daemon, "--json", "status", run_id[:8])))["run_id"] == run_id
    daemon.wait_event(run_id, "turn_started")
    assert ok(codyctl(daemon, "pause", "nightly", "--now")) == f"{run_id} pausing\n"
    daemon.wait_state(run_id, "paused")
    assert ok(codyctl(daemon, "resume", run_id[:10])).startswith(f"{run_id} ")
    assert ok(codyctl(daemon, "cancel", "nightly")) == f"{run_id} cancelling\n"
    waited = codyctl(daemon, "wait", "nightly")
    assert waited.returncode == 4 and waited.stdout == f"{run_id} cancelled\n"
    short = codyctl(daemon, "status", run_id[:7])
    assert short.returncode == 1 and "not_found" in short.stderr


def test_an_ambiguous_handle_is_a_usage_error_listing_the_runs(daemon: Daemon) -> None:
    """Two runs sharing a prefix (or a name): exit 2, naming both candidates."""
    first = start(daemon, "--run-id", "sharedpfx-one", "--name", "twin", "--max-turns", "1")
    daemon.wait_state(first, "completed")  # one run at a time in a workspace
    second = start(daemon, "--run-id", "sharedpfx-two", "--name", "twin", "--max-turns", "1")
    for handle in ("sharedpfx", "twin"):
        result = codyctl(daemon, "status", handle)
        assert result.returncode == 2, result.stderr
        assert first in result.stderr and second in result.stderr
        assert "2 runs" in result.stderr


# --- 5. tail and logs --------------------------------------------------------------------------


def test_tail_type_searches_the_whole_history(daemon: Daemon) -> None:
    """``tail --type run_started`` finds the run's second event under 20+ newer ones."""
    run_id = start(daemon, "--max-turns", "8", command=agent("printer", 1))
    daemon.wait_state(run_id, "completed")
    assert daemon.call("run.status", {"run_id": run_id})["last_seq"] > 2 + 20
    lines = ok(codyctl(daemon, "tail", run_id, "--type", "run_started")).splitlines()
    assert len(lines) == 1 and lines[0].startswith("2 ") and " run_started" in lines[0]
    unknown = codyctl(daemon, "tail", run_id, "--type", "turn_complete")
    assert unknown.returncode == 2
    assert "unknown event type 'turn_complete'" in unknown.stderr
    assert "turn_completed" in unknown.stderr


def test_logs_follow_without_turn_follows_every_turn(daemon: Daemon, tmp_path: Path) -> None:
    """``logs RUN -f`` started in turn 1 prints turns 1 to 3, then exits 0 with the run."""
    gate = tmp_path / "go"
    run_id = start(daemon, "--max-turns", "3", command=agent("ralph", 0.05, 0, gate))
    env = {**os.environ, "CODYD_SOCKET": str(daemon.socket), "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "codyctl", "logs", run_id, "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as follower:
        # Turn 1 waits for the gate: open it once logs -f is connected.
        wait_until(lambda: daemon.call("daemon.info")["connections"] >= 2, what="logs -f")
        gate.touch()
        out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert out == b"turn 1\nturn 2\nturn 3\n"


def test_followers_and_watch_say_when_they_reconnect(daemon: Daemon, tmp_path: Path) -> None:
    """While codyd restarts, ``tail -f`` and ``watch`` say so on stderr and carry on."""
    start(daemon, "--run-id", "rc", "--name", "loop", "--max-turns", "5", command=agent("sleeper"))
    daemon.wait_event("rc", "turn_started")
    env = {**os.environ, "CODYD_SOCKET": str(daemon.socket), "PYTHONPATH": str(REPO_ROOT)}
    procs = {}
    for name, args in (("tail", ["tail", "rc", "-f"]), ("watch", ["watch", "--interval", "0.1"])):
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "codyctl", *args],
            stdout=(tmp_path / f"{name}.out").open("wb"),
            stderr=(tmp_path / f"{name}.err").open("wb"),
            env=env,
        )
    try:
        wait_until(lambda: b"loop" in (tmp_path / "watch.out").read_bytes(), what="a watch frame")
        tailed = tmp_path / "tail.out"
        wait_until(lambda: b" turn_started " in tailed.read_bytes(), what="tail's first events")
        daemon.stop()
        for name in procs:
            err = tmp_path / f"{name}.err"
            wait_until(lambda err=err: b"reconnecting to codyd" in err.read_bytes(), what=name)
        daemon.start()
        for name in procs:
            err = tmp_path / f"{name}.err"
            wait_until(lambda err=err: b"reconnected" in err.read_bytes(), 20, what=name)
        assert all(proc.poll() is None for proc in procs.values())
        frames = (tmp_path / "watch.out").read_bytes()
        assert b"\x1b" not in frames  # a file, not a terminal: no control codes
        assert frames.splitlines()[2].split()[:3] == [b"RUN", b"ID", b"NAME"]
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


# --- 6. errors in the user's terms -------------------------------------------------------------


def test_no_command_after_double_dash_says_so(daemon: Daemon) -> None:
    result = codyctl(daemon, "start", str(daemon.workspace()), "--prompt", "go")
    assert result.returncode == 2
    assert "give the agent's command after `--`" in result.stderr


def test_a_bad_context_file_names_the_flag(daemon: Daemon) -> None:
    """A context file outside the workspace: exit 2, ``--context-file #1``, not ``context_files.0``."""
    ws = str(daemon.workspace())
    result = codyctl(
        daemon, "start", ws, "--prompt", "go", "--context-file", "/etc/hostname", "--", "true"
    )
    assert result.returncode == 2, result.stderr
    assert "--context-file #1: " in result.stderr and "context_files" not in result.stderr
    assert daemon.call("run.list")["runs"] == []


def test_a_relative_command_is_relative_to_the_current_directory(
    daemon: Daemon, tmp_path: Path
) -> None:
    """``-- ./agent.py`` run from the directory holding it works; elsewhere it names both paths."""
    script = tmp_path / "agent.py"
    script.write_text(f"#!{sys.executable}\nimport sys; sys.stdin.read(); print('hi')\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    ws = str(daemon.workspace())
    result = codyctl(
        daemon, "start", ws, "--prompt", "go", "--max-turns", "1", "--", "./agent.py", cwd=tmp_path
    )
    run_id = ok(result).strip()
    assert spec_of(daemon, run_id)["command"] == [str(script)]
    daemon.wait_state(run_id, "completed")
    elsewhere = codyctl(daemon, "start", ws, "--prompt", "go", "--", "./agent.py", cwd="/")
    assert elsewhere.returncode == 2
    assert f"no file at /agent.py or {daemon.workspace()}/agent.py" in elsewhere.stderr


def test_a_missing_shebang_interpreter_is_named(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/nonexistent/bin/bash9\necho hi\n")
    script.chmod(0o755)
    result = codyctl(daemon, "start", str(daemon.workspace()), "--prompt", "go", "--", str(script))
    assert result.returncode == 2
    assert f"interpreter not found: /nonexistent/bin/bash9 (named by the #! line of {script})" in (
        result.stderr
    )
    assert daemon.call("run.list")["runs"] == []


def test_an_empty_prompt_on_stdin_is_refused_unless_asked_for(daemon: Daemon) -> None:
    ws = str(daemon.workspace())
    empty = codyctl(daemon, "start", ws, "--", "true", input_text=b"")
    assert empty.returncode == 2 and "prompt read from stdin is empty" in empty.stderr
    assert daemon.call("run.list")["runs"] == []
    run_id = ok(codyctl(daemon, "start", ws, "--prompt", "", "--", "true")).strip()
    assert spec_of(daemon, run_id)["prompt"] == ""


@pytest.mark.parametrize("flags", [["--stop-file", ""], ["--no-stop-file"]])
def test_the_stop_file_can_be_turned_off(daemon: Daemon, flags: list[str]) -> None:
    run_id = start(daemon, *flags, "--max-turns", "1")
    assert spec_of(daemon, run_id)["completion"]["stop_file"] is None
    daemon.wait_state(run_id, "completed")
    assert "no stop file" in ok(codyctl(daemon, "status", run_id))


def test_the_default_stop_file_is_shown_in_start_help() -> None:
    assert STOP_FILE in ok(codyctl(None, "start", "--help"))


# --- 7. status, info, list, watch for people ---------------------------------------------------


def test_status_shows_what_ends_the_run_and_how_the_last_turn_went(daemon: Daemon) -> None:
    """status: the stop file watched, the last turn, the last tests and the last stderr line."""
    command = [
        sys.executable,
        "-c",
        "import sys; sys.stdin.read(); print('3 failed, 7 passed in 0.5s'); "
        "print('first', file=sys.stderr); print('last words', file=sys.stderr)",
    ]
    run_id = start(daemon, "--max-turns", "2", "--complete-pattern", "NEVER", command=command)
    daemon.wait_state(run_id, "completed")
    stdout = ok(codyctl(daemon, "status", run_id))
    lines = dict(line.split(":", 1) for line in stdout.splitlines())
    assert lines["state"].strip() == "completed (max_turns)"
    assert lines["watches"].strip() == (
        f"stop file {STOP_FILE} (not there yet), pattern 'NEVER', max 2 turns"
    )
    assert lines["last turn"].strip().startswith("2: ok, exit 0, ")
    assert lines["last tests"].strip() == "7 passed, 3 failed, 0 skipped (pytest) in turn 2"
    assert lines["last stderr"].strip() == "last words"
    assert "(idle)" not in stdout and "error" not in lines


def test_info_formats_times_and_durations(daemon: Daemon) -> None:
    stdout = ok(codyctl(daemon, "info"))
    fields = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    assert fields["started"][:2] == "20" and fields["started"][4] == "-"
    assert fields["uptime"].endswith("s") and "." not in fields["started"]


def test_list_and_watch_share_columns_and_show_the_name(daemon: Daemon) -> None:
    run_id = start(daemon, "--name", "nightly", "--max-turns", "1")
    daemon.wait_state(run_id, "completed")
    listed = ok(codyctl(daemon, "list")).splitlines()
    watched = ok(codyctl(daemon, "watch", "--once")).splitlines()
    list_header = listed[0].split("  ")
    watch_header = next(line for line in watched if line.startswith("RUN ID")).split("  ")
    list_header = [cell.strip() for cell in list_header if cell.strip()]
    watch_header = [cell.strip() for cell in watch_header if cell.strip()]
    assert watch_header[: len(list_header)] == list_header
    assert "NAME" in list_header
    list_row = listed[1].split()
    watch_row = next(line for line in watched if line.startswith(run_id)).split()
    assert list_row[:3] == [run_id, "nightly", "completed"]
    assert watch_row[: len(list_row)] == list_row


# --- 8. completion and man page ----------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    script = ok(codyctl(None, "completion", shell))
    assert "_CODYCTL_COMPLETE" in script


def test_completion_completes_commands() -> None:
    env = {"_CODYCTL_COMPLETE": "bash_complete", "COMP_WORDS": "codyctl st", "COMP_CWORD": "1"}
    completions = ok(codyctl(None, env=env)).split()
    assert "plain,start" in completions and "plain,status" in completions


def test_man_page_covers_every_command() -> None:
    page = ok(codyctl(None, "man"))
    assert page.startswith(".TH CODYCTL 1 ")
    for command in ("start", "status", "list", "tail", "logs", "wait", "watch", "completion"):
        assert f".SS {command} " in page or f".SS {command}\n" in page
    assert "\\-\\-max\\-turns" in page and ".SH EXIT STATUS" in page


def test_relative_prompt_and_context_files_are_relative_to_the_current_directory(
    daemon: Daemon,
) -> None:
    """``--prompt-file ws/P.md`` from the workspace's parent means that file, not ws/ws/P.md."""
    ws = daemon.workspace()
    (ws / "P.md").write_text("the prompt")
    (ws / "notes.md").write_text("notes")
    args = ["start", "ws", "--prompt-file", "ws/P.md", "--context-file", "ws/notes.md"]
    result = codyctl(daemon, *args, "--max-turns", "1", "--", *agent("printer"), cwd=daemon.root)
    spec = spec_of(daemon, ok(result).strip())
    assert spec["prompt_file"] == str(ws / "P.md")
    assert spec["context_files"] == [str(ws / "notes.md")]
    missing = codyctl(
        daemon, "start", "ws", "--prompt-file", "ws/nope.md", "--", "true", cwd=daemon.root
    )
    assert missing.returncode == 2
    assert f"no file at {daemon.root}/ws/nope.md or {ws}/ws/nope.md" in missing.stderr


def test_a_name_that_is_no_id_shape_still_names_its_run(daemon: Daemon) -> None:
    """``--name "nightly fix"`` (not a valid id) works as RUN; a miss is not_found, exit 1."""
    run_id = start(daemon, "--name", "nightly fix", "--max-turns", "1")
    assert ok(codyctl(daemon, "wait", "nightly fix")) == f"{run_id} completed\n"
    assert json.loads(ok(codyctl(daemon, "status", "nightly fix", "--json")))["run_id"] == run_id
    assert ok(codyctl(daemon, "status", "nightly fix")).startswith("run:")
    missing = codyctl(daemon, "status", "nightly fox")
    assert missing.returncode == 1
    assert "not_found: no run has the id or name 'nightly fox'" in missing.stderr
