"""Shared test harness: a real codyd daemon process, its client, and waiting helpers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from codyctl.client import Client

AGENTS = Path(__file__).parent / "agents"
PY = sys.executable


def agent(name: str, *args: object) -> list[str]:
    """argv of a fake agent under tests/agents."""
    return [PY, str(AGENTS / f"{name}.py"), *map(str, args)]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Bounded poll: return the predicate's first truthy value, fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


@dataclass
class Daemon:
    """A codyd process started by a test, with its files in a short temp dir."""

    root: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "codyd.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "codyd.log"

    def workspace(self, name: str = "ws") -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def start(self, wait: bool = True) -> Daemon:
        env = {**os.environ, "CODYD_LOG_LEVEL": "debug", **self.env}
        env.pop("CODYD_CONFIG", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "codyd",
                "serve",
                "--socket",
                str(self.socket),
                "--state-dir",
                str(self.state_dir),
                "--log-format",
                "json",
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        if wait:
            wait_until(self._accepting, 20, f"codyd to listen on {self.socket}")
        return self

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"codyd exited {self.proc.returncode}:\n{self.log()}")
        try:
            with Client(self.socket, timeout=5) as client:
                client.call("daemon.ping")
        except Exception:
            return False
        return True

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.call(method, params or {})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- run helpers -------------------------------------------------------------------------

    def start_run(self, command: list[str], **spec: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"workspace": str(self.workspace()), "prompt": "do the work"}
        params.update(command=command, **spec)
        return self.call("run.start", params)  # type: ignore[no-any-return]

    def events(self, run_id: str, after: int = 0, **params: Any) -> list[dict[str, Any]]:
        """All stored events of a run after ``after`` (no follow)."""
        with self.client() as client:
            return list(client.stream("run.events", {"run_id": run_id, "after": after, **params}))

    def follow_until_end(self, run_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Follow a run's events from the start until the stream ends (the run is terminal)."""
        with self.client(timeout=timeout) as client:
            return list(client.stream("run.events", {"run_id": run_id, "after": 0, "follow": True}))

    def wait_state(self, run_id: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            snapshot = self.call("run.status", {"run_id": run_id})
            return snapshot if snapshot["state"] in states else None

        return wait_until(reached, timeout, f"run {run_id} to be {states}")  # type: ignore[no-any-return]

    def wait_event(self, run_id: str, type_: str, timeout: float = 20.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events(run_id) if e["type"] == type_), None)

        return wait_until(found, timeout, f"a {type_} event of run {run_id}")  # type: ignore[no-any-return]


def short_tempdir() -> Path:
    """Unix socket paths are limited to 108 bytes: keep the directory short."""
    return Path(tempfile.mkdtemp(prefix="cdy", dir="/tmp"))


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []
    roots: list[Path] = []

    def make(
        *extra_args: str,
        env: dict[str, str] | None = None,
        start: bool = True,
        root: Path | None = None,
    ) -> Daemon:
        if root is None:
            root = short_tempdir()
            roots.append(root)
        daemon = Daemon(root, list(extra_args), env or {})
        made.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in made:
        daemon.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory()
