"""The anchors' own virtual environment: supervisor and circus, installed from PyPI when missing.

They live in ``bench/.venv-anchors`` (git-ignored), apart from codyd's environment, so
their dependencies never meet codyd's. A package that will not install is reported,
and the benchmarks go on without that anchor.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BENCH_DIR

VENV_DIR = BENCH_DIR / ".venv-anchors"
REQUIREMENTS = {"supervisord": "supervisor==4.3.*", "circus": "circus==0.19.*"}
# What each anchor needs importable before it counts as installed.
IMPORTS = {"supervisord": "supervisor.supervisord", "circus": "circus.arbiter, zmq, tornado"}


@dataclass
class Anchors:
    """Where the anchors' programs are, and which of them could not be installed (and why)."""

    python: Path
    bin_dir: Path
    missing: dict[str, str] = field(default_factory=dict)

    def available(self, name: str) -> bool:
        return name not in self.missing

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)


def _imports(python: Path, modules: str) -> bool:
    done = subprocess.run(
        [str(python), "-c", f"import {modules}"], capture_output=True, check=False
    )
    return done.returncode == 0


def _versions(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout


def ensure_anchors(log: Path | None = None) -> Anchors:
    """Create the venv if needed and pip-install each anchor that does not import yet."""
    python = VENV_DIR / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV_DIR.relative_to(BENCH_DIR.parent)}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV_DIR)
    anchors = Anchors(python=python, bin_dir=VENV_DIR / "bin")
    for name, requirement in REQUIREMENTS.items():
        if _imports(python, IMPORTS[name]):
            continue
        print(f"installing {requirement} into the anchors' venv", file=sys.stderr)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             requirement],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if log is not None:
            with log.open("a") as handle:
                handle.write(done.stdout + done.stderr)
        if done.returncode != 0 or not _imports(python, IMPORTS[name]):
            lines = (done.stderr or done.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"pip exited {done.returncode}"
            anchors.missing[name] = f"{requirement} did not install on Python "
            anchors.missing[name] += f"{sys.version_info.major}.{sys.version_info.minor}: {reason}"
    return anchors


def installed_versions(anchors: Anchors) -> dict[str, str]:
    """``name==version`` of everything in the anchors' venv, for the JSON."""
    pairs = (line.split("==", 1) for line in _versions(anchors.python).splitlines() if "==" in line)
    return dict((name, version) for name, version in pairs)
