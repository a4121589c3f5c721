"""Debian's headless chromium, driven by Playwright, and a daemon with HTTP for it to show.

Shared by the dashboard's screenshot and benchmark. Playwright never downloads a
browser here: it launches ``/usr/bin/chromium`` with a fresh profile.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import AGENTS_DIR, PY, Daemon, open_daemon

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "bench-control-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker(*args: object) -> list[str]:
    return [PY, str(AGENTS_DIR / "worker.py"), *map(str, args)]


@contextmanager
def open_http_daemon(*settings: str) -> Iterator[tuple[Daemon, str]]:
    """A daemon listening on a free loopback port with a control token: (daemon, base URL)."""
    port = free_port()
    config = Path(tempfile.mkstemp(prefix="cdyb-dash-", suffix=".toml")[1])
    lines = [f'http_listen = "127.0.0.1:{port}"', *settings, "[http]", f'control_token = "{TOKEN}"']
    config.write_text("\n".join(lines) + "\n")
    try:
        with open_daemon("--config", str(config)) as daemon:
            yield daemon, f"http://127.0.0.1:{port}"
    finally:
        config.unlink(missing_ok=True)


@contextmanager
def open_page(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A page of a fresh headless chromium, with the control token in its session storage."""
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="cdyb-chromium-"))
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=CHROMIUM,
                args=BROWSER_ARGS,
                headless=True,
                viewport={"width": width, "height": height},
            )
            try:
                context.add_init_script(
                    f"sessionStorage.setItem('codyd.token.control', {TOKEN!r});"
                )
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
