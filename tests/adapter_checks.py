"""What every agent adapter must hold to for any input, and the helpers the adapter tests share."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from codyd.agents.base import Adapter, Parsed
from codyd.agents.usage import PER_TURN
from codyd.protocol import pack, unpack_body
from codyd.runs.pipeline import OutputSettings, Redactor, TurnOutput

Shapes = dict[str, dict[str, tuple[type, ...]]]
Event = tuple[str, dict[str, Any]]

DATA = Path(__file__).parent / "data"


@dataclass
class Notes:
    """What the output pipeline may note on its run (a RunRecord's fields of that name)."""

    sentinel_tests: bool = False
    completion_detected: bool = False
    completion_reason: str | None = None
    completion_line: str | None = None
    session_id: str | None = None
    usage_baseline: dict[str, Any] | None = None


def replay(adapter: Adapter, lines: list[str]) -> list[Event]:
    """Every event the run's output pipeline makes of the lines as stdout (each one consumed)."""
    events: list[Event] = []
    settings = OutputSettings(
        agent=adapter.name, completion_pattern=None, usage=PER_TURN, max_line_bytes=1 << 20
    )
    output = TurnOutput(
        adapter,
        settings,
        Notes(),
        Redactor((), lambda type_, data: events.append((type_, data))),
        append_output=lambda data: events.append(("subprocess_output", data)),
        save=lambda: None,
        requested_session=None,
    )
    for text in lines:
        output.feed("stdout", text.encode() + b"\n")
        assert not output.pump.has_pending(), text  # shown as output: the adapter left it
    output.feed("stdout", b"")
    output.test_summaries.flush()
    return events


def transcript(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").splitlines()


def line(value: dict[str, Any]) -> str:
    return json.dumps(value)


def run_fake(fake: Path, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run a fake agent CLI with the prompt on stdin, in an environment free of earlier settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_AGENT_", "CODYD_"))}
    environ.update(env)
    return subprocess.run(
        [str(fake), *argv],
        input="the prompt",
        capture_output=True,
        text=True,
        env=environ,
        timeout=30,
        check=False,
    )


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
    assert result is None or isinstance(result.message, str)
    pack({"error": None if result is None else result.message})
