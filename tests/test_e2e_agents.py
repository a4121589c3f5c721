"""End to end: runs of agent="codex" and agent="claude" against fake CLIs replaying real formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import AGENTS, Daemon, wait_until

DATA = Path(__file__).parent / "data"
CODEX_THREAD = "0199e2b7-4c1a-7f30-8d52-9b6a3e0c1f47"
CLAUDE_SESSION = "5e0c9a3b-7d21-4f68-b1e4-8a2f6c0d3e97"
CLAUDE_OTHER = "c81e4a2d-6b3f-4d97-a5c0-3e9b7f1d2a64"


def fake_env(tmp_path: Path, *, usage: str | None = None) -> dict[str, str]:
    env = {
        "CODYD_AGENTS__CODEX__BIN": str(AGENTS / "fake_codex.py"),
        "CODYD_AGENTS__CODEX__ARGS": '["--sandbox", "workspace-write"]',
        "CODYD_AGENTS__CLAUDE__BIN": str(AGENTS / "fake_claude.py"),
        "FAKE_AGENT_ARGV_LOG": str(tmp_path / "argv.jsonl"),
        # These transcripts report each turn's own usage (test_agents_usage.py replays
        # running totals as the current releases print them).
        "CODYD_AGENTS__CODEX__USAGE": "per_turn",
        "CODYD_AGENTS__CLAUDE__USAGE": usage or "per_turn",
    }
    return env


def scripts(*names: str) -> str:
    return ",".join(str(DATA / name) for name in names)


def start(daemon: Daemon, agent: str, run_id: str, **spec: Any) -> None:
    params = {
        "workspace": str(daemon.workspace()),
        "prompt": "fix the bug",
        "agent": agent,
        "run_id": run_id,
        **spec,
    }
    daemon.call("run.start", params)


def argv_log(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]


def telemetry(events: list[dict]) -> list[tuple[str, dict]]:
    skip = {"subprocess_output", "run_queued", "run_started"}
    return [(e["type"], e["data"]) for e in events if e["type"] not in skip]


def first_turn(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return events[: [k for k, _ in events].index("turn_completed") + 1]


@pytest.fixture
def fakes(daemon_factory, tmp_path: Path):
    def make(script: str, *, usage: str | None = None, **env: str) -> Daemon:
        return daemon_factory(
            env={**fake_env(tmp_path, usage=usage), "FAKE_AGENT_SCRIPT": script, **env}
        )

    return make


def test_codex_turn_events_and_stats_after_two_turns(fakes, tmp_path: Path) -> None:
    """A codex turn yields the documented event sequence; two turns resume the thread and add up."""
    daemon = fakes(scripts("codex-exec.jsonl", "codex-resume.jsonl"))
    start(daemon, "codex", "cx", max_turns=2, model="gpt-5-codex")
    final = daemon.wait_state("cx", "completed")
    events = daemon.events("cx")
    turn1 = first_turn(telemetry(events))
    kinds = [k for k, _ in turn1]
    assert kinds[0] == "turn_started" and kinds[1] == "session_started"
    assert turn1[1][1] == {"session_id": CODEX_THREAD}
    assert kinds.count("command") == 4
    assert ("file_read", {"path": "src/calc/ops.py"}) in turn1
    assert ("test_run_started", {"command": "python -m pytest -q"}) in turn1
    assert (
        "test_run_completed",
        {"passed": 5, "failed": 1, "skipped": 0, "runner": "pytest"},
    ) in turn1
    assert [d["path"] for k, d in turn1 if k == "file_written"] == [
        "tests/test_errors.py",
        "src/calc/ops.py",
    ]
    assert ("token_usage", {"input": 61842, "output": 1893, "cached": 53760}) in turn1
    assert kinds.index("test_run_started") < kinds.index("test_run_completed")
    assert turn1[-1][1]["outcome"] == "ok"
    argvs = argv_log(tmp_path)
    assert argvs[0][:6] == [
        "exec",
        "--json",
        "--cd",
        final["workspace"],
        "--skip-git-repo-check",
        "-m",
    ]
    assert argvs[0][-3:] == ["--sandbox", "workspace-write", "-"]
    assert argvs[1][-3:] == ["resume", CODEX_THREAD, "-"]
    started = [d for k, d in telemetry(events) if k == "turn_started"]
    assert started[0]["session_id"] is None and started[1]["session_id"] == CODEX_THREAD
    assert final["session_id"] == CODEX_THREAD
    stats = final["stats"]
    assert stats["turns"] == 2
    # turn 1 replays codex-exec.jsonl, turn 2 codex-resume.jsonl (a pytest run: 8 passed)
    assert stats["tokens"] == {
        "input": 61842 + 70311,
        "output": 1893 + 412,
        "cached": 53760 + 61440,
        "total": 61842 + 70311 + 1893 + 412,
    }
    assert stats["cost_usd"] == 0.0  # codex exec --json never reports cost
    assert stats["files"] == {"read": 1, "written": 2, "deleted": 0}
    assert stats["tests"] == {"runs": 2, "passed": 13, "failed": 1}


def test_claude_turn_events_cost_and_resume(fakes, tmp_path: Path) -> None:
    """A claude turn yields tool calls, file and test events, usage from result only, and cost."""
    daemon = fakes(scripts("claude-stream.jsonl"))
    start(daemon, "claude", "cl", max_turns=2)
    final = daemon.wait_state("cl", "completed")
    events = telemetry(daemon.events("cl"))
    turn1 = first_turn(events)
    kinds = [k for k, _ in turn1]
    assert kinds[:2] == ["turn_started", "session_started"]
    assert [d["name"] for k, d in turn1 if k == "tool_call"] == [
        "Read",
        "Edit",
        "Write",
        "Bash",
    ]
    assert ("file_read", {"path": "src/calc/ops.py"}) in turn1
    assert kinds.count("token_usage") == 1 and kinds.count("cost") == 1
    # modelUsage: the main model and a haiku side-call (612 input and 38 output tokens)
    assert ("token_usage", {"input": 107506, "output": 1113, "cached": 96066}) in turn1
    assert (
        "test_run_completed",
        {"passed": 8, "failed": 0, "skipped": 0, "runner": "pytest"},
    ) in turn1
    stats = final["stats"]
    assert stats["tokens"] == {
        "input": 2 * 107506,
        "output": 2 * 1113,
        "cached": 2 * 96066,
        "total": 2 * (107506 + 1113),
    }
    assert stats["cost_usd"] == pytest.approx(2 * 0.0863458)
    assert stats["files"]["read"] == 2 and stats["files"]["written"] == 4
    assert stats["tests"] == {"runs": 2, "passed": 16, "failed": 0}
    argvs = argv_log(tmp_path)
    assert argvs[0][:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert f"--resume={CLAUDE_SESSION}" in argvs[1] and not any(
        a.startswith("--resume") for a in argvs[0]
    )


def test_claude_error_result_fails_the_turn(fakes) -> None:
    """A result with is_error fails the turn even on exit 0; the run fails with its message."""
    daemon = fakes(scripts("claude-stream-error.jsonl"))
    start(daemon, "claude", "ce", max_consecutive_failures=1)
    final = daemon.wait_state("ce", "failed")
    assert final["error"]["code"] == "error"
    assert final["error"]["message"] == "error_max_turns: Reached maximum number of turns (2)"
    assert final["stats"]["cost_usd"] == pytest.approx(0.053628)
    assert final["stats"]["tokens"]["input"] == 42405


def test_codex_failed_turn_and_warnings(fakes) -> None:
    """A usage-limit turn.failed ends the turn rate_limited; a mid-turn Reconnecting is a warning."""
    daemon = fakes(scripts("codex-exec-failed.jsonl"), FAKE_AGENT_EXIT="1")
    start(daemon, "codex", "cf", max_consecutive_failures=1)

    def first_completed() -> dict[str, Any] | None:
        done = [e["data"] for e in daemon.events("cf") if e["type"] == "turn_completed"]
        return done[0] if done else None

    completed = wait_until(first_completed, timeout=20.0, what="the first turn_completed")
    daemon.call("run.cancel", {"run_id": "cf"})
    assert completed["outcome"] == "rate_limited"
    assert "usage limit" in completed["error"]["message"]
    events = first_turn(telemetry(daemon.events("cf")))
    warnings = [d["message"] for k, d in events if k == "warning"]
    assert any("Reconnecting" in w for w in warnings)
    assert not any(k == "token_usage" for k, _ in events)


def test_resume_mismatch_switches_the_session(fakes, tmp_path: Path) -> None:
    """A resumed claude reporting another session id emits resume_mismatch and the new id is used next."""
    daemon = fakes(scripts("claude-stream.jsonl", "claude-resume-mismatch.jsonl"))
    start(daemon, "claude", "mm", max_turns=3)
    final = daemon.wait_state("mm", "completed")
    mismatches = [d for k, d in telemetry(daemon.events("mm")) if k == "resume_mismatch"]
    assert mismatches[0] == {"requested": CLAUDE_SESSION, "observed": CLAUDE_OTHER}
    assert final["session_id"] == CLAUDE_OTHER
    assert f"--resume={CLAUDE_OTHER}" in argv_log(tmp_path)[2]


def test_unknown_session_starts_fresh_next_turn(fakes, tmp_path: Path) -> None:
    """A turn that cannot resume its session fails once; the next turn starts a new session."""
    daemon = fakes(scripts("claude-stream.jsonl"), FAKE_AGENT_KNOWN_SESSIONS="someone-else")
    start(daemon, "claude", "us", max_turns=3, retry_backoff_s=0)
    daemon.wait_state("us", "completed")
    argvs = argv_log(tmp_path)
    assert f"--resume={CLAUDE_SESSION}" in argvs[1]
    assert not any(a.startswith("--resume") for a in argvs[2])
    events = telemetry(daemon.events("us"))
    outcomes = [d["outcome"] for k, d in events if k == "turn_completed"]
    assert outcomes == ["ok", "error", "ok"]
    assert any("could not resume" in d["message"] for k, d in events if k == "warning")


def test_codex_unknown_session_starts_fresh_next_turn(fakes, tmp_path: Path) -> None:
    """codex's error for an unknown thread is recognised the same way."""
    daemon = fakes(scripts("codex-exec.jsonl"), FAKE_AGENT_KNOWN_SESSIONS="someone-else")
    start(daemon, "codex", "cu", max_turns=3, retry_backoff_s=0)
    daemon.wait_state("cu", "completed")
    argvs = argv_log(tmp_path)
    assert "resume" in argvs[1] and "resume" not in argvs[2]


def test_pattern_matches_assistant_text(fakes) -> None:
    """completion.pattern is matched against the agent's message text for codex."""
    daemon = fakes(scripts("codex-exec.jsonl"))
    start(daemon, "codex", "cp", max_turns=5, completion={"pattern": r"5 passed, 1 failed"})
    final = daemon.wait_state("cp", "completed")
    assert final["completion"]["reason"] == "pattern" and final["current_turn"] == 1
    assert "5 passed, 1 failed" in final["completion"]["line"]


def test_session_total_usage_counts_growth_only(fakes) -> None:
    """With usage = session_total the same session's repeated totals are counted once."""
    daemon = fakes(scripts("claude-stream.jsonl"), usage="session_total")
    start(daemon, "claude", "st", max_turns=2)
    final = daemon.wait_state("st", "completed")
    assert final["stats"]["tokens"]["input"] == 107506
    assert final["stats"]["cost_usd"] == pytest.approx(0.0863458)
