"""Where codyd's socket and state live by default, shared by codyd and codyctl.

The rules are docs/configuration.md, "Default paths".

Pure and light (``os`` only): ``codyctl`` imports it at start-up, and it must find
the very socket the daemon listens on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def first_path(value: str | None) -> str | None:
    """The first of systemd's colon-separated directories, or None when unset or empty."""
    first = (value or "").split(":", 1)[0]
    return first or None


def xdg_dir(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "")
    return value if os.path.isabs(value) else None  # the XDG spec says to ignore relative ones


def default_socket_path(env: Mapping[str, str]) -> str:
    """The socket path of docs/configuration.md "Default paths" for this environment."""
    if runtime := first_path(env.get("RUNTIME_DIRECTORY")):
        return os.path.join(runtime, "codyd.sock")
    if xdg := xdg_dir(env, "XDG_RUNTIME_DIR"):
        return os.path.join(xdg, "codyd", "codyd.sock")
    return f"/tmp/codyd-{os.getuid()}/codyd.sock"
