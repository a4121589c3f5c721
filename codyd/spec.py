"""The run spec: the validated params of ``run.start``.

:func:`parse_run_spec` turns untrusted wire params into a :class:`RunSpec` or
raises :class:`InvalidParams` naming the dotted field and what was expected.
Types are strict (``"3"`` is not an int, a bool is never a number), unknown
fields are refused, and every path the daemon will touch must resolve inside
the workspace. Precedence of values: built-in defaults, then the config's
``defaults.*``, then the params.
"""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codyd.checks import MAX_INT64, clip_printable, finite_float, is_absolute_path, is_int_in
from codyd.errors import InvalidParams
from codyd.protocol import AGENTS
from codyd.redact import redact_argv

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PROMPT_BYTES = 1024 * 1024
MAX_NAME_CHARS = 200
REDACTED = "***"
DEFAULT_STOP_FILE = ".cody-harness/current-epic/.stop"
# The account a run's limits are counted against (docs/protocol.md): a short name.
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$")
DEFAULT_WARN_FRACTION = 0.8

Validator = Callable[[Any, str], Any]


@dataclass(frozen=True, slots=True)
class Completion:
    """When a run is complete besides ``max_turns``."""

    stop_file: str | None = DEFAULT_STOP_FILE
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits whose exhaustion fails the run with ``budget_exceeded``."""

    max_cost_usd: float | None = None
    max_tokens: int | None = None
    max_duration_s: float | None = None
    warn_fraction: float = DEFAULT_WARN_FRACTION  # budget_warning once use reaches this share


@dataclass(frozen=True, slots=True)
class RunSpec:
    """A validated run spec; paths other than ``workspace`` are kept as given."""

    workspace: str
    agent: str
    command: tuple[str, ...] | None
    prompt: str | None
    prompt_file: str | None
    context_files: tuple[str, ...]
    run_id: str
    name: str
    model: str | None
    max_turns: int
    turn_timeout_s: float
    stall_timeout_s: float
    sigkill_delay_s: float
    completion: Completion
    watch_logs: tuple[str, ...]
    resume_session: bool
    env: Mapping[str, str]
    labels: Mapping[str, str]
    max_consecutive_failures: int
    retry_backoff_s: float
    budget: Budget
    # Consecutive ok turns without progress before the run pauses; None: the agent's default.
    stagnation_turns: int | None = None
    # Long runs (docs/protocol.md "Accounts and sessions"): the limits' account, "" for the
    # agent's name (see account_name), and the turns one agent session may take.
    account: str = ""
    session_max_turns: int | None = None

    @property
    def account_name(self) -> str:
        return self.account or self.agent

    def to_wire(self, redact_env: bool = True) -> dict[str, Any]:
        """Return a plain msgpack/JSON-able map; env values become ``***`` when redacting."""
        return {
            "workspace": self.workspace,
            "agent": self.agent,
            "command": None
            if self.command is None
            else redact_argv(self.command, self.env.values())
            if redact_env
            else list(self.command),
            "prompt": self.prompt,
            "prompt_file": self.prompt_file,
            "context_files": list(self.context_files),
            "run_id": self.run_id,
            "name": self.name,
            "model": self.model,
            "max_turns": self.max_turns,
            "turn_timeout_s": self.turn_timeout_s,
            "stall_timeout_s": self.stall_timeout_s,
            "sigkill_delay_s": self.sigkill_delay_s,
            "completion": {
                "stop_file": self.completion.stop_file,
                "pattern": self.completion.pattern,
            },
            "watch_logs": list(self.watch_logs),
            "resume_session": self.resume_session,
            "env": {key: REDACTED if redact_env else value for key, value in self.env.items()},
            "labels": dict(self.labels),
            "max_consecutive_failures": self.max_consecutive_failures,
            "retry_backoff_s": self.retry_backoff_s,
            "budget": {
                "max_cost_usd": self.budget.max_cost_usd,
                "max_tokens": self.budget.max_tokens,
                "max_duration_s": self.budget.max_duration_s,
                "warn_fraction": self.budget.warn_fraction,
            },
            "stagnation_turns": self.stagnation_turns,
            "account": self.account_name,
            "session_max_turns": self.session_max_turns,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RunSpec:
        """Rebuild a spec from ``to_wire(redact_env=False)`` output; the input is trusted."""
        command = data["command"]
        return cls(
            workspace=data["workspace"],
            agent=data["agent"],
            command=None if command is None else tuple(command),
            prompt=data["prompt"],
            prompt_file=data["prompt_file"],
            context_files=tuple(data["context_files"]),
            run_id=data["run_id"],
            name=data["name"],
            model=data["model"],
            max_turns=data["max_turns"],
            turn_timeout_s=float(data["turn_timeout_s"]),
            stall_timeout_s=float(data["stall_timeout_s"]),
            sigkill_delay_s=float(data["sigkill_delay_s"]),
            completion=Completion(**data["completion"]),
            watch_logs=tuple(data["watch_logs"]),
            resume_session=data["resume_session"],
            env=dict(data["env"]),
            labels=dict(data["labels"]),
            max_consecutive_failures=data["max_consecutive_failures"],
            retry_backoff_s=float(data["retry_backoff_s"]),
            budget=_budget_from_wire(data["budget"]),
            stagnation_turns=data.get("stagnation_turns"),  # absent in runs stored before it
            account=data.get("account") or data["agent"],
            session_max_turns=data.get("session_max_turns"),
        )

    def identity(self) -> dict[str, Any]:
        """Return what must be equal for a re-start with the same run id to be idempotent."""
        return self.to_wire(redact_env=False)

    def resolve(self, relative: str) -> Path:
        """Return the absolute, symlink-free path of a workspace-relative path checked at start."""
        return Path(os.path.realpath(os.path.join(self.workspace, relative)))


def _budget_from_wire(data: Mapping[str, Any]) -> Budget:
    cost, duration = data["max_cost_usd"], data["max_duration_s"]
    return Budget(
        max_cost_usd=None if cost is None else float(cost),
        max_tokens=data["max_tokens"],
        max_duration_s=None if duration is None else float(duration),
        warn_fraction=float(data.get("warn_fraction", DEFAULT_WARN_FRACTION)),
    )


# --- describing what was given ------------------------------------------------------------


_CLIP = 80


def describe_given(value: object) -> str:
    """Describe a given value for an error message: ``"3" (str)``, ``true (bool)``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (bool)"
    if isinstance(value, str):
        quoted = json.dumps(value[:_CLIP], ensure_ascii=False)
        return f"{clip_printable(quoted, _CLIP)}{'…' if len(value) > _CLIP else ''} (str)"
    if isinstance(value, int):
        if value.bit_length() > 64:
            return f"an integer of {value.bit_length()} bits"
        return f"{value} (int)"
    if isinstance(value, float):
        return f"{value!r} (float)"
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    return f"a {type(value).__name__}"


def _refuse(field: str, expected: str, value: object) -> InvalidParams:
    return InvalidParams(field, f"expected {expected}, got {describe_given(value)}")


# --- scalar validators ----------------------------------------------------------------------


def _integer(minimum: int) -> Validator:
    expected = f"an integer >= {minimum}"

    def check(value: Any, field: str) -> int:
        if not is_int_in(value, minimum):
            raise _refuse(field, expected, value)
        if value > MAX_INT64:
            raise _refuse(field, f"{expected} and <= {MAX_INT64}", value)
        return value

    return check


def _number(minimum: float, *, exclusive: bool) -> Validator:
    expected = f"a finite number {'>' if exclusive else '>='} {minimum:g}"

    def check(value: Any, field: str) -> float:
        number = finite_float(value)
        if number is None or (number <= minimum if exclusive else number < minimum):
            raise _refuse(field, expected, value)
        return number

    return check


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _refuse(field, "a boolean (true or false)", value)
    return value


def _choice(options: Sequence[str]) -> Validator:
    expected = "one of " + ", ".join(json.dumps(option) for option in options)

    def check(value: Any, field: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise _refuse(field, expected, value)
        return value

    return check


def _text(value: Any, field: str, expected: str = "a string") -> str:
    if not isinstance(value, str):
        raise _refuse(field, expected, value)
    return value


def _os_text(
    value: Any, field: str, expected: str = "a non-empty string", *, allow_empty: bool = False
) -> str:
    """A string that reaches argv, the environment or the file system."""
    text = _text(value, field, expected)
    if not text and not allow_empty:
        raise _refuse(field, expected, value)
    if "\0" in text:
        raise _refuse(field, f"{expected} without NUL bytes", value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(field, f"{expected} of valid UTF-8 text", value) from None
    return text


def _path_text(value: Any, field: str) -> str:
    return _os_text(value, field, "a non-empty path string")


def _optional(check: Validator) -> Validator:
    def check_optional(value: Any, field: str) -> Any:
        return None if value is None else check(value, field)

    return check_optional


def _pattern(value: Any, field: str) -> str:
    expected = "a non-empty regular expression (Python re syntax) or null"
    text = _text(value, field, expected)
    if not text:
        raise _refuse(field, expected, value)
    try:
        re.compile(text)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise InvalidParams(
            field, f"expected {expected}, got {describe_given(value)}: {exc}"
        ) from None
    return text


def _name(value: Any, field: str) -> str:
    expected = f"a string of at most {MAX_NAME_CHARS} characters"
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise _refuse(field, expected, value)
    return value


def _prompt(value: Any, field: str) -> str:
    expected = f"a string of at most {MAX_PROMPT_BYTES} bytes of UTF-8 text"
    text = _text(value, field, expected)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _refuse(field, expected, value) from None
    if size > MAX_PROMPT_BYTES:
        raise InvalidParams(field, f"expected {expected}, got {size} bytes")
    return text


def _account(value: Any, field: str) -> str:
    expected = f"a short account name matching {ACCOUNT_RE.pattern}"
    if not isinstance(value, str) or not ACCOUNT_RE.fullmatch(value):
        raise _refuse(field, expected, value)
    return value


def _fraction(value: Any, field: str) -> float:
    number = finite_float(value)
    if number is None or not 0 < number <= 1:
        raise _refuse(field, "a number in (0, 1]", value)
    return number


def validate_run_id(value: object, field: str = "run_id") -> str:
    """Return ``value`` if it is a valid run id, else raise :class:`InvalidParams`."""
    if not isinstance(value, str) or not RUN_ID_RE.fullmatch(value):
        raise _refuse(field, f"a run id matching {RUN_ID_RE.pattern}", value)
    return value


# --- container validators -------------------------------------------------------------------


def _list_of(item: Validator, *, non_empty: bool = False) -> Validator:
    expected = "a non-empty list of strings" if non_empty else "a list of strings"

    def check(value: Any, field: str) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple) or (non_empty and not value):
            raise _refuse(field, expected, value)
        return tuple(item(element, f"{field}.{index}") for index, element in enumerate(value))

    return check


def _env(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _refuse(field, "a map of environment variable names to strings", value)
    env: dict[str, str] = {}
    for key, item in value.items():
        key_field = f"{field}.{clip_printable(str(key), _CLIP)}"
        if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
            raise InvalidParams(
                key_field, f"expected a variable name matching {ENV_KEY_RE.pattern}"
            )
        env[key] = _os_text(item, key_field, "a string", allow_empty=True)
    return env


def _labels(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _refuse(field, "a map of strings to strings", value)
    labels: dict[str, str] = {}
    for key, item in value.items():
        key_field = f"{field}.{clip_printable(str(key), _CLIP)}"
        if not isinstance(key, str) or not key:
            raise InvalidParams(key_field, "expected a non-empty string as label name")
        labels[key] = _text(item, key_field)
    return labels


# --- the field tables -----------------------------------------------------------------------

_positive = _number(0, exclusive=True)
_non_negative = _number(0, exclusive=False)

# Fields that may have a configured default, in the order of the spec table.
_DEFAULTABLE: dict[str, Validator] = {
    "agent": _choice(AGENTS),
    "context_files": _list_of(_path_text),
    "model": _optional(_os_text),
    "max_turns": _integer(1),
    "turn_timeout_s": _positive,
    "stall_timeout_s": _positive,
    "sigkill_delay_s": _non_negative,
    "watch_logs": _list_of(_path_text),
    "resume_session": _boolean,
    "env": _env,
    "labels": _labels,
    "max_consecutive_failures": _integer(1),
    "retry_backoff_s": _non_negative,
    "stagnation_turns": _optional(_integer(0)),
    "session_max_turns": _optional(_integer(1)),
}
# Fields given per run only; null means "not given" for the optional ones.
_PER_RUN: dict[str, Validator] = {
    "workspace": _path_text,
    "command": _optional(_list_of(_os_text, non_empty=True)),
    "prompt": _optional(_prompt),
    "prompt_file": _optional(_path_text),
    "run_id": validate_run_id,
    "name": _name,
    "account": _account,
}
_NESTED: dict[str, dict[str, Validator]] = {
    "completion": {"stop_file": _optional(_path_text), "pattern": _optional(_pattern)},
    "budget": {
        "max_cost_usd": _optional(_positive),
        "max_tokens": _optional(_integer(1)),
        "max_duration_s": _optional(_positive),
        "warn_fraction": _fraction,
    },
}
_BUILTIN: dict[str, Any] = {
    "agent": "command",
    "context_files": (),
    "model": None,
    "max_turns": 100,
    "turn_timeout_s": 3600.0,
    "stall_timeout_s": 600.0,
    "sigkill_delay_s": 5.0,
    "watch_logs": (),
    "resume_session": True,
    "env": {},
    "labels": {},
    "max_consecutive_failures": 3,
    "retry_backoff_s": 2.0,
    "stagnation_turns": None,
    "session_max_turns": None,
}
_ALL_FIELDS = sorted([*_DEFAULTABLE, *_PER_RUN, *_NESTED])


def _unknown(key: object, known: Sequence[str], prefix: str = "") -> InvalidParams:
    return InvalidParams(
        prefix + clip_printable(str(key), _CLIP),
        "unknown field; expected one of " + ", ".join(known),
    )


def _validate_nested(value: Any, field: str) -> dict[str, Any]:
    table = _NESTED[field]
    if not isinstance(value, Mapping):
        raise _refuse(field, "a map with keys " + ", ".join(table), value)
    nested: dict[str, Any] = {}
    for key, item in value.items():
        if key not in table:
            raise _unknown(key, list(table), f"{field}.")
        nested[key] = table[key](item, f"{field}.{key}")
    return nested


def validate_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the config's ``defaults.*``; fields in errors are relative to ``defaults``.

    Returns the normalized values (lists as tuples, numbers as their spec type, nested
    ``completion``/``budget`` maps holding only the keys given); raises the first problem.
    """
    normalized, problems = check_defaults(defaults)
    if problems:
        raise problems[0]
    return normalized


def check_defaults(defaults: Any) -> tuple[dict[str, Any], list[InvalidParams]]:
    """:func:`validate_defaults` that reports every problem instead of the first."""
    if not isinstance(defaults, Mapping):
        return {}, [_refuse("defaults", "a map of run-spec fields", defaults)]
    normalized: dict[str, Any] = {}
    problems: list[InvalidParams] = []
    for key, value in defaults.items():
        try:
            normalized[key] = _default_field(key, value)
        except InvalidParams as exc:
            problems.append(exc)
    for field, relative in _default_paths(normalized):
        try:
            _check_relative_default(relative, field)
        except InvalidParams as exc:
            problems.append(exc)
    return normalized, problems


def _default_field(key: str, value: Any) -> Any:
    if key in _NESTED:
        return _validate_nested(value, key)
    if key in _DEFAULTABLE:
        return _DEFAULTABLE[key](value, key)
    if key in _PER_RUN:
        raise InvalidParams(key, "cannot have a configured default; it is given per run")
    raise _unknown(key, sorted([*_DEFAULTABLE, *_NESTED]))


def _default_paths(normalized: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The workspace-relative paths among the defaults, with their dotted fields."""
    for name in ("context_files", "watch_logs"):
        for index, relative in enumerate(normalized.get(name, ())):
            yield f"{name}.{index}", relative
    stop_file = normalized.get("completion", {}).get("stop_file")
    if stop_file is not None:
        yield "completion.stop_file", stop_file


def _check_relative_default(relative: str, field: str) -> None:
    """A default path serves every workspace only when it is relative and stays inside.

    ``run.start`` accepts an absolute path that happens to lie in the run's workspace;
    as a default it would fit one workspace at most, and every other start would fail.
    """
    normal = os.path.normpath(relative)
    if os.path.isabs(relative) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise InvalidParams(
            field,
            "expected a workspace-relative path that stays inside the workspace "
            f"(as a default it applies to every run), got {describe_given(relative)}",
        )


# --- paths ----------------------------------------------------------------------------------


def _within(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def check_inside(workspace: Path, relative: str, field: str) -> Path:
    """Resolve ``relative`` against ``workspace`` following symlinks; refuse it if it escapes.

    The target need not exist. Absolute paths are allowed when they resolve inside.
    """
    return check_inside_resolved(os.path.realpath(workspace), relative, field)


def check_inside_resolved(root: str, relative: str, field: str) -> Path:
    """:func:`check_inside` for a workspace path already free of symlinks (a spec's)."""
    given = describe_given(relative)
    try:
        target = os.path.realpath(os.path.join(root, relative))
    except (OSError, ValueError) as exc:
        raise InvalidParams(
            field, f"expected a path inside the workspace, got {given}: {exc}"
        ) from None
    if not _within(target, root):
        raise InvalidParams(
            field,
            f"expected a path that must stay inside the workspace {clip_printable(root, 200)}, "
            f"got {given} which resolves to {clip_printable(target, 200)}",
        )
    return Path(target)


def _check_workspace(value: str, workspace_roots: Sequence[Path]) -> str:
    expected = "an absolute path of an existing directory"
    if not is_absolute_path(value):
        raise _refuse("workspace", expected, value)
    try:
        real = os.path.realpath(value)
        is_dir = os.path.isdir(real)
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise _refuse("workspace", expected, value)
    roots = [os.path.realpath(root) for root in workspace_roots]
    if roots and not any(real == root or _within(real, root) for root in roots):
        raise InvalidParams(
            "workspace",
            f"expected a directory inside one of the workspace roots ({', '.join(roots)}), "
            f"got {describe_given(value)} which resolves to {clip_printable(real, 200)}",
        )
    return real


def _check_prompt_file(workspace: str, relative: str) -> None:
    target = check_inside_resolved(workspace, relative, "prompt_file")
    expected = "an existing regular file inside the workspace"
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        raise InvalidParams(
            "prompt_file", f"expected {expected}, got {describe_given(relative)}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(mode):
        raise InvalidParams(
            "prompt_file",
            f"expected {expected}, got {describe_given(relative)}: not a regular file",
        )


def _check_paths(values: Mapping[str, Any], completion: Completion) -> None:
    workspace = values["workspace"]  # resolved by _check_workspace
    if values["prompt_file"] is not None:
        _check_prompt_file(workspace, values["prompt_file"])
    for name in ("context_files", "watch_logs"):
        for index, relative in enumerate(values[name]):
            check_inside_resolved(workspace, relative, f"{name}.{index}")
    if completion.stop_file is not None:
        check_inside_resolved(workspace, completion.stop_file, "completion.stop_file")


# --- parsing --------------------------------------------------------------------------------


def new_run_id() -> str:
    """Return a fresh run id: 32 hex digits."""
    return uuid.uuid4().hex


def _check_prompt_choice(values: Mapping[str, Any]) -> None:
    given = [name for name in ("prompt", "prompt_file") if values[name] is not None]
    if len(given) != 1:
        got = "both" if given else "neither"
        raise InvalidParams("prompt", f"expected exactly one of prompt, prompt_file, got {got}")


def _check_command(values: Mapping[str, Any]) -> None:
    agent, command = values["agent"], values["command"]
    if agent == "command" and command is None:
        raise InvalidParams("command", 'expected a non-empty list of strings for agent "command"')
    if agent != "command" and command is not None:
        raise InvalidParams(
            "command", f'expected no command for agent "{agent}" (only for agent "command")'
        )


def _merge(
    params: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Validate ``params`` field by field on top of the defaults; return flat and nested."""
    values: dict[str, Any] = {**_BUILTIN, "command": None, "prompt": None, "prompt_file": None}
    nested: dict[str, dict[str, Any]] = {name: {} for name in _NESTED}
    for key, value in defaults.items():
        if key in _NESTED:
            nested[key].update(value)
        else:
            values[key] = value
    for key, value in params.items():
        if key in _NESTED:
            nested[key].update(_validate_nested(value, key))
        elif key in _DEFAULTABLE:
            values[key] = _DEFAULTABLE[key](value, key)
        elif key in _PER_RUN:
            values[key] = _PER_RUN[key](value, key)
        else:
            raise _unknown(key, _ALL_FIELDS)
    return values, nested


def parse_run_spec(
    params: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    workspace_roots: Sequence[Path] = (),
    generate_id: Callable[[], str] = new_run_id,
) -> RunSpec:
    """Validate ``run.start`` params into a :class:`RunSpec`; raise :class:`InvalidParams`.

    ``defaults`` is the config's ``defaults`` map, as :func:`validate_defaults` made it
    when the configuration was loaded: it overrides the built-in defaults and the
    params override it, key by key inside ``completion`` and ``budget`` and as whole
    values elsewhere (a given ``env`` replaces the default ``env``).
    """
    if not isinstance(params, Mapping):
        raise _refuse("params", "a map holding a run spec", params)
    values, nested = _merge(params, defaults or {})
    if "workspace" not in values:
        raise InvalidParams("workspace", "expected an absolute path of an existing directory")
    values["workspace"] = _check_workspace(values["workspace"], workspace_roots)
    _check_prompt_choice(values)
    _check_command(values)
    completion = Completion(**nested["completion"])
    _check_paths(values, completion)
    if "run_id" not in values:
        values["run_id"] = validate_run_id(generate_id())
    values.setdefault("name", "")
    values["account"] = values.get("account") or values["agent"]
    values["env"], values["labels"] = dict(values["env"]), dict(values["labels"])
    return RunSpec(
        **values,
        completion=completion,
        budget=Budget(**nested["budget"]),
    )


# --- run.update -----------------------------------------------------------------------------

# The spec fields run.update may change, in the order of docs/protocol.md 5.11. A field the
# spec does not have (yet), or one without a validator above, is not updatable; adding one is
# one line.
UPDATABLE_FIELDS = (
    "max_turns",
    "budget",
    "turn_timeout_s",
    "stall_timeout_s",
    "sigkill_delay_s",
    "max_consecutive_failures",
    "retry_backoff_s",
    "stagnation_turns",
    "session_max_turns",
    "labels",
    "name",
)


def _update_validator(name: str) -> Validator | None:
    if name not in RunSpec.__dataclass_fields__ or name in _NESTED:
        return None
    return _DEFAULTABLE.get(name) or _PER_RUN.get(name)


def updatable_fields() -> list[str]:
    """The fields :func:`parse_update` takes, as this build's spec has them."""
    return [
        name for name in UPDATABLE_FIELDS if name in _NESTED or _update_validator(name) is not None
    ]


def _wire_value(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def parse_update(
    params: Mapping[str, Any], spec: RunSpec
) -> tuple[RunSpec, dict[str, dict[str, Any]]]:
    """Validate ``run.update`` params (``run_id`` taken out) against ``spec``.

    Each field is checked by the validator ``run.start`` uses, under the same dotted
    ``data.field``; ``budget`` merges key by key (null clears a limit). Returns the new
    spec and the changes as ``{field: {"from": old, "to": new}}`` (``budget.max_tokens``
    for budget keys), leaving out what stays equal. Raises before anything is decided.
    """
    if not isinstance(params, Mapping):
        raise _refuse("params", "a map of the fields to change", params)
    known = updatable_fields()
    flat: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    for key, value in params.items():
        if key not in known:
            raise _unknown(key, ["run_id", *known])
        if key == "budget":
            budget = _validate_nested(value, "budget")
            continue
        check = _update_validator(key)
        assert check is not None
        flat[key] = check(value, key)
    changes: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        old = getattr(spec, key)
        if old != value:
            changes[key] = {"from": _wire_value(old), "to": _wire_value(value)}
    for key, value in budget.items():
        old = getattr(spec.budget, key)
        if old != value:
            changes[f"budget.{key}"] = {"from": old, "to": value}
    if not changes:
        return spec, changes
    new_budget = replace(spec.budget, **budget) if budget else spec.budget
    return replace(spec, **flat, budget=new_budget), changes
