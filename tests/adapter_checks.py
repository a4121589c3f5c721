"""What every agent adapter must hold to for any input, shared by the adapter tests."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from codyd.agents.base import Adapter, Parsed
from codyd.protocol import pack, unpack_body

Shapes = dict[str, dict[str, tuple[type, ...]]]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def check_parsed(parsed: Parsed, text: str, shapes: Shapes) -> None:
    """Events have their documented fields and types, encode as msgpack; JSON objects are consumed."""
    for type_, data in parsed.events:
        shape = shapes[type_]
        assert set(data) == set(shape), (type_, data)
        for key, types in shape.items():
            value = data[key]
            assert isinstance(value, types) and not isinstance(value, bool), (type_, key, data)
    unpack_body(
        pack(
            {"events": parsed.events, "session_id": parsed.session_id, "text": parsed.message_text}
        )[4:]
    )
    try:
        is_object = isinstance(json.loads(text), dict)
    except ValueError:
        is_object = False
    assert parsed.consumed == is_object


def check_any_lines(
    adapter: Adapter, texts: list[str], exit_code: int | None, shapes: Shapes
) -> None:
    """Any stdout/stderr lines give well-formed results and a clean finish."""
    for text in texts:
        check_parsed(adapter.parse_stdout(text), text, shapes)
        stderr = adapter.parse_stderr(text)
        assert not stderr.consumed and not stderr.events
    result = adapter.finish(exit_code)
    assert result is None or isinstance(result, str)
    pack({"error": result})
