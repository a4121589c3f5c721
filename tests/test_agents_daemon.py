"""End to end through codyd: the agent's release picks its usage rules, a cost budget reaches claude."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codyd.errors import InvalidParams

from conftest import AGENTS, Daemon

DATA = Path(__file__).parent / "data"
SERVED = {"input": 6000, "output": 60, "cached": 600, "total": 6060}


def fake_daemon(daemon_factory: Any, tmp_path: Path, agent: str, **env: str) -> Daemon:
    scripts = ",".join(str(DATA / f"{agent}-usage-t{k}.jsonl") for k in (1, 2, 3))
    return daemon_factory(  # type: ignore[no-any-return]
        env={
            "CODYD_AGENTS__CODEX__BIN": str(AGENTS / "fake_codex.py"),
            "CODYD_AGENTS__CLAUDE__BIN": str(AGENTS / "fake_claude.py"),
            "FAKE_AGENT_ARGV_LOG": str(tmp_path / "argv.jsonl"),
            "FAKE_AGENT_SCRIPT": scripts,
            **env,
        }
    )


def start(daemon: Daemon, agent: str, run_id: str, **spec: Any) -> dict[str, Any]:
    params = {"workspace": str(daemon.workspace()), "prompt": "go", "agent": agent}
    return daemon.call("run.start", {**params, "run_id": run_id, "max_turns": 3, **spec})  # type: ignore[no-any-return]


def argv_log(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]


def test_codex_0171_run_counts_the_served_tokens(daemon_factory: Any, tmp_path: Path) -> None:
    """Three resumed codex turns: the thread's running totals are counted once; the version is shown."""
    daemon = fake_daemon(daemon_factory, tmp_path, "codex")
    start(daemon, "codex", "cx")
    final = daemon.wait_state("cx", "completed")
    assert final["stats"]["tokens"] == SERVED
    started = [e["data"] for e in daemon.events("cx") if e["type"] == "turn_started"]
    assert [data["agent_version"] for data in started] == ["0.171.0"] * 3
    assert argv_log(tmp_path)[0][-3:] == ["--sandbox", "workspace-write", "-"]


def test_claude_2332_run_counts_served_tokens_and_cost_and_passes_the_budget(
    daemon_factory: Any, tmp_path: Path
) -> None:
    """Three resumed claude turns count 6000/600/60 and $0.00744; each is told what budget is left."""
    daemon = fake_daemon(daemon_factory, tmp_path, "claude")
    start(daemon, "claude", "cl", budget={"max_cost_usd": 1})
    final = daemon.wait_state("cl", "completed")
    assert final["stats"]["tokens"] == SERVED
    assert final["stats"]["cost_usd"] == pytest.approx(0.00744)
    budgets = [argv[argv.index("--max-budget-usd") + 1] for argv in argv_log(tmp_path)]
    assert budgets == ["1", "0.99768", "0.9952"]
    assert all("--permission-mode" in argv for argv in argv_log(tmp_path))
    started = [e["data"] for e in daemon.events("cl") if e["type"] == "turn_started"]
    assert started[0]["agent_version"] == "2.1.332"


def test_claude_without_the_budget_flag_is_warned_once(daemon_factory: Any, tmp_path: Path) -> None:
    """A claude whose --help has no --max-budget-usd gets no such flag, and one warning says so."""
    daemon = fake_daemon(
        daemon_factory, tmp_path, "claude", FAKE_AGENT_HELP="Usage: claude [options]"
    )
    start(daemon, "claude", "nb", budget={"max_cost_usd": 1})
    daemon.wait_state("nb", "completed")
    assert not any("--max-budget-usd" in argv for argv in argv_log(tmp_path))
    warnings = [
        e["data"]["message"]
        for e in daemon.events("nb")
        if e["type"] == "warning" and "--max-budget-usd" in e["data"]["message"]
    ]
    assert len(warnings) == 1


def test_codex_cost_budget_without_a_price_is_refused(daemon_factory: Any, tmp_path: Path) -> None:
    """run.start refuses it with invalid_params on budget.max_cost_usd; a price makes it fine."""
    daemon = fake_daemon(daemon_factory, tmp_path, "codex")
    with pytest.raises(InvalidParams) as refused:
        start(daemon, "codex", "np", budget={"max_cost_usd": 1}, model="gpt-5")
    assert refused.value.field == "budget.max_cost_usd"
    assert "gpt-5" in str(refused.value)
    priced = fake_daemon(
        daemon_factory,
        tmp_path,
        "codex",
        CODYD_AGENTS__CODEX__PRICES='{"*" = {input = 1.25, cached = 0.125, output = 10}}',
    )
    start(priced, "codex", "pr", budget={"max_cost_usd": 1})
    final = priced.wait_state("pr", "completed")
    assert final["stats"]["cost_usd"] == pytest.approx((5400 * 1.25 + 600 * 0.125 + 600) / 1e6)
