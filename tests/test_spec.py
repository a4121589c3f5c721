"""Validation of the run spec (the params of ``run.start``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codyd.errors import InvalidParams
from codyd.spec import (
    RUN_ID_RE,
    Budget,
    Completion,
    RunSpec,
    check_inside,
    parse_run_spec,
    validate_defaults,
    validate_run_id,
)

MIB = 1024 * 1024


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "PROMPT.md").write_text("do the work\n")
    (ws / "notes.md").write_text("notes\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret\n")
    return ws


def base(ws: Path, /, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"workspace": str(ws), "prompt": "go", "command": ["agent"]}
    params.update(overrides)
    return params


def refused(params: Any, **kwargs: Any) -> InvalidParams:
    with pytest.raises(InvalidParams) as info:
        parse_run_spec(params, **kwargs)
    return info.value


# (overrides on a valid spec, expected field, words the message must contain)
INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"workspace": "relative/dir"}, "workspace", "absolute path of an existing directory"),
    ({"workspace": "/nonexistent/codyd/ws"}, "workspace", "existing directory"),
    ({"workspace": 3}, "workspace", "path string"),
    ({"workspace": ""}, "workspace", "non-empty path string"),
    ({"workspace": "/tmp/a\0b"}, "workspace", "without NUL bytes"),
    ({"workspace": None}, "workspace", "path string"),
    ({"agent": "gpt"}, "agent", 'one of "codex", "claude", "command"'),
    ({"agent": 1}, "agent", "one of"),
    ({"command": []}, "command", "non-empty list of strings"),
    ({"command": "echo hi"}, "command", "list of strings"),
    ({"command": ["echo", ""]}, "command.1", "non-empty string"),
    ({"command": ["echo", 3]}, "command.1", "non-empty string"),
    ({"command": ["echo", "a\0b"]}, "command.1", "without NUL bytes"),
    ({"command": None}, "command", 'for agent "command"'),
    ({"agent": "codex"}, "command", 'no command for agent "codex"'),
    ({"agent": "claude", "command": ["claude"]}, "command", "no command"),
    ({"prompt": 3}, "prompt", "string of at most 1048576 bytes"),
    ({"prompt": "x" * (MIB + 1)}, "prompt", "at most 1048576 bytes"),
    ({"prompt": "é" * (MIB // 2 + 1)}, "prompt", "at most 1048576 bytes of UTF-8"),
    ({"prompt": None}, "prompt", "exactly one of prompt, prompt_file, got neither"),
    ({"prompt_file": "PROMPT.md"}, "prompt", "exactly one of prompt, prompt_file, got both"),
    ({"prompt": None, "prompt_file": 3}, "prompt_file", "path string"),
    ({"prompt": None, "prompt_file": ""}, "prompt_file", "non-empty path string"),
    ({"prompt": None, "prompt_file": "missing.md"}, "prompt_file", "existing regular file"),
    ({"prompt": None, "prompt_file": "sub"}, "prompt_file", "regular file"),
    ({"prompt": None, "prompt_file": "../PROMPT.md"}, "prompt_file", "inside the workspace"),
    ({"context_files": "notes.md"}, "context_files", "list of strings"),
    ({"context_files": [3]}, "context_files.0", "path string"),
    ({"context_files": ["notes.md", ""]}, "context_files.1", "non-empty path string"),
    ({"context_files": ["../x.md"]}, "context_files.0", "must stay inside the workspace"),
    ({"run_id": ""}, "run_id", "run id matching"),
    ({"run_id": "-abc"}, "run_id", "run id matching"),
    ({"run_id": "a" * 65}, "run_id", "run id matching"),
    ({"run_id": "abc\n"}, "run_id", "run id matching"),
    ({"run_id": "a b"}, "run_id", "run id matching"),
    ({"run_id": 3}, "run_id", "run id matching"),
    ({"run_id": None}, "run_id", "run id matching"),
    ({"name": "x" * 201}, "name", "at most 200 characters"),
    ({"name": 3}, "name", "string of at most 200"),
    ({"model": ""}, "model", "non-empty string"),
    ({"model": 3}, "model", "non-empty string"),
    ({"model": "gpt\0"}, "model", "without NUL bytes"),
    ({"max_turns": "3"}, "max_turns", 'an integer >= 1, got "3" (str)'),
    ({"max_turns": 0}, "max_turns", "an integer >= 1, got 0 (int)"),
    ({"max_turns": True}, "max_turns", "an integer >= 1, got true (bool)"),
    ({"max_turns": 1.0}, "max_turns", "an integer >= 1, got 1.0 (float)"),
    ({"max_turns": 2**64}, "max_turns", "<= 9223372036854775807"),
    ({"turn_timeout_s": 0}, "turn_timeout_s", "a finite number > 0"),
    ({"turn_timeout_s": -1.5}, "turn_timeout_s", "a finite number > 0"),
    ({"turn_timeout_s": "1"}, "turn_timeout_s", "a finite number > 0"),
    ({"turn_timeout_s": True}, "turn_timeout_s", "got true (bool)"),
    ({"turn_timeout_s": float("nan")}, "turn_timeout_s", "finite number"),
    ({"turn_timeout_s": float("inf")}, "turn_timeout_s", "finite number"),
    ({"turn_timeout_s": 10**400}, "turn_timeout_s", "finite number"),
    ({"stall_timeout_s": 0.0}, "stall_timeout_s", "a finite number > 0"),
    ({"sigkill_delay_s": -0.1}, "sigkill_delay_s", "a finite number >= 0"),
    ({"completion": None}, "completion", "a map with keys stop_file, pattern"),
    ({"completion": "DONE"}, "completion", "a map"),
    ({"completion": {"pattern": "(unclosed"}}, "completion.pattern", "missing )"),
    ({"completion": {"pattern": 3}}, "completion.pattern", "regular expression"),
    ({"completion": {"pattern": ""}}, "completion.pattern", "non-empty regular expression"),
    ({"completion": {"stop_file": ""}}, "completion.stop_file", "non-empty path string"),
    ({"completion": {"stop_file": "../stop"}}, "completion.stop_file", "inside the workspace"),
    ({"completion": {"stop_fil": "x"}}, "completion.stop_fil", "unknown field"),
    ({"watch_logs": [None]}, "watch_logs.0", "path string"),
    ({"watch_logs": ["ok.log", "/etc/passwd"]}, "watch_logs.1", "inside the workspace"),
    ({"resume_session": "yes"}, "resume_session", "a boolean"),
    ({"resume_session": 1}, "resume_session", "a boolean"),
    ({"env": ["A=1"]}, "env", "a map of environment variable names"),
    ({"env": {"1BAD": "x"}}, "env.1BAD", "variable name matching"),
    ({"env": {"A-B": "x"}}, "env.A-B", "variable name matching"),
    ({"env": {"A\n": "x"}}, "env.A\n", "variable name matching"),
    ({"env": {"MY_KEY": 3}}, "env.MY_KEY", "a string"),
    ({"env": {"MY_KEY": None}}, "env.MY_KEY", "a string"),
    ({"env": {"MY_KEY": "a\0b"}}, "env.MY_KEY", "without NUL bytes"),
    ({"labels": "team=x"}, "labels", "a map of strings"),
    ({"labels": {"team": 3}}, "labels.team", "a string"),
    ({"labels": {"": "x"}}, "labels.", "non-empty string"),
    ({"max_consecutive_failures": 0}, "max_consecutive_failures", "an integer >= 1"),
    ({"retry_backoff_s": -1}, "retry_backoff_s", "a finite number >= 0"),
    ({"retry_backoff_s": "2"}, "retry_backoff_s", "a finite number >= 0"),
    ({"budget": None}, "budget", "a map with keys max_cost_usd"),
    ({"budget": {"max_tokens": "5"}}, "budget.max_tokens", "an integer >= 1"),
    ({"budget": {"max_tokens": 0}}, "budget.max_tokens", "an integer >= 1"),
    ({"budget": {"max_cost_usd": True}}, "budget.max_cost_usd", "a finite number > 0"),
    ({"budget": {"max_cost_usd": -1}}, "budget.max_cost_usd", "a finite number > 0"),
    ({"budget": {"max_duration_s": 0}}, "budget.max_duration_s", "a finite number > 0"),
    ({"budget": {"limit": 1}}, "budget.limit", "unknown field"),
    ({"prompts": "x"}, "prompts", "unknown field; expected one of"),
]


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    INVALID,
    ids=[f"{case[1]}-{index}" for index, case in enumerate(INVALID)],
)
def test_invalid_values_are_refused_naming_field_and_expectation(
    workspace: Path, overrides: dict[str, Any], field: str, expected: str
) -> None:
    """Every invalid field value is refused with its dotted path and what was expected."""
    error = refused(base(workspace, **overrides))
    assert error.field == field
    assert error.data == {"field": field}
    assert error.message.startswith(f"{field}: ")
    assert "expected" in error.message
    assert expected in error.message


def test_message_says_what_was_expected_and_what_was_given(workspace: Path) -> None:
    """The message of a wrong type reads "expected ..., got <value> (<type>)"."""
    error = refused(base(workspace, max_turns="3"))
    assert error.message == 'max_turns: expected an integer >= 1, got "3" (str)'


def test_params_that_are_not_a_map_are_refused() -> None:
    """A params value that is not a map is refused as a whole."""
    assert refused(["workspace"]).field == "params"


def test_missing_workspace_is_refused() -> None:
    """The workspace is required."""
    assert refused({"prompt": "go", "command": ["agent"]}).field == "workspace"


def test_a_file_is_not_a_workspace(workspace: Path) -> None:
    """The workspace must be a directory, not a file."""
    error = refused(base(workspace, workspace=str(workspace / "notes.md")))
    assert error.field == "workspace"
    assert "existing directory" in error.message


def test_built_in_defaults_are_applied(workspace: Path) -> None:
    """Fields not given take the defaults of the spec table."""
    spec = parse_run_spec(base(workspace))
    assert spec.workspace == os.path.realpath(workspace)
    assert spec.agent == "command"
    assert spec.command == ("agent",)
    assert spec.prompt == "go"
    assert spec.prompt_file is None
    assert spec.context_files == ()
    assert RUN_ID_RE.fullmatch(spec.run_id)
    assert re.fullmatch(r"[0-9a-f]{32}", spec.run_id)
    assert spec.name == ""
    assert spec.model is None
    assert spec.max_turns == 100
    assert spec.turn_timeout_s == 3600.0
    assert spec.stall_timeout_s == 600.0
    assert spec.sigkill_delay_s == 5.0
    assert spec.completion == Completion(".cody-harness/current-epic/.stop", None)
    assert spec.watch_logs == ()
    assert spec.resume_session is True
    assert spec.env == {}
    assert spec.labels == {}
    assert spec.max_consecutive_failures == 3
    assert spec.retry_backoff_s == 2.0
    assert spec.budget == Budget(None, None, None)


def test_ints_are_accepted_and_stored_as_floats(workspace: Path) -> None:
    """Where a float is expected an int is fine and becomes a float."""
    spec = parse_run_spec(base(workspace, turn_timeout_s=10, budget={"max_cost_usd": 2}))
    assert isinstance(spec.turn_timeout_s, float)
    assert spec.turn_timeout_s == 10.0
    assert isinstance(spec.budget.max_cost_usd, float)


def test_nullable_fields_accept_null(workspace: Path) -> None:
    """Nested keys and `model` may be null where their type allows it."""
    params = base(
        workspace,
        model=None,
        completion={"stop_file": None, "pattern": None},
        budget={"max_cost_usd": None, "max_tokens": None, "max_duration_s": None},
    )
    spec = parse_run_spec(params)
    assert spec.completion == Completion(stop_file=None, pattern=None)
    assert spec.budget == Budget()


def test_generated_run_ids_come_from_the_generator(workspace: Path) -> None:
    """Without a run id, the given generator names the run; its output is validated too."""
    assert parse_run_spec(base(workspace), generate_id=lambda: "fixed-id").run_id == "fixed-id"
    error = refused(base(workspace), generate_id=lambda: "not valid")
    assert error.field == "run_id"


def test_config_defaults_override_built_ins_and_params_override_both(workspace: Path) -> None:
    """Config defaults replace built-ins; params replace config defaults key by key."""
    defaults = {
        "agent": "codex",
        "max_turns": 7,
        "turn_timeout_s": 60,
        "completion": {"pattern": "ALL DONE"},
        "budget": {"max_tokens": 1000},
        "env": {"FROM_CONFIG": "1"},
        "labels": {"team": "core"},
    }
    params = {
        "workspace": str(workspace),
        "prompt": "go",
        "max_turns": 9,
        "completion": {"stop_file": "STOP"},
        "env": {"FROM_PARAMS": "2"},
    }
    spec = parse_run_spec(params, defaults=validate_defaults(defaults))
    assert spec.agent == "codex"
    assert spec.command is None
    assert spec.max_turns == 9
    assert spec.turn_timeout_s == 60.0
    assert spec.completion == Completion(stop_file="STOP", pattern="ALL DONE")
    assert spec.budget == Budget(max_tokens=1000)
    assert spec.env == {"FROM_PARAMS": "2"}
    assert spec.labels == {"team": "core"}


def test_validate_defaults_normalizes() -> None:
    """Config defaults come back typed: lists as tuples, ints as floats where floats belong."""
    normalized = validate_defaults(
        {"context_files": ["a.md"], "retry_backoff_s": 1, "completion": {"stop_file": None}}
    )
    assert normalized == {
        "context_files": ("a.md",),
        "retry_backoff_s": 1.0,
        "completion": {"stop_file": None},
    }
    assert isinstance(normalized["retry_backoff_s"], float)


@pytest.mark.parametrize(
    ("defaults", "field", "expected"),
    [
        ({"prompt": "x"}, "prompt", "given per run"),
        ({"workspace": "/tmp"}, "workspace", "given per run"),
        ({"run_id": "a"}, "run_id", "given per run"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"max_turns": "3"}, "max_turns", "an integer >= 1"),
        ({"completion": {"pattern": "("}}, "completion.pattern", "regular expression"),
        ({"budget": {"max_tokens": -1}}, "budget.max_tokens", "an integer >= 1"),
        ({"budget": {"spend": 1}}, "budget.spend", "unknown field"),
        ({"env": {"OK": 1}}, "env.OK", "a string"),
    ],
)
def test_invalid_config_defaults_are_refused(
    defaults: dict[str, Any], field: str, expected: str
) -> None:
    """Bad config defaults are refused with the dotted field inside `defaults`."""
    with pytest.raises(InvalidParams) as info:
        validate_defaults(defaults)
    assert info.value.field == field
    assert expected in info.value.message


def test_prompt_file_inside_workspace_is_accepted(workspace: Path) -> None:
    """A prompt file is kept as given; relative and absolute forms inside both work."""
    relative = parse_run_spec(base(workspace, prompt=None, prompt_file="PROMPT.md"))
    assert relative.prompt_file == "PROMPT.md"
    assert relative.resolve("PROMPT.md") == Path(os.path.realpath(workspace / "PROMPT.md"))
    absolute = str(workspace / "sub" / ".." / "PROMPT.md")
    assert parse_run_spec(base(workspace, prompt=None, prompt_file=absolute)).prompt_file == (
        absolute
    )


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("prompt_file", "prompt_file"),
        ("context_files", "context_files.0"),
        ("watch_logs", "watch_logs.0"),
        ("stop_file", "completion.stop_file"),
    ],
)
@pytest.mark.parametrize(
    "escape", ["../outside/secret.txt", "sub/../../outside/secret.txt", "ABSOLUTE", "LINK"]
)
def test_paths_escaping_the_workspace_are_refused(
    workspace: Path, key: str, field: str, escape: str
) -> None:
    """`..`, absolute paths outside and symlinks pointing outside are all refused."""
    secret = workspace.parent / "outside" / "secret.txt"
    (workspace / "link").symlink_to(secret)
    path = {"ABSOLUTE": str(secret), "LINK": "link"}.get(escape, escape)
    params = base(workspace)
    if key == "prompt_file":
        params.update(prompt=None, prompt_file=path)
    elif key == "stop_file":
        params["completion"] = {"stop_file": path}
    else:
        params[key] = [path]
    error = refused(params)
    assert error.field == field
    assert "must stay inside the workspace" in error.message


def test_symlinked_directory_pointing_outside_is_refused(workspace: Path) -> None:
    """A path through a symlinked directory that leaves the workspace is refused."""
    (workspace / "out").symlink_to(workspace.parent / "outside", target_is_directory=True)
    error = refused(base(workspace, context_files=["out/secret.txt"]))
    assert error.field == "context_files.0"


def test_paths_that_stay_inside_are_accepted(workspace: Path) -> None:
    """Symlinks within the workspace and files that do not exist yet are fine."""
    (workspace / "alias.md").symlink_to(workspace / "notes.md")
    spec = parse_run_spec(
        base(
            workspace,
            context_files=["alias.md", "sub/../notes.md", "not-yet.md"],
            watch_logs=[str(workspace / "logs" / "run.log")],
            completion={"stop_file": "sub/STOP"},
        )
    )
    assert spec.context_files == ("alias.md", "sub/../notes.md", "not-yet.md")
    assert spec.resolve("alias.md") == Path(os.path.realpath(workspace / "notes.md"))


def test_check_inside_returns_the_resolved_path(workspace: Path) -> None:
    """check_inside resolves symlinks and `..` and returns the absolute real path."""
    real = Path(os.path.realpath(workspace))
    assert check_inside(workspace, "sub/../notes.md", "f") == real / "notes.md"
    with pytest.raises(InvalidParams) as info:
        check_inside(workspace, ".", "watch_logs.3")
    assert info.value.field == "watch_logs.3"
    with pytest.raises(InvalidParams):
        check_inside(workspace, "a\0b", "f")


def test_workspace_is_stored_as_realpath(workspace: Path) -> None:
    """A workspace given through a symlink is stored as its real path."""
    link = workspace.parent / "ws-link"
    link.symlink_to(workspace, target_is_directory=True)
    spec = parse_run_spec(base(workspace, workspace=str(link)))
    assert spec.workspace == os.path.realpath(workspace)


def test_workspace_roots(workspace: Path) -> None:
    """With roots set, a workspace must be one of them or inside one (after realpath)."""
    root_link = workspace.parent / "root-link"
    root_link.symlink_to(workspace.parent, target_is_directory=True)
    assert parse_run_spec(base(workspace), workspace_roots=[root_link]).workspace
    assert parse_run_spec(base(workspace), workspace_roots=[workspace]).workspace
    outside = workspace.parent / "outside"
    error = refused(base(workspace), workspace_roots=[outside])
    assert error.field == "workspace"
    assert "inside one of the workspace roots" in error.message
    sibling = workspace.parent / "ws2"
    sibling.mkdir()
    assert refused(base(sibling), workspace_roots=[workspace]).field == "workspace"


def full_spec(workspace: Path) -> RunSpec:
    return parse_run_spec(
        {
            "workspace": str(workspace),
            "agent": "command",
            "command": ["python", "-c", "print(1)"],
            "prompt_file": "PROMPT.md",
            "context_files": ["notes.md"],
            "run_id": "run-1",
            "name": "nightly",
            "model": "m-1",
            "max_turns": 5,
            "turn_timeout_s": 30,
            "stall_timeout_s": 10.5,
            "sigkill_delay_s": 0,
            "completion": {"stop_file": "STOP", "pattern": r"^DONE\b"},
            "watch_logs": ["build.log"],
            "resume_session": False,
            "env": {"TOKEN": "s3cret", "EMPTY": ""},
            "labels": {"team": "core"},
            "max_consecutive_failures": 2,
            "retry_backoff_s": 0.5,
            "budget": {"max_cost_usd": 1.25, "max_tokens": 5000, "max_duration_s": 600},
        }
    )


def test_wire_round_trip(workspace: Path) -> None:
    """from_wire(to_wire(redact_env=False)) rebuilds an equal spec, also through msgpack."""
    spec = full_spec(workspace)
    wire = spec.to_wire(redact_env=False)
    assert RunSpec.from_wire(wire) == spec
    packed = msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False)
    assert RunSpec.from_wire(packed) == spec
    assert json.loads(json.dumps(wire)) == wire
    assert wire["command"] == ["python", "-c", "print(1)"]
    assert wire["completion"] == {"stop_file": "STOP", "pattern": r"^DONE\b"}
    assert wire["budget"] == {
        "max_cost_usd": 1.25,
        "max_tokens": 5000,
        "max_duration_s": 600.0,
        "warn_fraction": 0.8,
    }


def test_wire_form_is_valid_params(workspace: Path) -> None:
    """The unredacted wire form of a spec parses back to the same spec."""
    spec = full_spec(workspace)
    assert parse_run_spec(spec.to_wire(redact_env=False)) == spec
    codex = parse_run_spec(base(workspace, agent="codex", command=None, run_id="r"))
    assert parse_run_spec(codex.to_wire(redact_env=False)) == codex


def test_env_values_are_redacted_on_the_wire(workspace: Path) -> None:
    """to_wire hides env values by default and keeps the names; identity keeps the values."""
    spec = full_spec(workspace)
    assert spec.to_wire()["env"] == {"TOKEN": "***", "EMPTY": "***"}
    assert "s3cret" not in json.dumps(spec.to_wire())
    assert spec.identity()["env"] == {"TOKEN": "s3cret", "EMPTY": ""}


def test_env_keeps_insertion_order(workspace: Path) -> None:
    """Env variables keep the order they were given in."""
    spec = parse_run_spec(base(workspace, env={"Z": "1", "A": "2", "M": "3"}))
    assert list(spec.env) == ["Z", "A", "M"]
    assert list(spec.to_wire()["env"]) == ["Z", "A", "M"]


def test_identity_is_equal_for_the_same_params(workspace: Path) -> None:
    """Parsing the same params with the same run id twice gives equal identities."""
    params = base(workspace, run_id="same", turn_timeout_s=30)
    assert parse_run_spec(params).identity() == parse_run_spec(dict(params)).identity()
    assert (
        parse_run_spec(params).identity()
        == parse_run_spec({**params, "turn_timeout_s": 30.0}).identity()
    )


@pytest.mark.parametrize(
    "change",
    [
        {"max_turns": 3},
        {"prompt": "other"},
        {"env": {"A": "1"}},
        {"completion": {"pattern": "x"}},
        {"budget": {"max_tokens": 9}},
        {"run_id": "other"},
    ],
)
def test_identity_differs_for_a_changed_field(workspace: Path, change: dict[str, Any]) -> None:
    """Changing any field changes the identity."""
    params = base(workspace, run_id="same")
    assert parse_run_spec(params).identity() != parse_run_spec({**params, **change}).identity()


def test_validate_run_id() -> None:
    """Run ids follow the documented pattern and the error names the given field."""
    assert validate_run_id("A1._-z") == "A1._-z"
    assert validate_run_id("a" * 64) == "a" * 64
    with pytest.raises(InvalidParams) as info:
        validate_run_id("a" * 65, field="params.run_id")
    assert info.value.field == "params.run_id"


# --- property: nothing but InvalidParams escapes ---------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", ".", "..", "../x", "/", "/etc", "a\0b", "(", "PROMPT.md", "sub"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "workspace",
        "agent",
        "command",
        "prompt",
        "prompt_file",
        "context_files",
        "run_id",
        "name",
        "model",
        "max_turns",
        "turn_timeout_s",
        "stall_timeout_s",
        "sigkill_delay_s",
        "completion",
        "watch_logs",
        "resume_session",
        "env",
        "labels",
        "max_consecutive_failures",
        "retry_backoff_s",
        "budget",
    ]
)
nested_maps = st.dictionaries(
    st.sampled_from(["stop_file", "pattern", "max_cost_usd", "max_tokens", "max_duration_s"]),
    json_values,
    max_size=3,
)


def test_random_json_params_only_raise_invalid_params(workspace: Path) -> None:
    """Random JSON-like params either parse or raise InvalidParams, nothing else."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        overrides=st.dictionaries(
            field_names | st.text(max_size=8), json_values | nested_maps, max_size=6
        ),
        start_valid=st.booleans(),
    )
    def check(overrides: dict[str, Any], start_valid: bool) -> None:
        params = {**base(workspace), **overrides} if start_valid else overrides
        try:
            spec = parse_run_spec(params)
        except InvalidParams as exc:
            assert isinstance(exc.field, str)
            assert "expected" in exc.message
        else:
            assert RunSpec.from_wire(spec.to_wire(redact_env=False)) == spec

    check()


@settings(max_examples=200, deadline=None)
@given(params=json_values)
def test_random_json_values_as_params_only_raise_invalid_params(params: Any) -> None:
    """Any JSON-like value given as the whole params is refused with InvalidParams."""
    with pytest.raises(InvalidParams) as info:
        parse_run_spec(params)
    assert "expected" in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "short account name"),
        ("a" * 65, "short account name"),
        ("two words", "short account name"),
        (3, "short account name"),
        (None, "short account name"),
    ],
)
def test_account_that_is_not_a_short_name_is_refused(
    workspace: Path, value: Any, expected: str
) -> None:
    """An account must be a short name: the error names the field ``account``."""
    error = refused(base(workspace, account=value))
    assert error.field == "account" and expected in error.message


def test_account_defaults_to_the_agent_name(workspace: Path) -> None:
    """Runs without an account share the agent's; a given one is kept."""
    assert parse_run_spec(base(workspace)).account_name == "command"
    assert parse_run_spec(base(workspace, account="team-a@claude")).account == "team-a@claude"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"session_max_turns": 0}, "session_max_turns"),
        ({"session_max_turns": "3"}, "session_max_turns"),
        ({"budget": {"warn_fraction": 0}}, "budget.warn_fraction"),
        ({"budget": {"warn_fraction": 1.5}}, "budget.warn_fraction"),
        ({"budget": {"warn_fraction": True}}, "budget.warn_fraction"),
    ],
)
def test_session_and_warn_fraction_are_validated(
    workspace: Path, params: dict[str, Any], field: str
) -> None:
    """session_max_turns is an int >= 1 or null; budget.warn_fraction a number in (0, 1]."""
    assert refused(base(workspace, **params)).field == field


def test_session_and_warn_fraction_defaults(workspace: Path) -> None:
    """No rotation by turn count by default; warnings at 80 % of a budget."""
    spec = parse_run_spec(base(workspace))
    assert spec.session_max_turns is None and spec.budget.warn_fraction == 0.8
    spec = parse_run_spec(base(workspace, session_max_turns=2, budget={"warn_fraction": 1}))
    assert spec.session_max_turns == 2 and spec.budget.warn_fraction == 1.0
