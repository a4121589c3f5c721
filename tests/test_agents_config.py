"""agents.<name>: usage rules per figure, codex prices, the budget flag, unattended defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codyd.config import AgentConfig, ConfigError, Price, UsageConfig, load_config


def load(tmp_path: Path, text: str, **env: str) -> dict[str, AgentConfig]:
    path = tmp_path / "codyd.toml"
    path.write_text(text)
    config = load_config(path, env={"HOME": str(tmp_path), **env})
    return dict(config.agents)


def refused(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text, **env)
    return str(error.value)


def test_unattended_defaults(tmp_path: Path) -> None:
    """codex writes in its workspace sandbox, claude accepts edits; both can be changed."""
    agents = load(tmp_path, "")
    assert agents["codex"].args == ("--sandbox", "workspace-write")
    assert agents["claude"].args == ("--permission-mode", "acceptEdits")
    assert agents["claude"].budget_flag is True
    assert agents["codex"].usage == UsageConfig()  # rules by release
    agents = load(tmp_path, "[agents.codex]\nargs = []\n[agents.claude]\nbudget_flag = false\n")
    assert agents["codex"].args == () and agents["claude"].budget_flag is False


def test_usage_as_one_rule_or_per_figure(tmp_path: Path) -> None:
    """The old string form sets both figures; the table sets each one given."""
    agents = load(tmp_path, '[agents.codex]\nusage = "session_total"\n')
    assert agents["codex"].usage == UsageConfig("session_total", "session_total")
    agents = load(tmp_path, '[agents.claude]\nusage = {tokens = "max_result"}\n')
    assert agents["claude"].usage == UsageConfig(tokens="max_result", cost=None)
    agents = load(tmp_path, "", CODYD_AGENTS__CODEX__USAGE='{cost = "per_turn"}')
    assert agents["codex"].usage == UsageConfig(tokens=None, cost="per_turn")


def test_prices(tmp_path: Path) -> None:
    """Prices per model in USD per 1M tokens, a "*" entry for any model."""
    agents = load(
        tmp_path,
        '[agents.codex.prices]\n"gpt-5" = {input = 1.25, cached = 0.125, output = 10}\n'
        '"*" = {input = 2, cached = 0, output = 8}\n',
    )
    assert agents["codex"].prices == {
        "gpt-5": Price(1.25, 0.125, 10.0),
        "*": Price(2.0, 0.0, 8.0),
    }


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[agents.codex]\nusage = "total"\n', "agents.codex.usage", "one of 'per_turn'"),
        ("[agents.codex]\nusage = 3\n", "agents.codex.usage", "or a table"),
        (
            '[agents.codex]\nusage = {tokens = "sum"}\n',
            "agents.codex.usage.tokens",
            "one of 'per_turn', 'session_total', 'max_result'",
        ),
        (
            '[agents.claude]\nusage = {money = "per_turn"}\n',
            "agents.claude.usage.money",
            "no such key",
        ),
        (
            '[agents.codex.prices]\n"gpt-5" = {input = -1, cached = 0, output = 1}\n',
            "agents.codex.prices.gpt-5.input",
            "a number >= 0",
        ),
        (
            '[agents.codex.prices]\n"*" = {input = 1, output = 1}\n',
            "agents.codex.prices.*.cached",
            "got nothing",
        ),
        (
            '[agents.codex.prices]\n"*" = {input = 1, cached = 0, output = "cheap"}\n',
            "agents.codex.prices.*.output",
            "'cheap'",
        ),
        ('[agents.codex.prices]\n"*" = 5\n', "agents.codex.prices.*", "a table"),
        ('[agents.codex]\nprices = "free"\n', "agents.codex.prices", "a table of models"),
        (
            '[agents.codex.prices]\n"*" = {input = 1, cached = 0, output = 1, tax = 2}\n',
            "agents.codex.prices.*.tax",
            "no such key",
        ),
        (
            '[agents.claude.prices]\n"*" = {input = 1, cached = 0, output = 1}\n',
            "agents.claude.prices",
            "codex only",
        ),
        ("[agents.claude]\nbudget_flag = 1\n", "agents.claude.budget_flag", "true or false"),
    ],
)
def test_bad_agent_settings_name_their_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    """Every bad usage, price or flag is refused naming its full key and what was expected."""
    message = refused(tmp_path, text)
    assert f"config key '{key}'" in message
    assert expected in message
    assert "(from file " in message


AGENTS = Path(__file__).parent / "agents"


def test_check_config_names_versions_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each agent binary's version is shown; a missing or older one is a warning, not an error."""
    config = tmp_path / "codyd.toml"
    config.write_text(
        f'[agents.codex]\nbin = "{AGENTS / "fake_codex.py"}"\n'
        '[agents.claude]\nbin = "/nonexistent/claude"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODYD_")}
    run = subprocess.run(
        [sys.executable, "-m", "codyd", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "FAKE_AGENT_VERSION": "0.150.2"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "warning: agents.codex:" in run.stderr and "0.150.2, older than 0.171.0" in run.stderr
    assert "warning: agents.claude.bin '/nonexistent/claude' is not found" in run.stderr
    current = subprocess.run(
        [sys.executable, "-m", "codyd", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert f"codyd: agents.codex: {AGENTS / 'fake_codex.py'} 0.171.0" in current.stderr
