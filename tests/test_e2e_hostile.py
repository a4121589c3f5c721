"""End to end: hostile agent output and secrets never hurt a run or leak."""

from __future__ import annotations

import json

from conftest import Daemon, agent

TOKEN = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"
GITHUB = "ghp_0123456789abcdefghijABCDEFGHIJ012345"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hostile_output_does_not_crash_or_bloat_the_daemon(daemon: Daemon) -> None:
    """Invalid UTF-8, NULs, escapes and a 100 MB line: the run completes, memory stays bounded."""
    assert daemon.proc is not None
    before = rss_kib(daemon.proc.pid)
    daemon.start_run(agent("hostile", 100), run_id="hx", max_turns=1)
    final = daemon.wait_state("hx", "completed", timeout=60)
    after = rss_kib(daemon.proc.pid)
    assert after - before < 64 * 1024, (before, after)
    assert final["stats"]["turns"] == 1
    events = daemon.events("hx")
    warnings = [e["data"]["message"] for e in events if e["type"] == "warning"]
    assert any("longer than max_line_bytes" in w for w in warnings)
    text = "".join(e["data"]["text"] for e in events if e["type"] == "subprocess_output")
    assert "bad utf-8: \ufffd" in text
    log = (daemon.state_dir / "runs/hx/turns/1/stdout.log").read_bytes()
    assert log.startswith(b"bad utf-8: \xff\xfe")  # the log keeps the bytes as they were
    assert b"bytes dropped]" in log[-200:]  # 100 MB is past the 64 MiB default cap
    assert daemon.call("daemon.ping")["pong"]


def test_secrets_stay_out_of_events_and_logs(daemon: Daemon) -> None:
    """Env values and token-shaped strings never reach events (output included) or the daemon log."""
    command = [
        "sh",
        "-c",
        f"cat >/dev/null; echo done --token={TOKEN} {GITHUB}",
        "x",
        "hunter2-secret",
    ]
    daemon.start_run(command, run_id="sec", max_turns=1, env={"API_KEY": "hunter2-secret"})
    daemon.wait_state("sec", "completed")
    events = daemon.events("sec")
    spec = events[0]["data"]["spec"]
    assert spec["env"] == {"API_KEY": "***"}
    started = next(e for e in events if e["type"] == "turn_started")
    lifecycle = json.dumps(events)
    for secret in (TOKEN, GITHUB, "hunter2-secret"):
        assert secret not in lifecycle
        assert secret not in daemon.log()
    assert "***" in " ".join(started["data"]["argv"])
