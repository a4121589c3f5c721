"""The systemd unit and the example configuration that ship in systemd/."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "systemd" / "codyd.service"
EXAMPLE = Path(__file__).parent.parent / "systemd" / "codyd.toml"


def unit_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit (with ExecStart's binary where pip put it here)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: scripts/test installs the systemd package")
    codyd = shutil.which("codyd") or str(Path(sys.executable).parent / "codyd")
    unit = tmp_path / "codyd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/codyd", codyd))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "codyd.service" not in result.stderr, result.stderr


def test_unit_has_what_operations_rely_on() -> None:
    """Type=notify with a watchdog, KillMode=mixed, a stop timeout above the shutdown bound, directories."""
    service = unit_sections()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) == 30
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    # The shutdown bound is the largest sigkill_delay_s (default 5) + 10 s.
    assert int(service["TimeoutStopSec"]) > 5 + 10
    for directory in ("RuntimeDirectory", "StateDirectory", "ConfigurationDirectory"):
        assert service[directory] == "codyd"
    assert service["User"] == "codyd"
    # It would kill Node- and V8-based agent CLIs.
    assert "MemoryDenyWriteExecute" not in service


def test_example_configuration_is_valid() -> None:
    """The example /etc/codyd/codyd.toml passes codyd check-config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODYD_")}
    result = subprocess.run(
        [sys.executable, "-m", "codyd", "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert '"max_active_runs": 32' in result.stdout
