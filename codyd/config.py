"""Daemon configuration: a TOML file, then ``CODYD_*`` environment variables, then flags.

Every source is flattened into leaves keyed by their path (``("agents", "codex", "bin")``);
a later source replaces an earlier one leaf by leaf, so tables merge. Each leaf is then
checked once, and an error names the dotted key, what was expected, what was given and
where it came from.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from socket import gethostname
from types import MappingProxyType
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from codyd import paths

ENV_PREFIX = "CODYD_"
CONFIG_ENV_VAR = "CODYD_CONFIG"
# Set by codyd in every agent's environment; a daemon started from inside an agent sees them.
AGENT_ENV_VARS = frozenset({"CODYD_RUN_ID", "CODYD_TURN", "CODYD_WORKSPACE"})
AGENT_NAMES = ("codex", "claude")
LOG_LEVELS = ("debug", "info", "warning", "error")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
NODE_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


class ConfigError(Exception):
    """The configuration is unusable; the text names the key, the problem and its source.

    One error may carry several problems (``problems``), one a line: every key is checked
    before the configuration is refused, so an operator fixes them all in one go.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """How to start one agent CLI and how it reports token usage."""

    bin: str
    args: tuple[str, ...] = ()
    usage: Literal["per_turn", "session_total"] = "per_turn"


@dataclass(frozen=True, slots=True)
class EventRetention:
    """How many events the store keeps."""

    max_runs: int = 1000
    max_events_per_run: int = 100_000


@dataclass(frozen=True, slots=True)
class RedisMaxlen:
    """Approximate caps of the mirrored Redis streams (``global`` in TOML)."""

    run: int = 10_000
    global_: int = 100_000


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Who may use the HTTP listener (``[http]`` in TOML); the tokens are secrets."""

    read_token: str | None = None
    control_token: str | None = None
    anonymous_read: bool = False
    metrics_auth: bool = False


def default_node() -> str:
    """The host name, reduced to the characters a node name may hold."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", gethostname()) or "localhost"


def _default_agents() -> Mapping[str, AgentConfig]:
    return MappingProxyType({name: AgentConfig(bin=name) for name in AGENT_NAMES})


def _no_defaults() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """The daemon's settings, validated."""

    socket: Path
    state_dir: Path
    socket_mode: int = 0o660
    socket_group: str | int | None = None
    redis_url: str | None = None
    key_prefix: str = "codi:api:"
    node: str = field(default_factory=default_node)
    log_format: Literal["json", "console"] | None = None
    log_level: str = "info"
    heartbeat_s: float = 5.0
    lease_ttl_s: float = 30.0
    keepalive_s: float = 15.0
    max_frame_bytes: int = 4 * 1024 * 1024
    max_connections: int = 256
    max_active_runs: int = 64
    max_turn_log_bytes: int = 64 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    event_retention: EventRetention = EventRetention()
    redis_maxlen: RedisMaxlen = RedisMaxlen()
    mirror_groups: tuple[str, ...] = ()
    shutdown_flush_s: float = 5.0
    allowed_uids: tuple[int, ...] = ()
    allowed_groups: tuple[str | int, ...] = ()
    workspace_roots: tuple[Path, ...] = ()
    agents: Mapping[str, AgentConfig] = field(default_factory=_default_agents)
    defaults: Mapping[str, Any] = field(default_factory=_no_defaults)
    http_listen: str | None = None
    http: HttpConfig = HttpConfig()

    def summary(self) -> dict[str, Any]:
        """Every key as plain JSON-ready values, for the start-up log; no secrets."""
        plain = {item.name: _plain(getattr(self, item.name)) for item in fields(self)}
        plain["socket_mode"] = f"{self.socket_mode:04o}"
        if self.redis_url is not None:
            plain["redis_url"] = redact_url(self.redis_url)
        if isinstance(plain["defaults"].get("env"), dict):
            plain["defaults"]["env"] = dict.fromkeys(plain["defaults"]["env"], "***")
        for token in ("read_token", "control_token"):
            if plain["http"][token] is not None:
                plain["http"][token] = "***"
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, AgentConfig | EventRetention | RedisMaxlen | HttpConfig):
        return {item.name.rstrip("_"): _plain(getattr(value, item.name)) for item in fields(value)}
    return value


def redact_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password`` query item) as ``***``."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return "***"
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        url = url.replace(netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\g<1>***", url)


def default_socket_path(env: Mapping[str, str]) -> Path:
    """The socket path of SPEC 6.1 for this environment."""
    return Path(paths.default_socket_path(env))


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The state directory of SPEC 6.1 for this environment."""
    if state := paths.first_path(env.get("STATE_DIRECTORY")):
        return Path(state)
    if xdg := paths.xdg_dir(env, "XDG_STATE_HOME"):
        return Path(xdg) / "codyd"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "codyd"


# --- checks: each returns the typed value or raises _Mismatch saying what was expected ---


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Check = Callable[[Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(low: int, high: int | None = None) -> Check:
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def check(value: Any) -> int:
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise _Mismatch(expected)
        return int(value)

    return check


def _number(low: float, *, above: bool) -> Check:
    expected = f"a number {'>' if above else '>='} {low:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Mismatch(expected)
        if not math.isfinite(value) or value < low or (above and value == low):
            raise _Mismatch(expected)
        return float(value)

    return check


def _choice(*options: str, fold_case: bool = False) -> Check:
    expected = "one of " + ", ".join(repr(option) for option in options)

    def check(value: Any) -> str:
        if isinstance(value, str) and (value.lower() if fold_case else value) in options:
            return value.lower() if fold_case else value
        raise _Mismatch(expected)

    return check


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Mismatch("a string")
    return value


def _nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Mismatch("a non-empty string")
    return value


def _path(value: Any) -> Path:
    return Path(_nonempty(value))


def _absolute_path(value: Any) -> Path:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise _Mismatch("an absolute path")
    return Path(value)


def _node(value: Any) -> str:
    if not isinstance(value, str) or not NODE_PATTERN.fullmatch(value):
        raise _Mismatch("a non-empty name of letters, digits, '.', '_' and '-'")
    return value


def _group(value: Any) -> str | int:
    if isinstance(value, str) and value:
        return value
    if _is_int(value) and value >= 0:
        return int(value)
    raise _Mismatch("a group name or a gid >= 0")


def _socket_mode(value: Any) -> int:
    expected = 'a permission mode up to 0777: an octal string like "0660" or an integer'
    if isinstance(value, str) and re.fullmatch(r"(0o)?[0-7]{1,4}", value):
        value = int(value.removeprefix("0o"), 8)
    if not _is_int(value) or not 0 <= value <= 0o777:
        raise _Mismatch(expected)
    return int(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Mismatch("true or false")
    return value


def _token(value: Any) -> str | None:
    if value == "":
        return None  # lets the environment switch off a token set in the file
    if not isinstance(value, str) or not value.isprintable() or " " in value:
        raise _Mismatch("a string of printable characters without spaces")
    return value


def _listen_address(value: Any) -> str | None:
    """``host:port`` (``[v6]:port``; a bare port or ``:port`` is on loopback), normalised."""
    expected = 'a host:port like "127.0.0.1:8787" (port 1 to 65535)'
    if value == "":
        return None
    if not isinstance(value, str):
        raise _Mismatch(expected)
    host, colon, port = value.rpartition(":")
    if not colon:
        host, port = "", value
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port.isdigit() or not 1 <= int(port) <= 65535 or not re.fullmatch(r"[\w.:-]+", host):
        raise _Mismatch(expected)
    return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"


def _redis_url(value: Any) -> str | None:
    if value == "":
        return None  # lets the environment or a flag switch off a Redis set in the file
    if not isinstance(value, str) or not value.startswith(REDIS_URL_SCHEMES):
        raise _Mismatch("a URL starting with " + ", ".join(REDIS_URL_SCHEMES))
    from redis.connection import parse_url

    try:
        parse_url(value)  # type: ignore[no-untyped-call]
    except ValueError:
        raise _Mismatch("a URL redis can parse (host, port, database)") from None
    return value


def _list_of(item: Check, expected: str) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _Mismatch(expected)
        try:
            return tuple(item(element) for element in value)
        except _Mismatch:
            raise _Mismatch(expected) from None

    return check


class _Key(NamedTuple):
    check: Check
    verbatim: bool = False  # an environment value is the string itself, not a TOML value


KeyPath = tuple[str, ...]

_KEYS: dict[KeyPath, _Key] = {
    ("socket",): _Key(_path, verbatim=True),
    ("state_dir",): _Key(_path, verbatim=True),
    ("socket_mode",): _Key(_socket_mode),
    ("socket_group",): _Key(_group),
    ("redis_url",): _Key(_redis_url, verbatim=True),
    ("key_prefix",): _Key(_string, verbatim=True),
    ("node",): _Key(_node, verbatim=True),
    ("log_format",): _Key(_choice("json", "console"), verbatim=True),
    ("log_level",): _Key(_choice(*LOG_LEVELS, fold_case=True), verbatim=True),
    ("heartbeat_s",): _Key(_number(0, above=True)),
    ("lease_ttl_s",): _Key(_number(0, above=True)),
    ("keepalive_s",): _Key(_number(0, above=True)),
    ("max_frame_bytes",): _Key(_integer(1024, 2**32 - 1)),  # the frame header is 4 bytes
    ("max_connections",): _Key(_integer(1)),
    ("max_active_runs",): _Key(_integer(1)),
    ("max_turn_log_bytes",): _Key(_integer(1024)),
    ("max_line_bytes",): _Key(_integer(256)),
    ("event_retention", "max_runs"): _Key(_integer(1)),
    ("event_retention", "max_events_per_run"): _Key(_integer(1)),
    ("redis_maxlen", "run"): _Key(_integer(1)),
    ("redis_maxlen", "global"): _Key(_integer(1)),
    ("mirror_groups",): _Key(_list_of(_nonempty, "a list of non-empty strings")),
    ("shutdown_flush_s",): _Key(_number(0, above=False)),
    ("allowed_uids",): _Key(_list_of(_integer(0), "a list of uids (integers >= 0)")),
    ("allowed_groups",): _Key(_list_of(_group, "a list of group names or gids")),
    ("workspace_roots",): _Key(_list_of(_absolute_path, "a list of absolute paths")),
    ("http_listen",): _Key(_listen_address, verbatim=True),
    ("http", "read_token"): _Key(_token, verbatim=True),
    ("http", "control_token"): _Key(_token, verbatim=True),
    ("http", "anonymous_read"): _Key(_bool),
    ("http", "metrics_auth"): _Key(_bool),
}
for _name in AGENT_NAMES:
    _KEYS[("agents", _name, "bin")] = _Key(_nonempty, verbatim=True)
    _KEYS[("agents", _name, "args")] = _Key(_list_of(_string, "a list of strings"))
    _KEYS[("agents", _name, "usage")] = _Key(_choice("per_turn", "session_total"), verbatim=True)

_TABLES: frozenset[KeyPath] = frozenset(
    {("event_retention",), ("redis_maxlen",), ("agents",), ("http",)}
    | {("agents", name) for name in AGENT_NAMES}
)
_DEFAULTS = "defaults"
# Run-spec defaults whose environment values are plain strings (SPEC 2.1).
_VERBATIM_DEFAULTS: frozenset[KeyPath] = frozenset(
    {("agent",), ("model",), ("completion", "stop_file"), ("completion", "pattern")}
)


# --- gathering: every source becomes leaves, later ones replacing earlier ones ---


class _Given(NamedTuple):
    value: Any
    source: str  # "file /etc/codyd/config.toml", "environment CODYD_NODE", "flag --node"


Leaves = dict[KeyPath, _Given]


def _dotted(path: KeyPath) -> str:
    return ".".join(path)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown(path: KeyPath, source: str) -> ConfigError:
    while path[:-1] and path[:-1] not in _TABLES and path[:-1] not in _KEYS:
        path = path[:-1]  # name the first level that is wrong: agents.gemini, not agents.gemini.bin
    parent = path[:-1]
    siblings = (key for key in (*_KEYS, *_TABLES) if len(key) > len(parent))
    known = {_dotted(key[: len(path)]) for key in siblings if key[: len(parent)] == parent}
    if len(path) == 1:
        known.add(_DEFAULTS)
    message = f"config key '{_dotted(path)}': unknown key (from {source})"
    close = difflib.get_close_matches(_dotted(path), sorted(known), n=1)
    return ConfigError(message + (f"; did you mean '{close[0]}'?" if close else ""))


def _record(leaves: Leaves, path: KeyPath, given: _Given) -> None:
    for old in [old for old in leaves if old[: len(path)] == path or path[: len(old)] == old]:
        del leaves[old]
    leaves[path] = given


def _walk(
    leaves: Leaves, path: KeyPath, value: Any, source: str, problems: list[ConfigError]
) -> None:
    """Record ``value`` at ``path``, descending into tables; what is wrong goes to ``problems``."""
    if path in _KEYS:
        _record(leaves, path, _Given(value, source))
    elif path in _TABLES or path == (_DEFAULTS,) or not path:
        if not isinstance(value, dict):
            problems.append(
                ConfigError(
                    f"config key '{_dotted(path)}': expected a table, got {_show(value)} "
                    f"(from {source})"
                )
            )
            return
        for key, item in value.items():
            _walk(leaves, (*path, key), item, source, problems)
    elif path[0] == _DEFAULTS:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                _walk(leaves, (*path, key), item, source, problems)
        else:
            _record(leaves, path, _Given(value, source))
    else:
        problems.append(_unknown(path, source))


def _read_file(path: Path, origin: str) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror or exc}"
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problem = f"invalid TOML: {exc}"
    raise ConfigError(f"config file '{path}' (from {origin}): {problem}")


def _env_value(path: KeyPath, text: str) -> Any:
    """An environment value: the string itself for str-typed keys, else a TOML value."""
    key = _KEYS.get(path)
    if (key is not None and key.verbatim) or (
        path[0] == _DEFAULTS and path[1:] in _VERBATIM_DEFAULTS
    ):
        return text
    try:
        document = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text  # the key's check reports it, showing what was given
    return document["value"] if len(document) == 1 else text


def _gather_env(leaves: Leaves, env: Mapping[str, str], problems: list[ConfigError]) -> None:
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV_VAR or name in AGENT_ENV_VARS:
            continue
        path = tuple(part.lower() for part in name.removeprefix(ENV_PREFIX).split("__"))
        source = f"environment {name}"
        if "" in path:
            problems.append(
                ConfigError(f"environment variable {name}: no config key is named by it")
            )
            continue
        _walk(leaves, path, _env_value(path, env[name]), source, problems)


def _gather_flags(leaves: Leaves, flags: Mapping[str, Any], problems: list[ConfigError]) -> None:
    for name, value in flags.items():
        if value is None:
            continue
        path = tuple(name.split("."))
        _walk(
            leaves,
            path,
            str(value) if isinstance(value, Path) else value,
            f"flag --{name.replace('_', '-')}",
            problems,
        )


# --- building ---


def _checked(path: KeyPath, given: _Given) -> Any:
    try:
        return _KEYS[path].check(given.value)
    except _Mismatch as exc:
        shown = given.value
        if path == ("redis_url",) and isinstance(shown, str):
            shown = redact_url(shown)
        if path[-1].endswith("_token"):
            shown = "***"  # a secret, even a malformed one, is never shown
        raise ConfigError(
            f"config key '{_dotted(path)}': expected {exc.expected}, got {_show(shown)} "
            f"(from {given.source})"
        ) from None


def _defaults_source(leaves: Leaves, path: KeyPath) -> str:
    """Where the run-spec default at ``path`` (or the nearest leaf to it) was given."""
    for length in range(len(path), 1, -1):
        if path[:length] in leaves:
            return leaves[path[:length]].source
    sources = [given.source for key, given in leaves.items() if key[: len(path)] == path]
    sources = sources or [given.source for given in leaves.values()]
    return ", ".join(dict.fromkeys(sources))


def _run_defaults(leaves: Leaves, problems: list[ConfigError]) -> Mapping[str, Any]:
    """The validated ``defaults.*``: each field as ``run.start`` would check it.

    A default that would make every ``run.start`` fail (a stop file outside any
    workspace) is refused here rather than at the first start.
    """
    if not leaves:
        return _no_defaults()
    from codyd.spec import check_defaults  # needed only when defaults are given

    nested: dict[str, Any] = {}
    for path, given in leaves.items():
        table = nested
        for part in path[1:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = given.value
    normalized, refused = check_defaults(nested)
    for exc in refused:
        path = (_DEFAULTS, *exc.field.split("."))
        problem = exc.message.removeprefix(f"{exc.field}: ")
        problems.append(
            ConfigError(
                f"config key '{_dotted(path)}': {problem} (from {_defaults_source(leaves, path)})"
            )
        )
    return MappingProxyType(normalized)


def _build(leaves: Leaves, env: Mapping[str, str], problems: list[ConfigError]) -> Config:
    values: dict[KeyPath, Any] = {}
    for path, given in leaves.items():
        if path in _KEYS:
            try:
                values[path] = _checked(path, given)
            except ConfigError as exc:
                problems.append(exc)
    top = {path[0]: value for path, value in values.items() if len(path) == 1}

    def table(*prefix: str) -> dict[str, Any]:
        return {path[-1]: value for path, value in values.items() if path[:-1] == prefix}

    agents = {name: AgentConfig(**{"bin": name, **table("agents", name)}) for name in AGENT_NAMES}
    maxlen = {
        key.replace("global", "global_"): value for key, value in table("redis_maxlen").items()
    }
    defaults = _run_defaults({p: g for p, g in leaves.items() if p[0] == _DEFAULTS}, problems)
    if problems:
        raise ConfigError(*(line for exc in problems for line in exc.problems))
    return Config(
        socket=top.pop("socket", None) or default_socket_path(env),
        state_dir=top.pop("state_dir", None) or default_state_dir(env),
        event_retention=EventRetention(**table("event_retention")),
        redis_maxlen=RedisMaxlen(**maxlen),
        http=HttpConfig(**table("http")),
        agents=MappingProxyType(agents),
        defaults=defaults,
        **top,
    )


def load_config(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Read the TOML file, then ``CODYD_*`` variables of ``env``, then ``flags``; validate all.

    Every problem is gathered before refusing: the error lists them all, one a line.
    """
    env = os.environ if env is None else env
    leaves: Leaves = {}
    problems: list[ConfigError] = []
    origin = "flag --config"
    if config_file is None and env.get(CONFIG_ENV_VAR):
        config_file, origin = Path(env[CONFIG_ENV_VAR]), f"environment {CONFIG_ENV_VAR}"
    if config_file is not None:
        path = Path(config_file)
        _walk(leaves, (), _read_file(path, origin), f"file {path}", problems)
    _gather_env(leaves, env, problems)
    _gather_flags(leaves, flags or {}, problems)
    return _build(leaves, env, problems)
