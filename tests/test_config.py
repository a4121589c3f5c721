"""Tests of the daemon configuration: sources, precedence, defaults and validation."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from codyd.config import (
    AgentConfig,
    Config,
    ConfigError,
    EventRetention,
    RedisMaxlen,
    UsageConfig,
    default_socket_path,
    default_state_dir,
    load_config,
)

UID = os.getuid()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "codyd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_toml(tmp_path: Path, text: str, **env: str) -> Config:
    return load_config(write_config(tmp_path, text), env={"HOME": str(tmp_path), **env})


def load_env(tmp_path: Path, **env: str) -> Config:
    return load_config(env={"HOME": str(tmp_path), **env})


# --- defaults ------------------------------------------------------------------------------


def test_every_default_when_nothing_is_given(tmp_path: Path) -> None:
    """With no file, no CODYD_* variables and no flags, every key has its documented default."""
    config = load_config(env={"HOME": str(tmp_path)})
    assert config.socket == Path(f"/tmp/codyd-{UID}/codyd.sock")
    assert config.state_dir == tmp_path / ".local" / "state" / "codyd"
    assert config.socket_mode == 0o660
    assert config.socket_group is None
    assert config.redis_url is None
    assert config.key_prefix == "codi:api:"
    assert config.node and config.node.replace("-", "").replace(".", "").replace("_", "").isalnum()
    assert config.log_format is None
    assert config.log_level == "info"
    assert config.heartbeat_s == 5.0
    assert config.lease_ttl_s == 30.0
    assert config.keepalive_s == 15.0
    assert config.max_frame_bytes == 4 * 1024 * 1024
    assert config.max_connections == 256
    assert config.max_active_runs == 64
    assert config.max_turn_log_bytes == 64 * 1024 * 1024
    assert config.max_line_bytes == 1024 * 1024
    assert config.event_retention == EventRetention(max_runs=1000, max_events_per_run=100_000)
    assert config.redis_maxlen == RedisMaxlen(run=10_000, global_=100_000)
    assert config.mirror_groups == ()
    assert config.shutdown_flush_s == 5.0
    assert config.allowed_uids == ()
    assert config.allowed_groups == ()
    assert config.workspace_roots == ()
    assert dict(config.agents) == {
        "codex": AgentConfig(bin="codex", args=("--sandbox", "workspace-write")),
        "claude": AgentConfig(bin="claude", args=("--permission-mode", "acceptEdits")),
    }
    assert dict(config.defaults) == {}


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    """An empty TOML file is valid and changes nothing."""
    assert load_toml(tmp_path, "") == load_env(tmp_path)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RUNTIME_DIRECTORY": "/run/codyd"}, "/run/codyd/codyd.sock"),
        ({"RUNTIME_DIRECTORY": "/run/codyd:/run/other"}, "/run/codyd/codyd.sock"),
        (
            {"RUNTIME_DIRECTORY": "/run/codyd", "XDG_RUNTIME_DIR": "/run/user/1000"},
            "/run/codyd/codyd.sock",
        ),
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/codyd/codyd.sock"),
        (
            {"RUNTIME_DIRECTORY": "", "XDG_RUNTIME_DIR": "/run/user/7"},
            "/run/user/7/codyd/codyd.sock",
        ),
        ({"XDG_RUNTIME_DIR": "relative/dir"}, f"/tmp/codyd-{UID}/codyd.sock"),
        ({"XDG_RUNTIME_DIR": ""}, f"/tmp/codyd-{UID}/codyd.sock"),
        ({}, f"/tmp/codyd-{UID}/codyd.sock"),
    ],
)
def test_default_socket_path(env: dict[str, str], expected: str) -> None:
    """The socket defaults to systemd's runtime directory, then XDG_RUNTIME_DIR, then /tmp."""
    assert default_socket_path(env) == Path(expected)
    assert load_config(env={"HOME": "/home/x", **env}).socket == Path(expected)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STATE_DIRECTORY": "/var/lib/codyd"}, "/var/lib/codyd"),
        ({"STATE_DIRECTORY": "/var/lib/codyd:/var/lib/more"}, "/var/lib/codyd"),
        (
            {"STATE_DIRECTORY": "/var/lib/codyd", "XDG_STATE_HOME": "/home/x/.state"},
            "/var/lib/codyd",
        ),
        ({"XDG_STATE_HOME": "/home/x/.state"}, "/home/x/.state/codyd"),
        ({"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/s"}, "/s/codyd"),
        ({"XDG_STATE_HOME": "relative"}, "/home/x/.local/state/codyd"),
        ({}, "/home/x/.local/state/codyd"),
    ],
)
def test_default_state_dir(env: dict[str, str], expected: str) -> None:
    """The state dir defaults to systemd's state directory, then XDG_STATE_HOME, then ~."""
    assert default_state_dir({"HOME": "/home/x", **env}) == Path(expected)
    assert load_config(env={"HOME": "/home/x", **env}).state_dir == Path(expected)


def test_default_state_dir_without_home_uses_the_user_home() -> None:
    """Without HOME in the mapping, the state dir is under the user's home directory."""
    assert default_state_dir({}) == Path.home() / ".local" / "state" / "codyd"


# --- sources and precedence ----------------------------------------------------------------

FILE = """
socket = "/file/codyd.sock"
node = "from-file"
max_connections = 10
key_prefix = "file:"
[event_retention]
max_runs = 5
[agents.codex]
bin = "/file/codex"
args = ["--sandbox", "workspace-write"]
"""


def test_file_values_are_used(tmp_path: Path) -> None:
    """Keys from the TOML file replace the defaults, tables only where given."""
    config = load_toml(tmp_path, FILE)
    assert config.socket == Path("/file/codyd.sock")
    assert config.node == "from-file"
    assert config.max_connections == 10
    assert config.event_retention == EventRetention(max_runs=5, max_events_per_run=100_000)
    assert config.agents["codex"] == AgentConfig("/file/codex", ("--sandbox", "workspace-write"))
    assert config.agents["claude"] == AgentConfig("claude", ("--permission-mode", "acceptEdits"))


def test_environment_overrides_file_and_flags_override_both(tmp_path: Path) -> None:
    """Precedence is file < environment < flags, leaf by leaf, so tables merge."""
    path = write_config(tmp_path, FILE)
    env = {
        "HOME": str(tmp_path),
        "CODYD_NODE": "from-env",
        "CODYD_MAX_CONNECTIONS": "20",
        "CODYD_AGENTS__CODEX__BIN": "/env/codex",
        "CODYD_EVENT_RETENTION__MAX_EVENTS_PER_RUN": "7",
    }
    flags = {"node": "from-flag", "socket": None, "state_dir": tmp_path / "state"}
    config = load_config(path, env=env, flags=flags)
    assert config.node == "from-flag"
    assert config.max_connections == 20
    assert config.key_prefix == "file:"
    assert config.socket == Path("/file/codyd.sock")  # a None flag means "not given"
    assert config.state_dir == tmp_path / "state"
    assert config.agents["codex"] == AgentConfig("/env/codex", ("--sandbox", "workspace-write"))
    assert config.event_retention == EventRetention(max_runs=5, max_events_per_run=7)


def test_config_file_comes_from_codyd_config(tmp_path: Path) -> None:
    """Without a file argument, CODYD_CONFIG names the file; it is not itself a key."""
    path = write_config(tmp_path, 'node = "via-env-file"')
    config = load_config(env={"HOME": str(tmp_path), "CODYD_CONFIG": str(path)})
    assert config.node == "via-env-file"


def test_config_file_argument_wins_over_codyd_config(tmp_path: Path) -> None:
    """The --config file is read instead of the one CODYD_CONFIG names."""
    chosen = write_config(tmp_path, 'node = "chosen"')
    env = {"HOME": str(tmp_path), "CODYD_CONFIG": str(tmp_path / "absent.toml")}
    assert load_config(chosen, env=env).node == "chosen"


def test_os_environ_is_the_default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With env=None the process environment is read."""
    for name in list(os.environ):
        if name.startswith("CODYD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CODYD_NODE", "from-environ")
    assert load_config().node == "from-environ"


def test_agent_facing_variables_are_ignored(tmp_path: Path) -> None:
    """CODYD_RUN_ID, CODYD_TURN and CODYD_WORKSPACE are set for agents and are not config."""
    config = load_env(tmp_path, CODYD_RUN_ID="r1", CODYD_TURN="3", CODYD_WORKSPACE="/w")
    assert config == load_env(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "attribute", "expected"),
    [
        ("CODYD_MAX_CONNECTIONS", "10", "max_connections", 10),
        ("CODYD_HEARTBEAT_S", "2", "heartbeat_s", 2.0),
        ("CODYD_HEARTBEAT_S", "0.5", "heartbeat_s", 0.5),
        ("CODYD_ALLOWED_UIDS", "[1000, 1001]", "allowed_uids", (1000, 1001)),
        ("CODYD_ALLOWED_GROUPS", '["dev", 27]', "allowed_groups", ("dev", 27)),
        ("CODYD_MIRROR_GROUPS", '["ui"]', "mirror_groups", ("ui",)),
        ("CODYD_WORKSPACE_ROOTS", '["/srv/ws"]', "workspace_roots", (Path("/srv/ws"),)),
        ("CODYD_SOCKET_MODE", '"0600"', "socket_mode", 0o600),
        ("CODYD_SOCKET_MODE", "0o640", "socket_mode", 0o640),
        ("CODYD_SOCKET_MODE", "0600", "socket_mode", 0o600),
        ("CODYD_SOCKET_GROUP", "codyd", "socket_group", "codyd"),
        ("CODYD_SOCKET_GROUP", "1000", "socket_group", 1000),
        ("CODYD_SOCKET", "/run/x.sock", "socket", Path("/run/x.sock")),
        ("CODYD_STATE_DIR", "/var/x", "state_dir", Path("/var/x")),
        ("CODYD_KEY_PREFIX", "10", "key_prefix", "10"),
        ("CODYD_KEY_PREFIX", '"quoted"', "key_prefix", '"quoted"'),
        ("CODYD_NODE", "box-1.example", "node", "box-1.example"),
        ("CODYD_LOG_FORMAT", "console", "log_format", "console"),
        ("CODYD_LOG_LEVEL", "WARNING", "log_level", "warning"),
        ("CODYD_REDIS_URL", "redis://localhost:6379/0", "redis_url", "redis://localhost:6379/0"),
        ("CODYD_REDIS_URL", "", "redis_url", None),
        ("CODYD_SHUTDOWN_FLUSH_S", "0", "shutdown_flush_s", 0.0),
    ],
)
def test_environment_values(
    tmp_path: Path, name: str, text: str, attribute: str, expected: Any
) -> None:
    """Str-typed keys take the variable as is; others parse it as a TOML value."""
    assert getattr(load_env(tmp_path, **{name: text}), attribute) == expected


def test_environment_nested_keys(tmp_path: Path) -> None:
    """Nested keys are joined by a double underscore."""
    config = load_env(
        tmp_path,
        CODYD_AGENTS__CODEX__ARGS='["--sandbox", "workspace-write"]',
        CODYD_AGENTS__CLAUDE__BIN="/opt/claude",
        CODYD_AGENTS__CLAUDE__USAGE="session_total",
        CODYD_REDIS_MAXLEN__GLOBAL="50",
        CODYD_REDIS_MAXLEN__RUN="5",
        CODYD_EVENT_RETENTION__MAX_RUNS="3",
    )
    assert config.agents["codex"] == AgentConfig("codex", ("--sandbox", "workspace-write"))
    both = UsageConfig("session_total", "session_total")
    assert config.agents["claude"] == AgentConfig(
        "/opt/claude", ("--permission-mode", "acceptEdits"), both
    )
    assert config.redis_maxlen == RedisMaxlen(run=5, global_=50)
    assert config.event_retention.max_runs == 3


def test_environment_table_as_inline_table(tmp_path: Path) -> None:
    """A whole table may be given as a TOML inline table and merges with the file."""
    config = load_toml(
        tmp_path,
        "[redis_maxlen]\nrun = 9\n",
        CODYD_REDIS_MAXLEN="{global = 90}",
    )
    assert config.redis_maxlen == RedisMaxlen(run=9, global_=90)


def test_flags_accept_dotted_keys(tmp_path: Path) -> None:
    """A flag may name a nested key by its dotted name."""
    config = load_config(env={"HOME": str(tmp_path)}, flags={"agents.codex.bin": "/x/codex"})
    assert config.agents["codex"].bin == "/x/codex"


# --- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("max_conections = 3", "max_conections"),
        ("[event_retention]\nmax_run = 3", "event_retention.max_run"),
        ("[redis_maxlen]\nglobals = 3", "redis_maxlen.globals"),
        ("[agents.gemini]\nbin = 'g'", "agents.gemini"),
        ("[agents.codex]\nbinn = 'c'", "agents.codex.binn"),
        ("[agents.claude]\nusage_mode = 'per_turn'", "agents.claude.usage_mode"),
    ],
)
def test_unknown_key_in_file(tmp_path: Path, text: str, key: str) -> None:
    """An unknown key at any level of the file is an error naming the dotted key and file."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"HOME": str(tmp_path)})
    assert f"config key '{key}': unknown key (from file {path})" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("CODYD_MAX_CONECTIONS", "max_conections"),
        ("CODYD_EVENT_RETENTION__MAX_RUN", "event_retention.max_run"),
        ("CODYD_REDIS_MAXLEN__GLOBALS", "redis_maxlen.globals"),
        ("CODYD_AGENTS__GEMINI__BIN", "agents.gemini"),
        ("CODYD_AGENTS__CODEX__BINN", "agents.codex.binn"),
        ("CODYD_SOCKET__PATH", "socket.path"),
    ],
)
def test_unknown_key_in_environment(tmp_path: Path, name: str, key: str) -> None:
    """An unknown CODYD_* variable is an error naming the key and the variable."""
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, **{name: "1"})
    assert f"config key '{key}': unknown key (from environment {name})" in str(caught.value)


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    """A typo is answered with the key that was probably meant."""
    with pytest.raises(ConfigError, match=r"did you mean 'agents\.codex\.bin'\?"):
        load_toml(tmp_path, "[agents.codex]\nbinn = 'c'")


def test_unknown_flag(tmp_path: Path) -> None:
    """An unknown flag key is an error naming the flag."""
    with pytest.raises(ConfigError, match=r"config key 'sockett': unknown key \(from flag"):
        load_config(env={"HOME": str(tmp_path)}, flags={"sockett": "/x"})


def test_environment_variable_with_an_empty_part(tmp_path: Path) -> None:
    """A variable like CODYD_AGENTS____BIN names no key and is refused by name."""
    with pytest.raises(ConfigError, match="CODYD_AGENTS____BIN"):
        load_env(tmp_path, CODYD_AGENTS____BIN="x")


# --- bad values ----------------------------------------------------------------------------

BAD_VALUES = [
    ("socket", "socket = 3", "a non-empty string", "3"),
    ("socket", 'socket = ""', "a non-empty string", "''"),
    ("state_dir", "state_dir = true", "a non-empty string", "true"),
    ("socket_mode", 'socket_mode = "rw"', "a permission mode", "'rw'"),
    ("socket_mode", "socket_mode = 660", "a permission mode", "660"),
    ("socket_mode", "socket_mode = true", "a permission mode", "true"),
    ("socket_group", 'socket_group = ""', "a group name or a gid", "''"),
    ("socket_group", "socket_group = -1", "a group name or a gid", "-1"),
    ("socket_group", "socket_group = 1.5", "a group name or a gid", "1.5"),
    ("redis_url", 'redis_url = "http://x"', "a URL starting with redis://", "'http://x'"),
    ("redis_url", "redis_url = 6379", "a URL starting with redis://", "6379"),
    ("key_prefix", "key_prefix = 1", "a string", "1"),
    ("node", 'node = "my host"', "a non-empty name", "'my host'"),
    ("node", 'node = ""', "a non-empty name", "''"),
    ("log_format", 'log_format = "xml"', "one of 'json', 'console'", "'xml'"),
    ("log_level", 'log_level = "verbose"', "one of 'debug', 'info'", "'verbose'"),
    ("heartbeat_s", "heartbeat_s = 0", "a number > 0", "0"),
    ("heartbeat_s", "heartbeat_s = true", "a number > 0", "true"),
    ("heartbeat_s", 'heartbeat_s = "5"', "a number > 0", "'5'"),
    ("heartbeat_s", "heartbeat_s = nan", "a number > 0", "nan"),
    ("lease_ttl_s", "lease_ttl_s = -1.5", "a number > 0", "-1.5"),
    ("lease_ttl_s", "lease_ttl_s = inf", "a number > 0", "inf"),
    ("keepalive_s", "keepalive_s = []", "a number > 0", "[]"),
    ("max_frame_bytes", "max_frame_bytes = 1023", "an integer from 1024 to", "1023"),
    ("max_frame_bytes", "max_frame_bytes = 4294967296", "an integer from 1024 to", "4294967296"),
    ("max_connections", 'max_connections = "3"', "an integer >= 1", "'3'"),
    ("max_connections", "max_connections = 0", "an integer >= 1", "0"),
    ("max_connections", "max_connections = true", "an integer >= 1", "true"),
    ("max_connections", "max_connections = 2.0", "an integer >= 1", "2.0"),
    ("max_active_runs", "max_active_runs = 0", "an integer >= 1", "0"),
    ("max_turn_log_bytes", "max_turn_log_bytes = 100", "an integer >= 1024", "100"),
    ("max_line_bytes", "max_line_bytes = 255", "an integer >= 256", "255"),
    ("event_retention", "event_retention = 5", "a table", "5"),
    ("event_retention.max_runs", "event_retention.max_runs = 0", "an integer >= 1", "0"),
    (
        "event_retention.max_events_per_run",
        "event_retention.max_events_per_run = false",
        "an integer >= 1",
        "false",
    ),
    ("redis_maxlen", 'redis_maxlen = "big"', "a table", "'big'"),
    ("redis_maxlen.run", "redis_maxlen.run = -5", "an integer >= 1", "-5"),
    ("redis_maxlen.global", "redis_maxlen.global = 1.5", "an integer >= 1", "1.5"),
    ("mirror_groups", 'mirror_groups = "ui"', "a list of non-empty strings", "'ui'"),
    ("mirror_groups", 'mirror_groups = ["ui", ""]', "a list of non-empty strings", "['ui', '']"),
    ("shutdown_flush_s", "shutdown_flush_s = -0.1", "a number >= 0", "-0.1"),
    ("allowed_uids", "allowed_uids = [1000, -1]", "a list of uids", "[1000, -1]"),
    ("allowed_uids", "allowed_uids = 1000", "a list of uids", "1000"),
    ("allowed_uids", 'allowed_uids = ["1000"]', "a list of uids", "['1000']"),
    ("allowed_groups", "allowed_groups = [true]", "a list of group names or gids", "[True]"),
    ("workspace_roots", 'workspace_roots = ["rel/path"]', "a list of absolute paths", "['rel"),
    ("agents", "agents = []", "a table", "[]"),
    ("agents.codex", 'agents.codex = "codex"', "a table", "'codex'"),
    ("agents.codex.bin", 'agents.codex.bin = ""', "a non-empty string", "''"),
    ("agents.codex.args", 'agents.codex.args = "--yolo"', "a list of strings", "'--yolo'"),
    ("agents.claude.args", "agents.claude.args = [1]", "a list of strings", "[1]"),
    ("agents.claude.usage", 'agents.claude.usage = "total"', "one of 'per_turn'", "'total'"),
    ("defaults", "defaults = 3", "a table", "3"),
]


@pytest.mark.parametrize(("key", "text", "expected", "given"), BAD_VALUES)
def test_bad_value_in_file(tmp_path: Path, key: str, text: str, expected: str, given: str) -> None:
    """A wrong value names the dotted key, what was expected, what was given and the file."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"HOME": str(tmp_path)})
    message = str(caught.value)
    assert message.startswith(f"config key '{key}': expected {expected}")
    assert f"got {given}" in message
    assert message.endswith(f"(from file {path})")


@pytest.mark.parametrize(
    ("name", "text", "key", "expected"),
    [
        ("CODYD_MAX_CONNECTIONS", "abc", "max_connections", "an integer >= 1, got 'abc'"),
        ("CODYD_MAX_CONNECTIONS", '"10"', "max_connections", "an integer >= 1, got '10'"),
        ("CODYD_HEARTBEAT_S", "true", "heartbeat_s", "a number > 0, got true"),
        ("CODYD_ALLOWED_UIDS", "1000,1001", "allowed_uids", "a list of uids"),
        ("CODYD_SOCKET_MODE", "0999", "socket_mode", "a permission mode"),
        ("CODYD_SOCKET_MODE", "1777", "socket_mode", "a permission mode"),
        ("CODYD_AGENTS__CODEX__ARGS", "--yolo", "agents.codex.args", "a list of strings"),
        ("CODYD_AGENTS__CODEX__USAGE", "total", "agents.codex.usage", "one of 'per_turn'"),
        ("CODYD_EVENT_RETENTION", "5", "event_retention", "a table, got 5"),
        ("CODYD_LOG_LEVEL", "loud", "log_level", "one of 'debug'"),
        ("CODYD_NODE", "a/b", "node", "a non-empty name"),
    ],
)
def test_bad_value_in_environment(
    tmp_path: Path, name: str, text: str, key: str, expected: str
) -> None:
    """A wrong environment value names the key, the expectation and the variable."""
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, **{name: text})
    message = str(caught.value)
    assert message.startswith(f"config key '{key}': expected {expected}")
    assert message.endswith(f"(from environment {name})")


def test_bad_environment_value_message_in_full(tmp_path: Path) -> None:
    """The message of a bad environment value reads as one sentence."""
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, CODYD_MAX_CONNECTIONS="abc")
    assert str(caught.value) == (
        "config key 'max_connections': expected an integer >= 1, got 'abc' "
        "(from environment CODYD_MAX_CONNECTIONS)"
    )


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    """A wrong flag value names the flag it came from."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={"HOME": str(tmp_path)}, flags={"log_format": "xml"})
    assert str(caught.value).endswith("got 'xml' (from flag --log-format)")


def test_a_later_source_can_fix_an_earlier_bad_value(tmp_path: Path) -> None:
    """Only the winning value of each key is checked."""
    config = load_toml(tmp_path, "max_connections = 0", CODYD_MAX_CONNECTIONS="4")
    assert config.max_connections == 4


def test_an_int_is_fine_where_a_float_is_expected(tmp_path: Path) -> None:
    """Float keys accept integers and store floats."""
    config = load_toml(tmp_path, "heartbeat_s = 2\nshutdown_flush_s = 0")
    assert config.heartbeat_s == 2.0 and isinstance(config.heartbeat_s, float)
    assert config.shutdown_flush_s == 0.0 and isinstance(config.shutdown_flush_s, float)


def test_full_file(tmp_path: Path) -> None:
    """Every key can be set from the file."""
    config = load_toml(
        tmp_path,
        """
        socket = "/run/c.sock"
        state_dir = "/var/lib/c"
        socket_mode = "0666"
        socket_group = "codyd"
        redis_url = "rediss://redis.example:6380/1"
        key_prefix = "x:"
        node = "n1"
        log_format = "json"
        log_level = "Debug"
        heartbeat_s = 1.5
        lease_ttl_s = 9
        keepalive_s = 3
        max_frame_bytes = 2048
        max_connections = 2
        max_active_runs = 3
        max_turn_log_bytes = 4096
        max_line_bytes = 512
        mirror_groups = ["ui", "audit"]
        shutdown_flush_s = 0
        allowed_uids = [1000]
        allowed_groups = ["dev", 27]
        workspace_roots = ["/srv/ws", "/home/w"]
        event_retention = {max_runs = 4, max_events_per_run = 40}
        redis_maxlen = {run = 5, global = 50}
        [agents.codex]
        bin = "/opt/codex"
        args = ["--full-auto"]
        usage = "session_total"
        [agents.claude]
        args = ["--permission-mode", "acceptEdits"]
        """,
    )
    assert config == Config(
        socket=Path("/run/c.sock"),
        state_dir=Path("/var/lib/c"),
        socket_mode=0o666,
        socket_group="codyd",
        redis_url="rediss://redis.example:6380/1",
        key_prefix="x:",
        node="n1",
        log_format="json",
        log_level="debug",
        heartbeat_s=1.5,
        lease_ttl_s=9.0,
        keepalive_s=3.0,
        max_frame_bytes=2048,
        max_connections=2,
        max_active_runs=3,
        max_turn_log_bytes=4096,
        max_line_bytes=512,
        event_retention=EventRetention(4, 40),
        redis_maxlen=RedisMaxlen(5, 50),
        mirror_groups=("ui", "audit"),
        shutdown_flush_s=0.0,
        allowed_uids=(1000,),
        allowed_groups=("dev", 27),
        workspace_roots=(Path("/srv/ws"), Path("/home/w")),
        agents=config.agents,
        defaults={},
    )
    assert dict(config.agents) == {
        "codex": AgentConfig(
            "/opt/codex", ("--full-auto",), UsageConfig("session_total", "session_total")
        ),
        "claude": AgentConfig("claude", ("--permission-mode", "acceptEdits")),
    }


# --- socket_mode and redis_url ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ('"0660"', 0o660),
        ('"0600"', 0o600),
        ('"666"', 0o666),
        ('"0o750"', 0o750),
        ('"0"', 0),
        ('"0777"', 0o777),
        ("0o640", 0o640),
        ("384", 0o600),
        ("0", 0),
        ("511", 0o777),
    ],
)
def test_socket_mode_as_string_or_int(tmp_path: Path, text: str, mode: int) -> None:
    """socket_mode is an octal string or an integer up to 0o777."""
    assert load_toml(tmp_path, f"socket_mode = {text}").socket_mode == mode


@pytest.mark.parametrize("text", ['"0999"', '"01777"', '"rw-rw----"', '""', "512", "-1", "0o1000"])
def test_socket_mode_out_of_range(tmp_path: Path, text: str) -> None:
    """Modes beyond 0o777 or not octal are refused."""
    with pytest.raises(ConfigError, match=r"config key 'socket_mode': expected a permission mode"):
        load_toml(tmp_path, f"socket_mode = {text}")


@pytest.mark.parametrize(
    "url",
    ["redis://localhost", "rediss://u:p@h:6380/2", "unix:///run/redis/redis.sock?db=1"],
)
def test_redis_url_schemes(tmp_path: Path, url: str) -> None:
    """redis://, rediss:// and unix:// URLs are accepted as given."""
    assert load_toml(tmp_path, f'redis_url = "{url}"').redis_url == url


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "REDIS", "redis:/x"])
def test_redis_url_bad_scheme(tmp_path: Path, url: str) -> None:
    """Other URLs are refused."""
    with pytest.raises(ConfigError, match=r"config key 'redis_url': expected a URL starting with"):
        load_toml(tmp_path, f'redis_url = "{url}"')


def test_bad_redis_url_error_hides_the_password(tmp_path: Path) -> None:
    """Even a refused URL does not leak its password into the message."""
    with pytest.raises(ConfigError) as caught:
        load_toml(tmp_path, 'redis_url = "http://user:hunter2@host"')
    assert "hunter2" not in str(caught.value)
    assert "user:***@host" in str(caught.value)


def test_empty_redis_url_in_environment_disables_redis(tmp_path: Path) -> None:
    """CODYD_REDIS_URL= switches off a Redis configured in the file."""
    config = load_toml(tmp_path, 'redis_url = "redis://h"', CODYD_REDIS_URL="")
    assert config.redis_url is None


# --- summary -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:hunter2@host", "rediss://:***@host"),
        ("unix:///run/r.sock?db=1&password=hunter2", "unix:///run/r.sock?db=1&***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host", "redis://user@host"),
    ],
)
def test_summary_hides_the_redis_password(tmp_path: Path, url: str, shown: str) -> None:
    """The start-up summary replaces any Redis password with ***."""
    summary = load_toml(tmp_path, f'redis_url = "{url}"').summary()
    assert summary["redis_url"] == shown.replace("&***", "&password=***")
    assert "hunter2" not in json.dumps(summary)


def test_summary_has_every_key_as_plain_values(tmp_path: Path) -> None:
    """The summary holds every key, JSON-ready, with the socket mode in octal."""
    config = load_toml(tmp_path, 'socket_mode = "0640"\nworkspace_roots = ["/srv"]')
    summary = config.summary()
    assert set(summary) == set(Config.__dataclass_fields__)
    assert summary["socket_mode"] == "0640"
    assert summary["workspace_roots"] == ["/srv"]
    assert summary["socket"] == str(config.socket)
    assert summary["redis_maxlen"] == {"run": 10_000, "global": 100_000}
    assert summary["agents"]["codex"] == {
        "bin": "codex",
        "args": ["--sandbox", "workspace-write"],
        "usage": {"tokens": None, "cost": None},
        "prices": {},
        "budget_flag": True,
    }
    assert json.loads(json.dumps(summary)) == summary


def test_summary_hides_default_environment_values(tmp_path: Path) -> None:
    """Values of the agents' default environment never reach the start-up log."""
    config = load_toml(tmp_path, '[defaults.env]\nAPI_TOKEN = "hunter2"')
    assert config.defaults["env"]["API_TOKEN"] == "hunter2"
    summary = config.summary()
    assert summary["defaults"]["env"] == {"API_TOKEN": "***"}
    assert "hunter2" not in json.dumps(summary)


# --- the file itself -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file is an error naming it."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"HOME": str(tmp_path)})
    assert str(caught.value).startswith(f"config file '{path}' (from flag --config): cannot read")


def test_missing_file_named_by_codyd_config(tmp_path: Path) -> None:
    """A missing file named by CODYD_CONFIG says so."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, CODYD_CONFIG=str(path))
    assert f"config file '{path}' (from environment CODYD_CONFIG)" in str(caught.value)


def test_toml_syntax_error(tmp_path: Path) -> None:
    """A file that is not TOML is an error naming it and the position."""
    path = write_config(tmp_path, "node = \nmax_connections = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"HOME": str(tmp_path)})
    assert str(caught.value).startswith(f"config file '{path}' (from flag --config): invalid TOML")
    assert "line 1" in str(caught.value)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are an error naming the file."""
    path = tmp_path / "codyd.toml"
    path.write_bytes(b'node = "\xff"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, env={"HOME": str(tmp_path)})


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    """A directory given as the config file is an error naming it."""
    with pytest.raises(ConfigError, match=f"config file '{tmp_path}'"):
        load_config(tmp_path, env={"HOME": str(tmp_path)})


# --- run-spec defaults ---------------------------------------------------------------------


def test_run_spec_defaults_from_file(tmp_path: Path) -> None:
    """defaults.* holds validated run-spec defaults, nested maps included."""
    config = load_toml(
        tmp_path,
        """
        [defaults]
        agent = "codex"
        max_turns = 5
        turn_timeout_s = 60
        labels = {team = "core"}
        [defaults.completion]
        pattern = "DONE"
        """,
    )
    assert config.defaults["agent"] == "codex"
    assert config.defaults["max_turns"] == 5
    assert config.defaults["turn_timeout_s"] == 60
    assert dict(config.defaults["labels"]) == {"team": "core"}
    assert dict(config.defaults["completion"]) == {"pattern": "DONE"}
    assert set(config.defaults) == {"agent", "max_turns", "turn_timeout_s", "labels", "completion"}


def test_run_spec_defaults_from_environment(tmp_path: Path) -> None:
    """CODYD_DEFAULTS__* set run-spec defaults, merging nested maps with the file."""
    config = load_toml(
        tmp_path,
        '[defaults]\nmax_turns = 5\n[defaults.completion]\nstop_file = "STOP"\n',
        CODYD_DEFAULTS__MAX_TURNS="7",
        CODYD_DEFAULTS__MODEL="o3",
        CODYD_DEFAULTS__COMPLETION__PATTERN="^ALL DONE$",
        CODYD_DEFAULTS__RESUME_SESSION="false",
    )
    assert config.defaults["max_turns"] == 7
    assert config.defaults["model"] == "o3"
    assert config.defaults["resume_session"] is False
    assert dict(config.defaults["completion"]) == {"stop_file": "STOP", "pattern": "^ALL DONE$"}


def test_run_spec_default_string_that_looks_like_a_number(tmp_path: Path) -> None:
    """String-typed run-spec defaults take the variable as is."""
    assert load_env(tmp_path, CODYD_DEFAULTS__MODEL="4").defaults["model"] == "4"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[defaults]\nmax_turns = "3"', "defaults.max_turns"),
        ("[defaults]\nmax_turns = 0", "defaults.max_turns"),
        ("[defaults]\nresume_session = 1", "defaults.resume_session"),
        ('[defaults]\nworkspace = "/w"', "defaults.workspace"),
        ('[defaults]\nprompt = "hi"', "defaults.prompt"),
        ("[defaults]\nmax_turnz = 3", "defaults.max_turnz"),
        ("[defaults.completion]\nnope = 3", "defaults.completion.nope"),
        ("[defaults.budget]\nmax_tokens = -1", "defaults.budget.max_tokens"),
    ],
)
def test_bad_run_spec_default_in_file(tmp_path: Path, text: str, key: str) -> None:
    """A bad run-spec default names defaults.<field> and the file."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"HOME": str(tmp_path)})
    assert str(caught.value).startswith(f"config key '{key}': ")
    assert str(caught.value).endswith(f"(from file {path})")


def test_bad_run_spec_default_in_environment(tmp_path: Path) -> None:
    """A bad run-spec default from the environment names the variable."""
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, CODYD_DEFAULTS__MAX_TURNS="abc")
    message = str(caught.value)
    assert message.startswith("config key 'defaults.max_turns': expected an integer >= 1")
    assert message.endswith("(from environment CODYD_DEFAULTS__MAX_TURNS)")


# --- every problem at once -------------------------------------------------------------------


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    """An unknown key, a wrong type and a bad default are all named in one error."""
    text = """
        heartbeat_s = "often"
        sockett = "/tmp/x.sock"
        [defaults]
        max_turns = 0
        [defaults.completion]
        stop_file = "/etc/stop"
    """
    with pytest.raises(ConfigError) as caught:
        load_toml(tmp_path, text, CODYD_LEASE_TTL_S="-1")
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert str(caught.value) == "\n".join(problems)
    for key in ("heartbeat_s", "sockett", "defaults.max_turns", "defaults.completion.stop_file"):
        assert any(f"config key '{key}'" in line for line in problems), (key, problems)
    assert any(
        "lease_ttl_s" in line and "environment CODYD_LEASE_TTL_S" in line for line in problems
    )


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("defaults.completion", 'stop_file = "/etc/stop"', "defaults.completion.stop_file"),
        ("defaults.completion", 'stop_file = "../outside/.stop"', "defaults.completion.stop_file"),
        ("defaults", 'context_files = ["NOTES.md", "/etc/passwd"]', "defaults.context_files.1"),
        ("defaults", 'watch_logs = [".."]', "defaults.watch_logs.0"),
    ],
)
def test_default_paths_that_no_workspace_can_hold_are_refused(
    tmp_path: Path, table: str, line: str, key: str
) -> None:
    """A default path must fit every workspace: relative, and never climbing out of it."""
    with pytest.raises(ConfigError) as caught:
        load_toml(tmp_path, f"[{table}]\n{line}\n")
    assert f"config key '{key}': expected a workspace-relative path" in str(caught.value)
    assert f"file {tmp_path / 'codyd.toml'}" in str(caught.value)


def test_default_paths_inside_every_workspace_are_accepted(tmp_path: Path) -> None:
    """Relative default paths, even ones that step down and back up, are fine."""
    config = load_toml(
        tmp_path,
        '[defaults]\ncontext_files = ["docs/../NOTES.md"]\n'
        '[defaults.completion]\nstop_file = ".cody/.stop"\n',
    )
    assert config.defaults["completion"] == {"stop_file": ".cody/.stop"}
    assert config.defaults["context_files"] == ("docs/../NOTES.md",)


def test_every_field_of_config_is_a_key_or_a_table() -> None:
    """The key table is read from Config's fields: none is missing, none is extra."""
    import codyd.config as config_module

    top = {path[0] for path in (*config_module._KEYS, *config_module._TABLES)}
    assert top == {item.name for item in fields(Config)} - {"defaults", "webhooks"}
    assert ("redis_maxlen", "global") in config_module._KEYS
    assert ("agents", "claude", "usage") in config_module._KEYS
    assert config_module._KEYS[("socket",)].verbatim
    assert not config_module._KEYS[("max_connections",)].verbatim


# --- webhooks ------------------------------------------------------------------------------

WEBHOOK = '[[webhooks]]\nname = "ops"\nurl = "https://hooks.example/codyd"\nsecret = "{secret}"\n'


def test_a_webhook_gets_the_default_events_and_timeout(tmp_path: Path) -> None:
    """Only name, url and secret are needed; a whsec_ secret is used decoded."""
    config = load_toml(tmp_path, WEBHOOK.format(secret="whsec_aGVsbG8="))
    (hook,) = config.webhooks
    assert hook.events == ("attention", "run_completed", "run_failed", "run_cancelled")
    assert hook.timeout_s == 10.0 and hook.backoff_s == 1.0 and hook.backoff_max_s == 600.0
    assert hook.key == b"hello"
    assert load_toml(tmp_path, WEBHOOK.format(secret="plain")).webhooks[0].key == b"plain"


def test_webhooks_from_the_environment_and_all_events(tmp_path: Path) -> None:
    config = load_env(
        tmp_path,
        CODYD_WEBHOOKS='[{name = "a", url = "http://127.0.0.1:9/x", secret = "s", events = ["*"]}]',
    )
    assert config.webhooks[0].all_events


def test_webhook_secrets_are_never_shown(tmp_path: Path) -> None:
    """Not in the summary, not in a repr, not in an error about the secret itself."""
    config = load_toml(tmp_path, WEBHOOK.format(secret="hunter2hunter2"))
    assert "hunter2" not in json.dumps(config.summary()) + repr(config)
    assert config.summary()["webhooks"][0]["secret"] == "***"
    with pytest.raises(ConfigError) as caught:
        load_toml(tmp_path, WEBHOOK.format(secret="whsec_hunter2!"))
    assert "config key 'webhooks.0.secret': expected whsec_ followed by" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ('url = "ftp://x"', "webhooks.0.url", "an http:// or https:// URL"),
        ('url = "https://"', "webhooks.0.url", "an http:// or https:// URL"),
        ('secret = ""', "webhooks.0.secret", "a non-empty string"),
        ("events = []", "webhooks.0.events", "a non-empty list of event types"),
        ('events = ["Run Failed"]', "webhooks.0.events", "a non-empty list of event types"),
        ("timeout_s = 0", "webhooks.0.timeout_s", "a number > 0"),
        ('name = "a b"', "webhooks.0.name", "a non-empty name of letters"),
        ("timout_s = 3", "webhooks.0.timout_s", "unknown key"),
    ],
)
def test_a_bad_webhook_names_its_key(tmp_path: Path, extra: str, key: str, expected: str) -> None:
    entry = {"name": '"ops"', "url": '"https://h/x"', "secret": '"s"'}
    extra_key, _, value = extra.partition(" = ")
    entry[extra_key] = value
    text = "[[webhooks]]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items())
    with pytest.raises(ConfigError) as caught:
        load_toml(tmp_path, text)
    assert f"config key '{key}': " in str(caught.value)
    assert expected in str(caught.value)


def test_webhook_names_are_unique_and_keys_required(tmp_path: Path) -> None:
    text = WEBHOOK.format(secret="s") * 2 + '[[webhooks]]\nname = "x"\n'
    with pytest.raises(ConfigError) as caught:
        load_toml(tmp_path, text)
    problems = caught.value.problems
    assert any(
        p.startswith("config key 'webhooks.1.name': expected a name no other") for p in problems
    )
    assert any(p.startswith("config key 'webhooks.2.url': missing") for p in problems)
    assert any(p.startswith("config key 'webhooks.2.secret': missing") for p in problems)


def test_webhooks_must_be_a_list_given_whole(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config key 'webhooks': expected a list of tables"):
        load_toml(tmp_path, "webhooks = 3")
    with pytest.raises(ConfigError, match=r"config key 'webhooks.0.url': webhooks is one list"):
        load_env(tmp_path, CODYD_WEBHOOKS__0__URL="http://x")
