"""A bounded atheris run over the codec, request parsing, spec validation and sentinels."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).parent / "fuzz" / "atheris_protocol.py"


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris has no wheel for this Python/platform (scripts/test installs it when it can)",
)
def test_atheris_finds_no_crash(tmp_path: Path) -> None:
    """20,000 coverage-guided inputs: nothing raises but CodydError."""
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-runs=20000",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None and int(done.group(1)) >= 20000, result.stderr[-2000:]
