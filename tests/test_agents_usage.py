"""Tokens and cost exactly as the vendor served them: rules per figure, per release, and prices."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from codyd.agents import adapter_for
from codyd.agents.usage import (
    PER_TURN,
    UsageRules,
    check_budget_enforceable,
    estimated_cost,
    price_for,
    rules_for,
)
from codyd.agents.version import AgentProbe, parse_version
from codyd.config import AgentConfig, Price, UsageConfig
from codyd.errors import InvalidParams
from codyd.model.record import RunRecord
from codyd.runs.pipeline import OutputSettings, Redactor, RunEvents, TurnOutput
from codyd.spec import parse_run_spec

DATA = Path(__file__).parent / "data"
# What the stand-in API served over three turns: request k was 1000·k input tokens (100·k of
# them cached) and 10·k output tokens, one request per turn.
SERVED = {"input": 6000, "cached": 600, "output": 60}
CLAUDE_SERVED_USD = 0.00744  # the cost claude reports for the whole session


def replay_turns(
    tmp_path: Path,
    agent: str,
    files: list[Path],
    rules: UsageRules,
    config: AgentConfig | None = None,
    model: str | None = None,
) -> tuple[RunRecord, list[tuple[str, dict[str, Any]]]]:
    """Play each transcript as one turn of one run, through the run's real output pipeline."""
    params: dict[str, Any] = {"workspace": str(tmp_path), "agent": agent, "prompt": "go"}
    if model is not None:
        params["model"] = model
    record = RunRecord(spec=parse_run_spec(params), node="n", created_at=time.time())
    appended: list[tuple[str, dict[str, Any]]] = []
    sink = RunEvents(record, lambda type_, data: appended.append((type_, data)))
    settings = OutputSettings.of(record.spec, config, 1 << 20)
    for path in files:
        sink.new_turn()
        output = TurnOutput(
            adapter_for(agent),
            settings,
            record,
            Redactor((), sink),
            append_output=lambda data: None,
            save=lambda: None,
            requested_session=record.session_id,
        )
        output.use_usage_rules(rules)
        output.feed("stdout", path.read_bytes())
        output.feed("stdout", b"")
    return record, appended


def counted(record: RunRecord) -> dict[str, int]:
    tokens = record.stats.tokens
    return {"input": tokens.input, "cached": tokens.cached, "output": tokens.output}


CODEX_TURNS = [DATA / f"codex-usage-t{k}.jsonl" for k in (1, 2, 3)]
CLAUDE_TURNS = [DATA / f"claude-usage-t{k}.jsonl" for k in (1, 2, 3)]
CODEX_0171 = AgentProbe(found=True, version="0.171.0")
CLAUDE_2332 = AgentProbe(found=True, version="2.1.332")


def test_codex_0171_three_resumed_turns_count_what_was_served(tmp_path: Path) -> None:
    """codex 0.171.0 reports the thread's running total on resume: session_total counts it exactly."""
    rules = rules_for("codex", AgentConfig("codex"), CODEX_0171)
    assert rules == UsageRules(tokens="session_total", cost="per_turn")
    record, events = replay_turns(tmp_path, "codex", CODEX_TURNS, rules)
    assert counted(record) == SERVED
    usage = [data for type_, data in events if type_ == "token_usage"]
    assert [data["input"] for data in usage] == [1000, 2000, 3000]
    assert record.stats.cost_usd == 0.0  # no prices: codex reports no cost


def test_claude_2332_three_resumed_turns_count_what_was_served(tmp_path: Path) -> None:
    """claude 2.1.332: modelUsage and total_cost_usd are session totals; counted once each."""
    rules = rules_for("claude", AgentConfig("claude"), CLAUDE_2332)
    assert rules == UsageRules(tokens="session_total", cost="session_total")
    record, events = replay_turns(tmp_path, "claude", CLAUDE_TURNS, rules)
    assert counted(record) == SERVED
    assert record.stats.cost_usd == pytest.approx(CLAUDE_SERVED_USD, abs=1e-12)
    costs = [data["usd"] for type_, data in events if type_ == "cost"]
    assert costs == pytest.approx([0.00232, 0.00248, 0.00264])
    assert [repr(usd) for usd in costs] == ["0.00232", "0.00248", "0.00264"]  # no float noise


def test_per_turn_over_running_totals_counts_too_much(tmp_path: Path) -> None:
    """The rule matters: per_turn on the same reports counts each running total again."""
    record, _ = replay_turns(tmp_path, "codex", CODEX_TURNS, PER_TURN)
    assert counted(record) == {"input": 10000, "cached": 1000, "output": 100}
    record, _ = replay_turns(tmp_path, "claude", CLAUDE_TURNS, PER_TURN)
    assert counted(record)["input"] == 10000
    assert record.stats.cost_usd == pytest.approx(0.01456)


def subagent_lines() -> list[str]:
    """One claude process whose background sub-agent makes it print two results."""
    model = {
        "inputTokens": 100,
        "outputTokens": 80,
        "cacheReadInputTokens": 4000,
        "cacheCreationInputTokens": 400,
        "costUSD": 0.0048,
    }

    def result(usage_in: int, text: str, index: int) -> str:
        usage = {
            "input_tokens": usage_in,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 20,
        }
        return json.dumps(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "session_id": "4752f2be-1aee-4b1d-aa0c-4d396a99a7dc",
                "total_cost_usd": 0.0048,
                "usage": usage,
                "modelUsage": {"claude-opus-5-5": model},
                "result": text,
                "result_index": index,
            }
        )

    init = {
        "type": "system",
        "subtype": "init",
        "session_id": "4752f2be-1aee-4b1d-aa0c-4d396a99a7dc",
    }
    return [json.dumps(init), result(30, "call 2", 0), result(40, "call 4", 1)]


@pytest.mark.parametrize("rule", ["session_total", "max_result"])
def test_two_results_of_one_process_count_once(tmp_path: Path, rule: str) -> None:
    """A process with a sub-agent prints two results with the same modelUsage: counted once."""
    task = tmp_path / "task.jsonl"
    task.write_text("\n".join(subagent_lines()) + "\n")
    rules = UsageRules(tokens=rule, cost=rule)  # type: ignore[arg-type]
    record, _ = replay_turns(tmp_path, "claude", [task], rules)
    assert counted(record) == {"input": 4500, "cached": 4000, "output": 80}
    assert record.stats.cost_usd == pytest.approx(0.0048)


def test_a_failed_result_mid_session_does_not_reset_the_total(tmp_path: Path) -> None:
    """An error result reports a total of 0; the next turn still counts only its own growth."""
    failed = tmp_path / "failed.jsonl"
    failed.write_text(
        json.dumps(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "session_id": "7a1c2e3f-4b5d-4e6f-8a9b-0c1d2e3f4a5b",
                "total_cost_usd": 0,
                "modelUsage": {},
                "api_error_status": 401,
                "result": "Failed to authenticate. API Error: 401",
            }
        )
        + "\n"
    )
    rules = rules_for("claude", None, CLAUDE_2332)
    files = [CLAUDE_TURNS[0], failed, CLAUDE_TURNS[1], CLAUDE_TURNS[2]]
    record, _ = replay_turns(tmp_path, "claude", files, rules)
    assert counted(record) == SERVED
    assert record.stats.cost_usd == pytest.approx(CLAUDE_SERVED_USD)


def test_codex_prices_estimate_cost_of_each_increment(tmp_path: Path) -> None:
    """With a price, each counted token increment becomes a cost event marked estimated."""
    price = Price(input=1.25, cached=0.125, output=10.0)
    config = AgentConfig("codex", prices={"gpt-5": price})
    rules = rules_for("codex", config, CODEX_0171)
    record, events = replay_turns(tmp_path, "codex", CODEX_TURNS, rules, config, model="gpt-5")
    costs = [data for type_, data in events if type_ == "cost"]
    assert all(data["estimated"] is True for data in costs)
    expected = ((6000 - 600) * 1.25 + 600 * 0.125 + 60 * 10.0) / 1_000_000
    assert record.stats.cost_usd == pytest.approx(expected)
    assert estimated_cost(price, 1000, 100, 10) == pytest.approx(
        (900 * 1.25 + 100 * 0.125 + 10 * 10) / 1e6
    )


def test_price_lookup_falls_back_to_the_star_entry() -> None:
    """A model's own price first, then "*", else none."""
    star, own = Price(1, 0.1, 2), Price(3, 0.3, 4)
    config = AgentConfig("codex", prices={"*": star, "gpt-5": own})
    assert price_for(config, "gpt-5") == own
    assert price_for(config, "o4") == star
    assert price_for(config, None) == star
    assert price_for(AgentConfig("codex"), "gpt-5") is None


def test_a_codex_cost_budget_needs_a_price(tmp_path: Path) -> None:
    """run.start refuses a codex cost budget that no price can enforce, naming the price."""
    params = {
        "workspace": str(tmp_path),
        "agent": "codex",
        "prompt": "go",
        "model": "gpt-5",
        "budget": {"max_cost_usd": 5},
    }
    spec = parse_run_spec(params)
    with pytest.raises(InvalidParams) as refused:
        check_budget_enforceable(spec, AgentConfig("codex"))
    assert refused.value.field == "budget.max_cost_usd"
    assert 'agents.codex.prices."gpt-5"' in str(refused.value)
    assert 'or a "*" entry' in str(refused.value)
    without_model = parse_run_spec({k: v for k, v in params.items() if k != "model"})
    with pytest.raises(InvalidParams) as refused:
        check_budget_enforceable(without_model, AgentConfig("codex"))
    assert str(refused.value).endswith(
        'needs a price for its default model (set agents.codex.prices."*" = '
        "{input = ..., cached = ..., output = ...})"
    )
    check_budget_enforceable(spec, AgentConfig("codex", prices={"*": Price(1, 0, 1)}))
    claude = parse_run_spec({**params, "agent": "claude"})
    check_budget_enforceable(claude, AgentConfig("claude"))  # claude reports its cost


def test_rules_follow_the_release_and_the_configuration() -> None:
    """Older releases keep per_turn; a configured figure wins; an unreadable version is current."""
    old = AgentProbe(found=True, version="2.0.37")
    assert rules_for("claude", None, old) == PER_TURN
    assert rules_for("claude", None, AgentProbe(found=True)) == rules_for("claude", None, None)
    assert rules_for("codex", AgentConfig("codex"), AgentProbe(True, "0.120.0")) == PER_TURN
    config = AgentConfig("claude", usage=UsageConfig(tokens="max_result"))
    assert rules_for("claude", config, CLAUDE_2332) == UsageRules("max_result", "session_total")
    assert rules_for("command", None, None) == PER_TURN


@pytest.mark.parametrize(
    ("text", "release"),
    [
        ("2.1.332 (Claude Code)", (2, 1, 332)),
        ("codex-cli 0.171.0\n", (0, 171, 0)),
        ("no version here", None),
    ],
)
def test_versions_are_read_from_what_the_cli_prints(
    text: str, release: tuple[int, int, int] | None
) -> None:
    """The first x.y.z of --version is the release."""
    assert parse_version(text) == release


def test_help_says_which_flags_exist() -> None:
    """A flag is supported when --help names it as a whole word."""
    probe = AgentProbe(found=True, help_text="  --max-budget-usd <amount>  Maximum dollars\n")
    assert probe.supports("--max-budget-usd")
    assert not AgentProbe(True, help_text="--max-budget-usd-total").supports("--max-budget-usd")
