"""run.update's validation and the operator messages' prompt section, alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from codyd.errors import InvalidParams
from codyd.runs.operator import MAX_QUEUED, check_text, prompt_section
from codyd.spec import RunSpec, parse_run_spec, parse_update, updatable_fields


def spec(tmp_path: Path, **extra: Any) -> RunSpec:
    params = {"workspace": str(tmp_path), "prompt": "p", "command": ["true"], **extra}
    return parse_run_spec(params)


def test_budget_merges_key_by_key_and_null_clears(tmp_path: Path) -> None:
    """Only the budget keys given change; the others stay; null removes a limit."""
    before = spec(tmp_path, budget={"max_cost_usd": 1, "max_tokens": 500})
    after, changes = parse_update({"budget": {"max_cost_usd": 3, "max_tokens": None}}, before)
    assert after.budget.max_cost_usd == 3.0 and after.budget.max_tokens is None
    assert after.budget.max_duration_s is None
    assert changes == {
        "budget.max_cost_usd": {"from": 1.0, "to": 3.0},
        "budget.max_tokens": {"from": 500, "to": None},
    }
    assert before.budget.max_cost_usd == 1.0  # the old spec is left as it was


def test_equal_values_are_no_change(tmp_path: Path) -> None:
    before = spec(tmp_path, max_turns=4, labels={"a": "b"})
    after, changes = parse_update({"max_turns": 4, "labels": {"a": "b"}, "budget": {}}, before)
    assert changes == {} and after is before


def test_labels_are_replaced_whole(tmp_path: Path) -> None:
    before = spec(tmp_path, labels={"a": "b"})
    after, changes = parse_update({"labels": {"c": "d"}}, before)
    assert after.labels == {"c": "d"}
    assert changes == {"labels": {"from": {"a": "b"}, "to": {"c": "d"}}}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_turns": 1.0}, "max_turns"),
        ({"turn_timeout_s": True}, "turn_timeout_s"),
        ({"budget": {"max_duration_s": -1}}, "budget.max_duration_s"),
        ({"env": {}}, "env"),
        ({"completion": {}}, "completion"),
        ({"run_id": "x"}, "run_id"),
    ],
)
def test_refusals_name_the_field(tmp_path: Path, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParams) as refused:
        parse_update(params, spec(tmp_path))
    assert refused.value.field == field


def test_the_updatable_fields_are_those_the_spec_has() -> None:
    fields = updatable_fields()
    assert {"max_turns", "budget", "turn_timeout_s", "labels", "name"} <= set(fields)
    assert all(name in RunSpec.__dataclass_fields__ for name in fields)


def test_messages_are_appended_each_under_its_heading_in_order() -> None:
    section = prompt_section(["one", "two\nlines"])
    heading = "## Message from the operator"
    assert section == f"\n\n{heading}\n\none\n\n{heading}\n\ntwo\nlines".encode()
    assert prompt_section([]) == b""


def test_message_text_limits() -> None:
    assert check_text("x" * 65536, 0) == "x" * 65536
    for bad in ("", None, b"x", "x" * 65537, "\udc80"):
        with pytest.raises(InvalidParams) as refused:
            check_text(bad, 0)
        assert refused.value.field == "text"
    with pytest.raises(InvalidParams):
        check_text("ok", MAX_QUEUED)
