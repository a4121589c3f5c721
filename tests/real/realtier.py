"""The real-agent tier: the installed codex and claude CLIs, pointed at loopback stand-ins.

``scripts/test --real-agents`` installs the pinned CLIs and sets ``CODYTEST_CODEX_BIN`` and
``CODYTEST_CLAUDE_BIN``; without them every test of this tier is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, short_tempdir, wait_until

HERE = Path(__file__).parent
CODEX_MODEL = "gpt-5.5"  # a model 0.171.0 has metadata for (others print an error item)
CLAUDE_MODEL = "claude-opus-5-5"  # what 2.1.332 picks by default with an API key
# claude 2.1.332's price for CLAUDE_MODEL, USD per million tokens, as its total_cost_usd shows
# (fresh input, cache read, output; verified against the recorded runs and these stand-ins).
CLAUDE_PRICE = {"input": 4.0, "cached": 0.2, "output": 20.0}


def real_bin(name: str) -> str:
    path = os.environ.get(f"CODYTEST_{name.upper()}_BIN")
    if not path:
        pytest.skip("real-agent tier: run scripts/test --real-agents")
    if not os.access(path, os.X_OK):
        pytest.fail(f"CODYTEST_{name.upper()}_BIN={path} is not an executable")
    return path


@dataclass
class Standin:
    """A running ``standins.py`` process and the file it logs every request to."""

    root: Path
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        log = self.root / "requests.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def model_calls(self, api: str) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r.get("api") == api]

    def served(self, api: str) -> dict[str, int]:
        """What the stand-in reported as used, added up over the calls it answered."""
        total = {"input": 0, "cached": 0, "output": 0}
        for call in self.model_calls(api):
            for key in total:
                total[key] += (call["usage"] or {}).get(key, 0)
        return total

    def set_mode(self, mode: str, **extra: str) -> None:
        data = json.dumps({"mode": mode, **extra}).encode()
        request = urllib.request.Request(f"{self.url}/__standin/mode", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200


@contextmanager
def standin(mode: str = "normal", reset_in: float = 600.0) -> Iterator[Standin]:
    root = short_tempdir()
    port_file = root / "port"
    log = (root / "standin.log").open("wb")
    argv = [sys.executable, str(HERE / "standins.py"), "--log", str(root / "requests.jsonl")]
    argv += ["--port-file", str(port_file), "--mode", mode, "--reset-in", str(reset_in)]
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    log.close()
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError((root / "standin.log").read_text())
            return port_file.exists()

        wait_until(listening, 20, "the stand-in to listen")
        yield Standin(root, proc, int(port_file.read_text()))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def codex_env(home: Path, server: Standin) -> dict[str, str]:
    """A fresh HOME and CODEX_HOME whose config.toml points codex at the stand-in."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "{CODEX_MODEL}"\n'
        'model_provider = "standin"\n'
        "\n"
        "[model_providers.standin]\n"
        'name = "standin"\n'
        f'base_url = "{server.url}/v1"\n'
        'env_key = "STANDIN_OPENAI_KEY"\n'
        'wire_api = "responses"\n'
        "supports_websockets = false\n"
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "stream_idle_timeout_ms = 30000\n"
    )
    return {"HOME": str(home), "CODEX_HOME": str(codex_home), "STANDIN_OPENAI_KEY": "sk-standin"}


def claude_env(home: Path, server: Standin) -> dict[str, str]:
    """A fresh HOME, the stand-in as the API, an API key, and one retry at most."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": "sk-ant-standin",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def real_daemon(root: Path, config: Path | None = None) -> Daemon:
    """A codyd whose codex and claude are the installed CLIs, with the default agent args."""
    env = {
        "CODYD_AGENTS__CODEX__BIN": real_bin("codex"),
        "CODYD_AGENTS__CLAUDE__BIN": real_bin("claude"),
    }
    args = ["--config", str(config)] if config is not None else []
    return Daemon(root, args, env).start()


@contextmanager
def daemon_with(
    agent: str, mode: str = "normal", reset_in: float = 600.0, config: Path | None = None
) -> Iterator[Run]:
    """A stand-in in ``mode``, a codyd using the real CLIs, and the agent env for a run."""
    real_bin(agent)
    with standin(mode, reset_in) as server:
        root = short_tempdir()
        daemon = real_daemon(root, config)
        try:
            home = root / "home"
            env = codex_env(home, server) if agent == "codex" else claude_env(home, server)
            yield Run(daemon, server, agent, env)
        finally:
            daemon.stop()
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class Run:
    daemon: Daemon
    server: Standin
    agent: str
    env: dict[str, str]

    @property
    def api(self) -> str:
        return "openai" if self.agent == "codex" else "anthropic"

    def start(self, run_id: str, workspace: str = "ws", **spec: Any) -> dict[str, Any]:
        params = {
            "workspace": str(self.daemon.workspace(workspace)),
            "prompt": "Say that you are done.",
            "agent": self.agent,
            "run_id": run_id,
            "model": CODEX_MODEL if self.agent == "codex" else CLAUDE_MODEL,
            "env": self.env,
            "stall_timeout_s": 120,
            "turn_timeout_s": 300,
            **spec,
        }
        return self.daemon.call("run.start", params)  # type: ignore[no-any-return]

    def events(self, run_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        events = self.daemon.events(run_id)
        return [e for e in events if type_ is None or e["type"] == type_]

    def status(self, run_id: str) -> dict[str, Any]:
        return self.daemon.call("run.status", {"run_id": run_id})  # type: ignore[no-any-return]

    def wait(self, run_id: str, what: str, predicate: Any, timeout: float = 120) -> Any:
        """Bounded poll of the snapshot until ``predicate`` holds; returns that snapshot."""

        def check() -> dict[str, Any] | None:
            snapshot = self.status(run_id)
            return snapshot if predicate(snapshot) else None

        return wait_until(check, timeout, what)

    def explain(self, run_id: str) -> str:
        """What to print when an assertion fails: the turns' outcomes and the agent's lines."""
        lines = []
        for event in self.events(run_id):
            if event["type"] in {"turn_started", "turn_completed", "error", "warning"}:
                lines.append(json.dumps({"type": event["type"], **event["data"]})[:600])
        return "\n".join(lines)


def claude_cost(usage: dict[str, int]) -> float:
    """What claude charges for ``usage`` as the stand-ins report it (cache read within input)."""
    fresh = usage["input"] - usage["cached"]
    price = CLAUDE_PRICE
    micro = fresh * price["input"] + usage["cached"] * price["cached"]
    return (micro + usage["output"] * price["output"]) / 1_000_000
