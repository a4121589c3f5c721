"""The README's quick start and ralph loop, run as written in a fresh clone and a fresh HOME.

The shell blocks are read from README.md itself, so the README and this test cannot drift.
Skipped, saying why, only when no package registry can be reached to install codyd from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from codyctl.client import Client

from conftest import short_tempdir, wait_until

REPO = Path(__file__).resolve().parent.parent
FIRST_SECTION = "## Quick start"
END_SECTION = "## Documentation"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_commands() -> str:
    """Every ```sh block from the quick start up to the documentation list, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(FIRST_SECTION) : text.index(END_SECTION)]
    blocks = SH_BLOCK.findall(section)
    assert len(blocks) >= 3, "the README's quick start and ralph loop have shell blocks"
    return "\n".join(blocks)


def registry_unreachable(env: dict[str, str], into: Path) -> str | None:
    """Why codyd's dependencies cannot be installed here, or None when they can."""
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), "trio"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if probe.returncode == 0:
        return None
    return f"no package registry reachable: {probe.stderr.strip().splitlines()[-1:]}"


@pytest.fixture
def sandbox() -> Iterator[Path]:
    root = short_tempdir()
    yield root
    socket_path = root / "run" / "codyd" / "codyd.sock"
    if socket_path.exists():
        shutdown(socket_path)
    shutil.rmtree(root, ignore_errors=True)


def shutdown(socket_path: Path) -> None:
    """Stop the daemon the README started, by the protocol, and wait until it is gone."""
    try:
        with Client(socket_path, timeout=10) as client:
            pid = client.call("daemon.info")["pid"]
            client.call("daemon.shutdown")
    except Exception:
        return
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the README's codyd to exit")


@pytest.mark.slow
def test_readme_quick_start_and_ralph_loop_work_as_written(sandbox: Path) -> None:
    """``scripts/install`` then the ralph loop, from a clean clone, in a fresh virtualenv."""
    home = sandbox / "home"
    runtime = sandbox / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CODYD_", "PYTHON", "VIRTUAL_ENV", "XDG_"))
    }
    env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(runtime),
        # Reuse the machine's pip cache: the README's install is what is tested, not the network.
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        DEMO_TURN_SECONDS="2",  # long enough to steer the first run before it ends
    )
    reason = registry_unreachable(env, sandbox / "probe")
    if reason is not None:
        print(reason)
        pytest.skip(reason)
    clone = sandbox / "codyd"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=60)

    script = f"set -euo pipefail\ncd {clone}\n{readme_commands()}\n"
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=clone,
        timeout=300,
        check=False,
    )
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, output
    assert (home / ".local/share/codyd/venv/bin/codyctl").is_file()
    assert re.search(r"^started run [0-9a-f]{32}$", done.stdout, re.MULTILINE), output
    assert "wait exit 4: the run was cancelled" in done.stdout, output
    for turn in (1, 2, 3):
        assert f"turn {turn}: working on it" in done.stdout, output
    assert re.search(r"^state:\s+completed \(stop_file\)$", done.stdout, re.MULTILINE), output
    assert len(re.findall(r" turn_completed outcome=ok ", done.stdout)) == 3, output
