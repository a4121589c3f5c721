"""The type checks of untrusted values, shared by the config, the run spec and RPC params.

Each is a predicate (or a plain conversion) that knows nothing of where the value came
from. The caller turns a refusal into its own error with its own wording: a config key
into :class:`~codyd.config.ConfigError`, a run-spec or RPC field into
:class:`~codyd.errors.InvalidParams` naming ``data.field``. Types are strict: a bool is
never a number, ``"3"`` is never an int. Light (stdlib only): codyctl may import it.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable
from typing import Any, TypeGuard

MAX_INT64 = 2**63 - 1  # what the store and msgpack can hold


def is_int(value: Any) -> TypeGuard[int]:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_int_in(value: Any, low: int, high: int | None = None) -> TypeGuard[int]:
    """An int (not a bool) from ``low`` up to ``high`` (no upper bound when None)."""
    return is_int(value) and value >= low and (high is None or value <= high)


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float when it is a number, else None (NaN, ±inf, huge ints)."""
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def is_number_above(value: Any, low: float, *, inclusive: bool) -> bool:
    """A finite number > ``low`` (or >= it when ``inclusive``)."""
    number = finite_float(value)
    if number is None:
        return False
    return number >= low if inclusive else number > low


def is_str_list(value: Any) -> bool:
    """A list (or tuple) whose items are all strings."""
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)


def is_str_map(value: Any) -> bool:
    """A map (as the wire decodes one) from strings to strings."""
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )


def is_absolute_path(value: Any) -> bool:
    """A string that is an absolute path."""
    return isinstance(value, str) and os.path.isabs(value)


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` most likely misspells, for a "did you mean" hint."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return close[0] if close else None


def clip_printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (marked ``…``), encodable whatever it holds.

    Lone surrogates (from JSON escapes or file names) become backslash escapes, so an
    error message that quotes untrusted text can always be encoded.
    """
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")
