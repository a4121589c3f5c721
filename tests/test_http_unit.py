"""The HTTP listener's pure parts: its config keys and the code-to-status table."""

from __future__ import annotations

import json

import pytest

from codyd.config import ConfigError, load_config
from codyd.errors import ERROR_CLASSES
from codyd.http.adapter import STATUS_OF_CODE, error_headers, status_of


@pytest.mark.parametrize(
    ("given", "address"),
    [
        ("127.0.0.1:8787", "127.0.0.1:8787"),
        (":8787", "127.0.0.1:8787"),
        ("8787", "127.0.0.1:8787"),
        ("[::1]:9000", "[::1]:9000"),
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("", None),
    ],
)
def test_http_listen_is_normalised(given: str, address: str | None) -> None:
    assert load_config(env={"CODYD_HTTP_LISTEN": given}).http_listen == address


@pytest.mark.parametrize("given", ["localhost:http", "host:0", "host:70000", "a b:1", "[::1]"])
def test_a_bad_http_listen_names_the_key(given: str) -> None:
    with pytest.raises(ConfigError, match=r"config key 'http_listen': expected a host:port"):
        load_config(env={"CODYD_HTTP_LISTEN": given})


def test_http_is_off_by_default_and_tokens_are_hidden() -> None:
    assert load_config(env={}).http_listen is None
    config = load_config(
        env={"CODYD_HTTP__READ_TOKEN": "hunter2", "CODYD_HTTP__ANONYMOUS_READ": "true"}
    )
    assert config.http.read_token == "hunter2" and config.http.anonymous_read
    assert "hunter2" not in json.dumps(config.summary())
    assert config.summary()["http"]["read_token"] == "***"


def test_a_bad_token_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(env={"CODYD_HTTP__CONTROL_TOKEN": "has space"})
    assert "http.control_token" in str(refused.value) and "has space" not in str(refused.value)


def test_unknown_http_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"http\.read_tokn"):
        load_config(env={"CODYD_HTTP__READ_TOKN": "x"})


def test_every_protocol_error_code_has_its_status() -> None:
    assert set(ERROR_CLASSES) <= set(STATUS_OF_CODE)
    assert status_of({"code": "shutting_down"}) == 503
    assert error_headers({"code": "overloaded"}) == {"Retry-After": "1"}
    assert status_of({"code": "trimmed"}) == 410
