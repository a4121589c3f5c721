"""JSON lines and the values in them as the codex and claude adapters read them."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from codyd.agents.jsonline import MAX_INT, count, exit_status, load_object, plain


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "x"}', {"type": "x"}),
        ('  {"a": [1, {"b": null}]}\r', {"a": [1, {"b": None}]}),
        ("[1, 2]", None),
        ('"text"', None),
        ("{not json", None),
        ('[SandboxDebug] {"a": 1}', None),
        ("", None),
        ('{"big": ' + "9" * 5000 + "}", None),
        ("{" + '"a":' * 1 + "[" * 100_000 + "]" * 100_000 + "}", None),
    ],
)
def test_load_object(line: str, expected: dict[str, Any] | None) -> None:
    """Only a line holding one JSON object is structured; anything else, however odd, is text."""
    assert load_object(line) == expected


def test_load_object_replaces_lone_surrogates() -> None:
    """A lone surrogate escape cannot be stored as UTF-8, so it is replaced."""
    value = load_object('{"text": "a\\ud800b", "ok": "\\ud83d\\ude00", "list": ["\\udc00"]}')
    assert value == {"text": "a?b", "ok": "\U0001f600", "list": ["?"]}
    msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), (12.0, 12), (0, 0), (-1, 0), (1.5, 0), (True, 0), ("12", 0), (None, 0), (2**70, 0)],
)
def test_count(value: object, expected: int) -> None:
    """Token counts are non-negative 64-bit integers; anything else counts as zero."""
    assert count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1),
        (-15, -15),
        (None, None),
        (True, None),
        (1.0, None),
        ("1", None),
        (2**64, None),
    ],
)
def test_exit_status(value: object, expected: int | None) -> None:
    """An exit code is an int as reported, or None."""
    assert exit_status(value) == expected


def test_plain_bounds_ints_and_nesting() -> None:
    """Tool inputs keep their shape, but huge ints become text and deep nesting is cut."""
    assert plain({"a": [1, "x", None, True, 1.5]}) == {"a": [1, "x", None, True, 1.5]}
    assert plain({"n": 2**70}) == {"n": str(2**70)}
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    cut = plain(deep)
    msgpack.packb(cut, use_bin_type=True)
    assert json.dumps(cut).count("[") == 24
    assert MAX_INT == 2**63 - 1
