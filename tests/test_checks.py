"""The shared type checks: strict about bools, huge ints and non-finite numbers."""

from __future__ import annotations

import pytest

from codyd.checks import (
    MAX_INT64,
    clip_printable,
    closest_name,
    finite_float,
    is_absolute_path,
    is_int,
    is_int_in,
    is_number,
    is_number_above,
    is_str_list,
    is_str_map,
)


def test_a_bool_is_never_an_int_or_a_number() -> None:
    """True and False are ints to Python but never to a check."""
    assert not is_int(True) and not is_int_in(False, 0) and not is_number(True)
    assert finite_float(True) is None and not is_number_above(True, 0, inclusive=True)
    assert is_int(0) and is_number(0) and is_number(0.5)
    assert not is_int("3") and not is_number("3") and not is_int(3.0)


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        (1, 1, None, True),
        (0, 1, None, False),
        (5, 1, 5, True),
        (6, 1, 5, False),
        (2**70, 0, None, True),
    ],
)
def test_is_int_in_bounds(value: int, low: int, high: int | None, expected: bool) -> None:
    """Both bounds are inclusive; no upper bound when it is None."""
    assert is_int_in(value, low, high) is expected


def test_finite_float_refuses_what_no_float_holds() -> None:
    """NaN, infinities and ints too large for a float are not finite numbers."""
    assert finite_float(float("nan")) is None and finite_float(float("inf")) is None
    assert finite_float(10**400) is None
    assert finite_float(MAX_INT64) == float(MAX_INT64) and finite_float(2) == 2.0


def test_is_number_above_is_exclusive_unless_inclusive() -> None:
    """The lower bound itself passes only when inclusive."""
    assert not is_number_above(0, 0, inclusive=False) and is_number_above(0, 0, inclusive=True)
    assert is_number_above(0.1, 0, inclusive=False) and not is_number_above(-0.1, 0, inclusive=True)


def test_strings_lists_and_paths() -> None:
    """A list of strings holds strings only; an absolute path is a string starting at /."""
    assert is_str_list(["a", ""]) and is_str_list(()) and not is_str_list(["a", 1])
    assert not is_str_list("ab") and not is_str_list({"a": "b"})
    assert is_str_map({"a": "b"}) and is_str_map({})
    assert not is_str_map({"a": 1}) and not is_str_map({1: "a"}) and not is_str_map([("a", "b")])
    assert is_absolute_path("/srv") and not is_absolute_path("srv") and not is_absolute_path(1)


def test_closest_name_and_clip_printable() -> None:
    """A near miss finds its name; untrusted text is clipped and stays encodable."""
    assert closest_name("heartbeet_s", ["keepalive_s", "heartbeat_s"]) == "heartbeat_s"
    assert closest_name("zzz", ["heartbeat_s"]) is None
    assert clip_printable("abcdef", 3) == "abc…"
    assert clip_printable("a\ud800", 10) == "a\\ud800"
    clip_printable("\udcff" * 5, 2).encode("utf-8")
