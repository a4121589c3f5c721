"""``codyctl update`` and ``codyctl say``: their requests from the flags, and what they print.

A flag names one ``run.update`` field (``FLAG_FIELDS``); a value the daemon refuses is
reported under the flag that gave it (``startspec.FIELD_FLAGS``), exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click

NONE_WORDS = frozenset({"none", "null", "off"})


class Cleared:
    """A flag given ``none``: the field is sent as null (no limit)."""

    def __repr__(self) -> str:
        return "none"


CLEARED = Cleared()


class OrNone(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A number, or ``none`` to clear the limit."""

    def __init__(self, inner: click.ParamType[Any]) -> None:
        self.inner = inner
        self.name = f"{inner.name} or none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() in NONE_WORDS:
            return CLEARED
        return self.inner.convert(value, param, ctx)


# The option name (as click passes it) and the run.update field it sets.
FLAG_FIELDS = {
    "max_turns": "max_turns",
    "turn_timeout": "turn_timeout_s",
    "stall_timeout": "stall_timeout_s",
    "sigkill_delay": "sigkill_delay_s",
    "max_failures": "max_consecutive_failures",
    "retry_backoff": "retry_backoff_s",
    "stagnation_turns": "stagnation_turns",
    "session_max_turns": "session_max_turns",
    "name": "name",
}
BUDGET_FLAGS = {
    "budget_usd": "max_cost_usd",
    "budget_tokens": "max_tokens",
    "budget_duration": "max_duration_s",
}


def _wire(value: Any) -> Any:
    return None if value is CLEARED else value


def update_params(
    options: Mapping[str, Any], labels: Mapping[str, str], current_labels: Mapping[str, str]
) -> dict[str, Any]:
    """The ``run.update`` fields the flags give; ``--label`` adds to the run's labels."""
    params = {
        field: _wire(options[name])
        for name, field in FLAG_FIELDS.items()
        if options.get(name) is not None
    }
    budget = {
        key: _wire(options[name])
        for name, key in BUDGET_FLAGS.items()
        if options.get(name) is not None
    }
    if budget:
        params["budget"] = budget
    if labels:
        params["labels"] = {**current_labels, **labels}
    return params


def change_lines(snapshot: Mapping[str, Any], before: Mapping[str, Any]) -> str:
    """What ``codyctl update`` prints: ``<run_id> <state>``, then one line per change."""
    head = f"{snapshot.get('run_id')} {snapshot.get('state')}"
    update = snapshot.get("last_update")
    if not update or update == before.get("last_update"):
        return f"{head}\nnothing changed"
    return "\n".join([head, *(f"  {line}" for line in describe_changes(update))])


def describe_changes(update: Mapping[str, Any]) -> list[str]:
    changes = update.get("changes") or {}
    return [
        f"{field}: {_shown(change.get('from'))} -> {_shown(change.get('to'))}"
        for field, change in sorted(changes.items())
        if isinstance(change, Mapping)
    ]


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items()) or "{}"
    if isinstance(value, str):
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def say_text(text: str) -> str:
    """TEXT, or stdin for ``-``; empty text is a usage error."""
    if text == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("TEXT is -, but nothing is piped on stdin")
        text = sys.stdin.read()
        if text.endswith("\n"):
            text = text[:-1]  # the newline that ends what was piped is no part of the message
    if not text.strip():
        raise click.BadParameter("the message is empty", param_hint="TEXT")
    return text
