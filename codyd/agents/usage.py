"""How each agent's reports of tokens and cost are counted, per figure (docs/agents.md §5).

A rule says what one report of a figure means:

* ``per_turn``: the report is new usage; each is added.
* ``session_total``: the report is the session's running total; what it grew by since the
  session's previous report is added (the baseline is kept in the store).
* ``max_result``: the report covers the whole process so far; the turn counts its largest
  report (a claude process with a background sub-agent prints two results).

The rule of a figure is the one configured (``agents.<name>.usage``), else the one right for
the installed release: the releases the rules were read from and newer (or a version that
cannot be read) count as below; older releases keep codyd's first rule, ``per_turn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from codyd.agents.version import AgentProbe, older_than_known
from codyd.config import AgentConfig, Price, UsageRule
from codyd.errors import InvalidParams
from codyd.spec import RunSpec


@dataclass(frozen=True, slots=True)
class UsageRules:
    tokens: UsageRule = "per_turn"
    cost: UsageRule = "per_turn"


PER_TURN: Final = UsageRules()
# What the current releases print (docs/agents.md §5.1, recorded 0.171.0 and 2.1.332):
CURRENT_RULES: Final = {
    # turn.completed.usage on resume is the thread's running total; no cost is reported.
    "codex": UsageRules(tokens="session_total", cost="per_turn"),
    # modelUsage and total_cost_usd are both running totals across --resume.
    "claude": UsageRules(tokens="session_total", cost="session_total"),
}


def rules_for(agent: str, config: AgentConfig | None, probe: AgentProbe | None) -> UsageRules:
    """The rules for one turn of ``agent``: configured figure by figure, else by its release."""
    default = CURRENT_RULES.get(agent, PER_TURN)
    if probe is not None and older_than_known(agent, probe):
        default = PER_TURN
    if config is None:
        return default
    return UsageRules(
        tokens=config.usage.tokens or default.tokens,
        cost=config.usage.cost or default.cost,
    )


def price_for(config: AgentConfig | None, model: str | None) -> Price | None:
    """The price of ``model`` (its own entry, else ``"*"``), or None if none applies."""
    if config is None:
        return None
    if model is not None and model in config.prices:
        return config.prices[model]
    return config.prices.get("*")


def estimated_cost(price: Price, input_tokens: int, cached: int, output: int) -> float:
    """((input − cached) × input price + cached × cached price + output × output price) / 1e6."""
    fresh = max(0, input_tokens - cached)
    return (fresh * price.input + cached * price.cached + output * price.output) / 1_000_000


def check_budget_enforceable(spec: RunSpec, config: AgentConfig | None) -> None:
    """A codex run's cost budget needs a price for its model: refuse one that cannot be kept."""
    if spec.agent != "codex" or spec.budget.max_cost_usd is None:
        return
    if price_for(config, spec.model) is None:
        entry = "{input = ..., cached = ..., output = ...}"
        if spec.model:
            model = spec.model
            hint = f'set agents.codex.prices."{spec.model}" = {entry} or a "*" entry'
        else:
            model = "its default model"
            hint = f'set agents.codex.prices."*" = {entry}'
        raise InvalidParams(
            "budget.max_cost_usd",
            f"codex reports no cost: a cost budget needs a price for {model} ({hint})",
        )
