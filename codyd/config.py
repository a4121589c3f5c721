"""Daemon configuration: a TOML file, then ``CODYD_*`` environment variables, then flags.

Every source is flattened into leaves keyed by their path (``("agents", "codex", "bin")``);
a later source replaces an earlier one leaf by leaf, so tables merge. Each leaf is then
checked once, and an error names the dotted key, what was expected, what was given and
where it came from.
"""

from __future__ import annotations

import base64
import binascii
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
from codyd.checks import closest_name, is_absolute_path, is_int, is_int_in, is_number_above
from codyd.errors import StartupFailure

ENV_PREFIX = "CODYD_"
CONFIG_ENV_VAR = "CODYD_CONFIG"
# Set by codyd in every agent's environment; a daemon started from inside an agent sees them.
AGENT_ENV_VARS = frozenset({"CODYD_RUN_ID", "CODYD_TURN", "CODYD_WORKSPACE"})
AGENT_NAMES = ("codex", "claude")
LOG_LEVELS = ("debug", "info", "warning", "error")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
NODE_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
WEBHOOKS = "webhooks"
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_DEFAULT_EVENTS = ("attention", "run_completed", "run_failed", "run_cancelled")
EVENT_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class ConfigError(StartupFailure):
    """The configuration is unusable; the text names the key, the problem and its source.

    One error may carry several problems (``problems``), one a line: every key is checked
    before the configuration is refused, so an operator fixes them all in one go.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- checks: each returns the typed value or raises _Mismatch saying what was expected ---


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Check = Callable[[Any], Any]


def _integer(low: int, high: int | None = None) -> Check:
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def check(value: Any) -> int:
        if not is_int_in(value, low, high):
            raise _Mismatch(expected)
        return int(value)

    return check


def _number(low: float, *, above: bool) -> Check:
    expected = f"a number {'>' if above else '>='} {low:g}"

    def check(value: Any) -> float:
        if not is_number_above(value, low, inclusive=not above):
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
    if not is_absolute_path(value):
        raise _Mismatch("an absolute path")
    return Path(value)


def _node(value: Any) -> str:
    if not isinstance(value, str) or not NODE_PATTERN.fullmatch(value):
        raise _Mismatch("a non-empty name of letters, digits, '.', '_' and '-'")
    return value


def _group(value: Any) -> str | int:
    if isinstance(value, str) and value:
        return value
    if is_int(value) and value >= 0:
        return int(value)
    raise _Mismatch("a group name or a gid >= 0")


def _socket_mode(value: Any) -> int:
    expected = 'a permission mode up to 0777: an octal string like "0660" or an integer'
    if isinstance(value, str) and re.fullmatch(r"(0o)?[0-7]{1,4}", value):
        value = int(value.removeprefix("0o"), 8)
    if not is_int(value) or not 0 <= value <= 0o777:
        raise _Mismatch(expected)
    return int(value)


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


def _list_of(item: Check, expected: str) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _Mismatch(expected)
        try:
            return tuple(item(element) for element in value)
        except _Mismatch:
            raise _Mismatch(expected) from None

    return check


def _setting(check: Check, *, verbatim: bool = False) -> dict[str, Any]:
    """The metadata of a checked setting: ``verbatim`` takes an environment value as is.

    A string-typed setting's environment value is the string itself; any other is read as
    a TOML value (``CODYD_MAX_CONNECTIONS=64`` is the integer 64).
    """
    return {"check": check, "verbatim": verbatim}


def _table(cls: type[Any]) -> dict[str, Any]:
    """The metadata of a setting that is a TOML table of the dataclass ``cls``."""
    return {"table": cls}


USAGE_RULES = ("per_turn", "session_total", "max_result")
UsageRule = Literal["per_turn", "session_total", "max_result"]
# What an unattended turn may do by default (docs/agents.md, "Unattended defaults").
DEFAULT_AGENT_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "codex": ("--sandbox", "workspace-write"),
        "claude": ("--permission-mode", "acceptEdits"),
    }
)


_MISSING = object()  # a required key of a table-valued setting that was not given


class _SubkeyMismatch(_Mismatch):
    """A mismatch inside a table-valued setting: ``subkey`` is the dotted path below it."""

    def __init__(self, subkey: str, expected: str, given: Any) -> None:
        super().__init__(expected)
        self.subkey = subkey
        self.given = given


@dataclass(frozen=True, slots=True)
class UsageConfig:
    """How an agent's reports of each figure are counted; None: the rule for its version."""

    tokens: UsageRule | None = None
    cost: UsageRule | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of one model (``agents.codex.prices``)."""

    input: float
    cached: float
    output: float


def _usage(value: Any) -> UsageConfig:
    """``"per_turn"`` (both figures), or ``{tokens = ..., cost = ...}`` (each optional)."""
    expected_rule = "one of " + ", ".join(repr(rule) for rule in USAGE_RULES)
    if isinstance(value, str):
        if value not in USAGE_RULES:
            raise _Mismatch(expected_rule + ', or a table {tokens = "...", cost = "..."}')
        return UsageConfig(tokens=value, cost=value)  # type: ignore[arg-type]
    if not isinstance(value, dict):
        raise _Mismatch(expected_rule + ', or a table {tokens = "...", cost = "..."}')
    for key, rule in value.items():
        if key not in ("tokens", "cost"):
            raise _SubkeyMismatch(key, "no such key (known: tokens, cost)", rule)
        if rule not in USAGE_RULES:
            raise _SubkeyMismatch(key, expected_rule, rule)
    return UsageConfig(tokens=value.get("tokens"), cost=value.get("cost"))


def _prices(value: Any) -> Mapping[str, Price]:
    """``{"<model>" = {input, cached, output}}``: USD per 1M tokens, each >= 0."""
    if not isinstance(value, dict):
        raise _Mismatch(
            'a table of models, e.g. {"*" = {input = 1.25, cached = 0.125, output = 10}}'
        )
    prices: dict[str, Price] = {}
    for model, table in value.items():
        if not isinstance(table, dict):
            raise _SubkeyMismatch(model, "a table {input, cached, output}", table)
        for key in table:
            if key not in ("input", "cached", "output"):
                raise _SubkeyMismatch(
                    f"{model}.{key}", "no such key (known: input, cached, output)", table[key]
                )
        figures: dict[str, float] = {}
        for key in ("input", "cached", "output"):
            if key not in table:
                raise _SubkeyMismatch(f"{model}.{key}", "a price in USD per 1M tokens", _MISSING)
            if not is_number_above(table[key], 0, inclusive=True):
                raise _SubkeyMismatch(
                    f"{model}.{key}", "a number >= 0 (USD per 1M tokens)", table[key]
                )
            figures[key] = float(table[key])
        prices[model] = Price(**figures)
    return MappingProxyType(prices)


def _no_prices() -> Mapping[str, Price]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """How to start one agent CLI and how its reports of tokens and cost are counted."""

    bin: str = field(metadata=_setting(_nonempty, verbatim=True))
    args: tuple[str, ...] = field(
        default=(), metadata=_setting(_list_of(_string, "a list of strings"))
    )
    usage: UsageConfig = field(default=UsageConfig(), metadata=_setting(_usage))
    # codex: what its tokens cost, for cost events and budget.max_cost_usd (claude reports cost).
    prices: Mapping[str, Price] = field(default_factory=_no_prices, metadata=_setting(_prices))
    # claude: pass --max-budget-usd <remaining> to runs with budget.max_cost_usd.
    budget_flag: bool = field(default=True, metadata=_setting(_bool))


@dataclass(frozen=True, slots=True)
class EventRetention:
    """How many events the store keeps."""

    max_runs: int = field(default=1000, metadata=_setting(_integer(1)))
    max_events_per_run: int = field(default=100_000, metadata=_setting(_integer(1)))


@dataclass(frozen=True, slots=True)
class RedisMaxlen:
    """Approximate caps of the mirrored Redis streams (``global`` in TOML)."""

    run: int = field(default=10_000, metadata=_setting(_integer(1)))
    global_: int = field(default=100_000, metadata=_setting(_integer(1)))


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Who may use the HTTP listener (``[http]`` in TOML); the tokens are secrets."""

    read_token: str | None = field(default=None, metadata=_setting(_token, verbatim=True))
    control_token: str | None = field(default=None, metadata=_setting(_token, verbatim=True))
    anonymous_read: bool = field(default=False, metadata=_setting(_bool))
    metrics_auth: bool = field(default=False, metadata=_setting(_bool))


def _webhook_url(value: Any) -> str:
    expected = "an http:// or https:// URL with a host"
    if not isinstance(value, str):
        raise _Mismatch(expected)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port out of range raises here
    except ValueError:
        raise _Mismatch(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or value != value.strip():
        raise _Mismatch(expected)
    return value


def _webhook_secret(value: Any) -> str:
    """A non-empty secret; ``whsec_<base64>`` must decode to at least one byte."""
    if not isinstance(value, str) or not value:
        raise _Mismatch("a non-empty string")
    if value.startswith(WEBHOOK_SECRET_PREFIX):
        try:
            key = base64.b64decode(value.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise _Mismatch(f"{WEBHOOK_SECRET_PREFIX} followed by non-empty base64")
    return value


def _event_types(value: Any) -> tuple[str, ...]:
    expected = 'a non-empty list of event types (like "run_failed"), or ["*"] for all'
    if not isinstance(value, list | tuple) or not value:
        raise _Mismatch(expected)
    if list(value) == ["*"]:
        return ("*",)
    if not all(isinstance(kind, str) and EVENT_TYPE_PATTERN.fullmatch(kind) for kind in value):
        raise _Mismatch(expected)
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One ``[[webhooks]]`` entry: where to POST which events (docs/http.md); secret is secret."""

    name: str = field(metadata=_setting(_node))
    url: str = field(metadata=_setting(_webhook_url))
    secret: str = field(repr=False, metadata=_setting(_webhook_secret))
    events: tuple[str, ...] = field(default=WEBHOOK_DEFAULT_EVENTS, metadata=_setting(_event_types))
    timeout_s: float = field(default=10.0, metadata=_setting(_number(0, above=True)))
    # The first retry's delay, doubling up to backoff_max_s.
    backoff_s: float = field(default=1.0, metadata=_setting(_number(0, above=True)))
    backoff_max_s: float = field(default=600.0, metadata=_setting(_number(0, above=True)))

    @property
    def all_events(self) -> bool:
        return self.events == ("*",)

    @property
    def key(self) -> bytes:
        """The HMAC key: a ``whsec_`` secret decoded, any other as its UTF-8 bytes."""
        if self.secret.startswith(WEBHOOK_SECRET_PREFIX):
            return base64.b64decode(self.secret.removeprefix(WEBHOOK_SECRET_PREFIX))
        return self.secret.encode()


def default_node() -> str:
    """The host name, reduced to the characters a node name may hold."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", gethostname()) or "localhost"


def _default_agents() -> Mapping[str, AgentConfig]:
    return MappingProxyType(
        {name: AgentConfig(bin=name, args=DEFAULT_AGENT_ARGS[name]) for name in AGENT_NAMES}
    )


def _no_defaults() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """The daemon's settings, validated; each field's metadata says how it is checked."""

    socket: Path = field(metadata=_setting(_path, verbatim=True))
    state_dir: Path = field(metadata=_setting(_path, verbatim=True))
    socket_mode: int = field(default=0o660, metadata=_setting(_socket_mode))
    socket_group: str | int | None = field(default=None, metadata=_setting(_group))
    redis_url: str | None = field(default=None, metadata=_setting(_redis_url, verbatim=True))
    key_prefix: str = field(default="codi:api:", metadata=_setting(_string, verbatim=True))
    node: str = field(default_factory=default_node, metadata=_setting(_node, verbatim=True))
    log_format: Literal["json", "console"] | None = field(
        default=None, metadata=_setting(_choice("json", "console"), verbatim=True)
    )
    log_level: str = field(
        default="info", metadata=_setting(_choice(*LOG_LEVELS, fold_case=True), verbatim=True)
    )
    heartbeat_s: float = field(default=5.0, metadata=_setting(_number(0, above=True)))
    lease_ttl_s: float = field(default=30.0, metadata=_setting(_number(0, above=True)))
    keepalive_s: float = field(default=15.0, metadata=_setting(_number(0, above=True)))
    max_frame_bytes: int = field(  # the frame header is 4 bytes
        default=4 * 1024 * 1024, metadata=_setting(_integer(1024, 2**32 - 1))
    )
    max_connections: int = field(default=256, metadata=_setting(_integer(1)))
    max_active_runs: int = field(default=64, metadata=_setting(_integer(1)))
    # A rate_limited turn that named no reset time: the first wait (docs/configuration.md).
    rate_limit_backoff_s: float = field(default=300.0, metadata=_setting(_number(0, above=True)))
    max_turn_log_bytes: int = field(default=64 * 1024 * 1024, metadata=_setting(_integer(1024)))
    max_line_bytes: int = field(default=1024 * 1024, metadata=_setting(_integer(256)))
    # Below this much free space under state_dir no new turn starts (codyd.runs.disk); 0: off.
    min_free_bytes: int = field(default=256 * 1024 * 1024, metadata=_setting(_integer(0)))
    disk_check_s: float = field(default=5.0, metadata=_setting(_number(0, above=True)))
    event_retention: EventRetention = field(
        default=EventRetention(), metadata=_table(EventRetention)
    )
    redis_maxlen: RedisMaxlen = field(default=RedisMaxlen(), metadata=_table(RedisMaxlen))
    mirror_groups: tuple[str, ...] = field(
        default=(), metadata=_setting(_list_of(_nonempty, "a list of non-empty strings"))
    )
    shutdown_flush_s: float = field(default=5.0, metadata=_setting(_number(0, above=False)))
    allowed_uids: tuple[int, ...] = field(
        default=(), metadata=_setting(_list_of(_integer(0), "a list of uids (integers >= 0)"))
    )
    allowed_groups: tuple[str | int, ...] = field(
        default=(), metadata=_setting(_list_of(_group, "a list of group names or gids"))
    )
    workspace_roots: tuple[Path, ...] = field(
        default=(), metadata=_setting(_list_of(_absolute_path, "a list of absolute paths"))
    )
    # One table per agent name (agents.codex, agents.claude), each an AgentConfig.
    agents: Mapping[str, AgentConfig] = field(
        default_factory=_default_agents, metadata=_table(AgentConfig) | {"per_agent": True}
    )
    defaults: Mapping[str, Any] = field(default_factory=_no_defaults)  # checked by codyd.spec
    http_listen: str | None = field(default=None, metadata=_setting(_listen_address, verbatim=True))
    http: HttpConfig = field(default=HttpConfig(), metadata=_table(HttpConfig))
    webhooks: tuple[WebhookConfig, ...] = ()  # checked by _webhooks

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
        for hook in plain["webhooks"]:
            hook["secret"] = "***"
            hook["url"] = redact_url(hook["url"])
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(
        value,
        AgentConfig
        | EventRetention
        | RedisMaxlen
        | HttpConfig
        | WebhookConfig
        | UsageConfig
        | Price,
    ):
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
    """The socket path of docs/configuration.md "Default paths" for this environment."""
    return Path(paths.default_socket_path(env))


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The state directory of docs/configuration.md "Default paths" for this environment."""
    if state := paths.first_path(env.get("STATE_DIRECTORY")):
        return Path(state)
    if xdg := paths.xdg_dir(env, "XDG_STATE_HOME"):
        return Path(xdg) / "codyd"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "codyd"


class _Key(NamedTuple):
    check: Check
    verbatim: bool = False  # an environment value is the string itself, not a TOML value


KeyPath = tuple[str, ...]


def _toml_name(name: str) -> str:
    return name.rstrip("_")  # global_ is "global" in TOML


def _collect(
    cls: type[Any], prefix: KeyPath, keys: dict[KeyPath, _Key], tables: set[KeyPath]
) -> None:
    """Add the checked keys and tables of the dataclass ``cls`` under ``prefix``, in field order."""
    for item in fields(cls):
        path = (*prefix, _toml_name(item.name))
        if "check" in item.metadata:
            keys[path] = _Key(item.metadata["check"], item.metadata["verbatim"])
        elif "table" in item.metadata:
            tables.add(path)
            per_agent = "per_agent" in item.metadata
            for table in [(*path, name) for name in AGENT_NAMES] if per_agent else [path]:
                tables.add(table)
                _collect(item.metadata["table"], table, keys, tables)


def _derive_keys() -> tuple[dict[KeyPath, _Key], frozenset[KeyPath]]:
    """Every checked key and every table, read from the field metadata of :class:`Config`."""
    keys: dict[KeyPath, _Key] = {}
    tables: set[KeyPath] = set()
    _collect(Config, (), keys, tables)
    return keys, frozenset(tables)


_KEYS, _TABLES = _derive_keys()

_DEFAULTS = "defaults"
# Run-spec defaults whose environment values are plain strings
# (docs/configuration.md, "Environment variables").
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


def _toml_repr(value: Any) -> str:
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
        known.update((_DEFAULTS, WEBHOOKS))
    message = f"config key '{_dotted(path)}': unknown key (from {source})"
    close = closest_name(_dotted(path), known)
    return ConfigError(message + (f"; did you mean '{close}'?" if close else ""))


def _record(leaves: Leaves, path: KeyPath, given: _Given) -> None:
    for old in [old for old in leaves if old[: len(path)] == path or path[: len(old)] == old]:
        del leaves[old]
    leaves[path] = given


def _walk(
    leaves: Leaves, path: KeyPath, value: Any, source: str, problems: list[ConfigError]
) -> None:
    """Record ``value`` at ``path``, descending into tables; what is wrong goes to ``problems``."""
    if path in _KEYS or path == (WEBHOOKS,):
        _record(leaves, path, _Given(value, source))
    elif path in _TABLES or path == (_DEFAULTS,) or not path:
        if not isinstance(value, dict):
            problems.append(
                ConfigError(
                    f"config key '{_dotted(path)}': expected a table, got {_toml_repr(value)} "
                    f"(from {source})"
                )
            )
            return
        for key, item in value.items():
            _walk(leaves, (*path, key), item, source, problems)
    elif path[0] == WEBHOOKS:
        problems.append(
            ConfigError(
                f"config key '{_dotted(path)}': webhooks is one list, given whole "
                f"(CODYD_WEBHOOKS='[{{name = ..., url = ..., secret = ...}}]') (from {source})"
            )
        )
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
    except _SubkeyMismatch as exc:
        raise ConfigError(
            f"config key '{_dotted(path)}.{exc.subkey}': expected {exc.expected}, "
            f"got {'nothing' if exc.given is _MISSING else _toml_repr(exc.given)} "
            f"(from {given.source})"
        ) from None
    except _Mismatch as exc:
        shown = given.value
        if path == ("redis_url",) and isinstance(shown, str):
            shown = redact_url(shown)
        if path[-1].endswith("_token"):
            shown = "***"  # a secret, even a malformed one, is never shown
        raise ConfigError(
            f"config key '{_dotted(path)}': expected {exc.expected}, got {_toml_repr(shown)} "
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


def _webhooks(given: _Given | None) -> tuple[tuple[WebhookConfig, ...], list[ConfigError]]:
    """The checked ``webhooks`` list; each problem names ``webhooks.<index>.<key>``."""
    if given is None:
        return (), []
    if not isinstance(given.value, list | tuple):
        return (), [_webhook_problem((), "a list of tables ([[webhooks]])", given)]
    problems: list[ConfigError] = []
    hooks: list[WebhookConfig] = []
    names: dict[str, int] = {}
    for index, entry in enumerate(given.value):
        if not isinstance(entry, dict):
            problems.append(_webhook_problem((str(index),), "a table", given, entry))
            continue
        values = _webhook_values(index, entry, given, problems)
        name = values.get("name")
        if name in names:
            problems.append(
                _webhook_problem(
                    (str(index), "name"),
                    f"a name no other webhook has (webhooks.{names[name]} is {name!r})",
                    given,
                    name,
                )
            )
        elif isinstance(name, str):
            names[name] = index
        if not problems:
            hooks.append(WebhookConfig(**values))
    return (tuple(hooks) if not problems else ()), problems


def _webhook_values(
    index: int, entry: dict[str, Any], given: _Given, problems: list[ConfigError]
) -> dict[str, Any]:
    """The checked keys of ``webhooks.<index>``; what is wrong or missing goes to ``problems``."""
    known = {item.name: item for item in fields(WebhookConfig)}
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in known:
            close = closest_name(key, set(known))
            hint = f"; did you mean '{close}'?" if close else ""
            where = f"config key '{WEBHOOKS}.{index}.{key}'"
            problems.append(ConfigError(f"{where}: unknown key (from {given.source}){hint}"))
            continue
        try:
            values[key] = known[key].metadata["check"](value)
        except _Mismatch as exc:
            shown = "***" if key == "secret" else value  # a secret is never shown
            if key == "url" and isinstance(value, str):
                shown = redact_url(value)
            problems.append(_webhook_problem((str(index), key), exc.expected, given, shown))
    for key in ("name", "url", "secret"):
        if key not in entry:
            problems.append(
                ConfigError(f"config key '{WEBHOOKS}.{index}.{key}': missing (from {given.source})")
            )
    return values


def _webhook_problem(path: KeyPath, expected: str, given: _Given, shown: Any = None) -> ConfigError:
    got = f", got {_toml_repr(shown)}" if path else f", got {_toml_repr(given.value)}"
    return ConfigError(
        f"config key '{_dotted((WEBHOOKS, *path))}': expected {expected}{got} (from {given.source})"
    )


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

    agents = {
        name: AgentConfig(
            **{"bin": name, "args": DEFAULT_AGENT_ARGS[name], **table("agents", name)}
        )
        for name in AGENT_NAMES
    }
    if agents["claude"].prices:
        problems.append(
            ConfigError(
                "config key 'agents.claude.prices': claude reports its own cost; "
                f"prices apply to codex only (from {leaves[('agents', 'claude', 'prices')].source})"
            )
        )
    maxlen = {
        key.replace("global", "global_"): value for key, value in table("redis_maxlen").items()
    }
    defaults = _run_defaults({p: g for p, g in leaves.items() if p[0] == _DEFAULTS}, problems)
    webhooks, refused = _webhooks(leaves.get((WEBHOOKS,)))
    problems.extend(refused)
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
        webhooks=webhooks,
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
