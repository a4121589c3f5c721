"""End to end: a bug met while driving one run fails that run alone (faults injected for real).

The daemon runs with tests/faults first on PYTHONPATH: its sitecustomize wraps
real functions of codyd so that they raise, with no hook in codyd's own code.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PY, Daemon, agent, pid_alive, wait_until

FAULTS = Path(__file__).parent / "faults"
MAGIC = "codyd-test-fault-line"


def faulty_daemon(daemon_factory: Callable[..., Daemon], **env: str) -> Daemon:
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return daemon_factory(env={"PYTHONPATH": path, **env})


def log_records(daemon: Daemon) -> list[dict[str, Any]]:
    records = []
    for line in daemon.log().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def test_parser_fault_fails_that_run_only(daemon_factory: Callable[..., Daemon]) -> None:
    """The adapter's parser raising on one run's line fails that run (internal); another run keeps going."""
    daemon = faulty_daemon(daemon_factory, FAULT_LINE=MAGIC)
    daemon.start_run(agent("ticker", 0.02, 100000), run_id="steady")
    daemon.wait_event("steady", "subprocess_output")
    victim_ws = daemon.workspace("victim")
    script = f"cat >/dev/null; echo {MAGIC}; exec sleep 60"
    daemon.start_run(["sh", "-c", script], run_id="victim", workspace=str(victim_ws))
    pid = daemon.wait_event("victim", "turn_started")["data"]["pid"]
    final = daemon.wait_state("victim", "failed")
    assert final["error"]["code"] == "internal"
    assert final["error"]["retryable"] is True
    assert "injected parser fault" in final["error"]["message"]
    wait_until(lambda: not pid_alive(pid), what="the failed run's agent to be stopped")
    ended = [e for e in daemon.events("victim") if e["type"] == "turn_completed"]
    assert [e["data"]["outcome"] for e in ended] == ["error"]
    # The other run goes on: its turn is still the first, and its output still flows.
    seen = daemon.call("run.status", {"run_id": "steady"})["last_seq"]
    wait_until(
        lambda: daemon.call("run.status", {"run_id": "steady"})["last_seq"] > seen + 3,
        what="the other run to keep advancing",
    )
    steady = daemon.call("run.status", {"run_id": "steady"})
    assert steady["state"] == "running" and steady["current_turn"] == 1
    crashes = [
        r for r in log_records(daemon) if r.get("event") == "run failed on an internal error"
    ]
    assert len(crashes) == 1 and crashes[0]["run_id"] == "victim"
    assert "injected parser fault" in crashes[0]["exception"]
    assert "Traceback" in crashes[0]["exception"]
    daemon.call("run.cancel", {"run_id": "steady"})
    daemon.wait_state("steady", "cancelled")


def test_lease_renewal_fault_is_retried(daemon_factory: Callable[..., Daemon]) -> None:
    """Renewals that raise are logged and retried; the daemon and its run go on."""
    daemon = faulty_daemon(daemon_factory, FAULT_RENEWALS="3", CODYD_LEASE_TTL_S="0.6")
    daemon.start_run(agent("ticker", 0.02, 100000), run_id="leased")
    daemon.wait_event("leased", "subprocess_output")

    def failures() -> list[dict[str, Any]]:
        return [
            r for r in log_records(daemon) if r.get("event") == "lease renewal failed; retrying"
        ]

    wait_until(lambda: len(failures()) == 3, what="three failed renewals")
    assert [r["failures"] for r in failures()] == [1, 2, 3]
    assert daemon.call("daemon.ping") is not None
    assert daemon.call("run.status", {"run_id": "leased"})["state"] == "running"
    daemon.call("run.cancel", {"run_id": "leased"})
    daemon.wait_state("leased", "cancelled")


# Prints a 1 KiB line every 5 ms: a pause of the daemon fills its pipe within a second.
STEADY_PRINTER = [
    PY,
    "-c",
    "import sys, time\n"
    "sys.stdin.read()\n"
    "while True:\n"
    "    sys.stdout.write('x' * 1023 + '\\n'); sys.stdout.flush(); time.sleep(0.005)\n",
]


def test_a_paused_daemon_does_not_stall_a_printing_turn(daemon: Daemon) -> None:
    """SIGSTOP the daemon for 3 s (stall_timeout_s=1) while its agent prints: no stall after SIGCONT."""
    daemon.start_run(STEADY_PRINTER, run_id="stp", stall_timeout_s=1)
    daemon.wait_event("stp", "subprocess_output")
    stdout_log = daemon.state_dir / "runs/stp/turns/1/stdout.log"
    daemon.signal(signal.SIGSTOP)
    try:
        time.sleep(3)  # the pause under test, not a synchronisation
        paused_at = stdout_log.stat().st_size
    finally:
        daemon.signal(signal.SIGCONT)
    # Well past what the pipe held: the readers caught up, the agent printed on.
    wait_until(lambda: stdout_log.stat().st_size > paused_at + 256 * 1024, what="output after")
    events = daemon.events("stp")
    assert not [e for e in events if e["type"] in ("stall_detected", "turn_completed")]
    assert daemon.call("run.status", {"run_id": "stp"})["current_turn"] == 1
    daemon.call("run.cancel", {"run_id": "stp"})
    daemon.wait_state("stp", "cancelled")


def unused_descriptor(pid: int, index: int) -> int:
    """The descriptor number the ``index``-th (from 0) new descriptor of ``pid`` would take."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return next(n for i, n in enumerate(n for n in range(1 << 20) if n not in used) if i == index)


def test_out_of_descriptors_the_run_waits_instead_of_completing(daemon: Daemon) -> None:
    """EMFILE at a turn's start: spawn_failed naming EMFILE, a failed turn, and the run goes on.

    The daemon is left three descriptors: its turns cannot open their files and
    pipes. The run is started over a connection opened before (a new one would be
    refused: codyd keeps its last descriptors from clients). A max_turns=1 run
    must not complete on those; once descriptors are back its turn runs, then
    it completes.
    """
    assert daemon.proc is not None
    pid = daemon.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    with daemon.client() as client:
        client.call("daemon.ping")
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (unused_descriptor(pid, 3), hard))
        try:
            client.call(
                "run.start",
                {
                    "workspace": str(daemon.workspace()),
                    "prompt": "do the work",
                    "command": agent("printer"),
                    "run_id": "fds",
                    "max_turns": 1,
                    "retry_backoff_s": 0.2,
                    "max_consecutive_failures": 50,
                },
            )
        except BaseException:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            raise
    try:

        def failed_turn() -> bool:
            return any(
                r.get("event") == "turn completed" and r.get("outcome") == "spawn_failed"
                for r in log_records(daemon)
            )

        wait_until(failed_turn, what="a turn to fail for want of descriptors")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    final = daemon.wait_state("fds", "completed", "failed")
    ended = [e["data"] for e in daemon.events("fds") if e["type"] == "turn_completed"]
    assert final["state"] == "completed" and final["completion"]["reason"] == "max_turns"
    assert [e["outcome"] for e in ended[:-1]] == ["spawn_failed"] * (len(ended) - 1)
    assert ended[-1]["outcome"] == "ok" and len(ended) >= 2
    assert "EMFILE" in ended[0]["error"]["message"]
    assert final["stats"]["failed_turns"] == len(ended) - 1


def test_a_vanished_workspace_fails_the_run_naming_it(daemon: Daemon) -> None:
    """The workspace deleted under a run: it fails at once, saying so (not "cannot start python")."""
    workspace = daemon.workspace("doomed")
    daemon.start_run(
        agent("failer", 1), run_id="gone", workspace=str(workspace), retry_backoff_s=1,
        max_consecutive_failures=10,
    )  # fmt: skip
    daemon.wait_event("gone", "turn_completed")
    shutil.rmtree(workspace)
    final = daemon.wait_state("gone", "failed")
    assert final["error"]["code"] == "spawn_failed" and final["error"]["retryable"] is False
    assert f"workspace {workspace} is gone" in final["error"]["message"]
    assert "cannot start" not in final["error"]["message"]
    ended = [e["data"] for e in daemon.events("gone") if e["type"] == "turn_completed"]
    assert [e["outcome"] for e in ended] == ["error", "spawn_failed"]
    assert ended[1]["error"]["message"] == final["error"]["message"]


def test_parser_fault_while_cancelling_ends_cancelled(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """A fault met while a run is being cancelled: the run ends cancelled, as asked."""
    daemon = faulty_daemon(daemon_factory, FAULT_LINE=MAGIC)
    script = f"cat >/dev/null; trap 'echo {MAGIC}' TERM; echo ready; while :; do sleep 0.05; done"
    daemon.start_run(["sh", "-c", script], run_id="cx", sigkill_delay_s=1)
    pid = daemon.wait_event("cx", "turn_started")["data"]["pid"]
    daemon.wait_event("cx", "subprocess_output")
    daemon.call("run.cancel", {"run_id": "cx"})
    final = daemon.wait_state("cx", "cancelled", "failed")
    assert final["state"] == "cancelled"
    assert not pid_alive(pid)
    assert any(r.get("event") == "run failed on an internal error" for r in log_records(daemon))
