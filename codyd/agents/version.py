"""Which release of an agent CLI is installed, and what it can do (docs/agents.md §2.3).

``<bin> --version`` and ``<bin> --help`` are run once per binary, in a worker thread with a
timeout, and remembered until the file changes (an upgrade is read again). The version
picks the rules that count the CLI's tokens and cost; the help says whether a flag such as
``--max-budget-usd`` exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from codyd.config import AgentConfig

PROBE_TIMEOUT_S: Final = 10.0
MAX_VERSION_CHARS: Final = 200
# The releases whose output the rules in docs/agents.md were read from.
KNOWN_VERSIONS: Final = {"codex": (0, 171, 0), "claude": (2, 1, 332)}
_VERSION_RE = re.compile(r"\b(\d{1,6})\.(\d{1,6})\.(\d{1,9})\b")


@dataclass(frozen=True, slots=True)
class AgentProbe:
    """What one agent binary says of itself; ``found`` False: it cannot be run at all."""

    found: bool
    version: str | None = None  # the number (``2.1.332``), else the first line printed
    help_text: str = ""

    @property
    def release(self) -> tuple[int, int, int] | None:
        return parse_version(self.version)

    def supports(self, flag: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", self.help_text) is not None


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """The first ``x.y.z`` in ``text`` (``codex-cli 0.171.0`` → (0, 171, 0)), else None."""
    match = _VERSION_RE.search(text or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def older_than_known(agent: str, probe: AgentProbe) -> bool:
    """True if the binary is a release older than the one the rules were read from."""
    known, release = KNOWN_VERSIONS.get(agent), probe.release
    return known is not None and release is not None and release < known


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
            start_new_session=True,  # a child it leaves behind is not in the daemon's group
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return (done.stdout or done.stderr).decode("utf-8", "replace")


def _identity(binary: str) -> tuple[str, int] | None:
    """The resolved path of ``binary`` and its mtime: what the cache is keyed by."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        return os.path.realpath(path), os.stat(path).st_mtime_ns
    except OSError:
        return None


def probe_blocking(binary: str) -> AgentProbe:
    """Run ``binary --version`` and ``binary --help`` (blocking: call it in a worker thread)."""
    if _identity(binary) is None:
        return AgentProbe(found=False)
    printed = _run([binary, "--version"])
    version = None
    if printed is not None:
        numbers = _VERSION_RE.search(printed)
        first = next((line.strip() for line in printed.splitlines() if line.strip()), "")
        version = numbers[0] if numbers else (first[:MAX_VERSION_CHARS] or None)
    return AgentProbe(found=True, version=version, help_text=_run([binary, "--help"]) or "")


class AgentProbes:
    """Probes remembered per binary (path and mtime), looked up off the event loop."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int], AgentProbe] = {}

    async def probe(self, binary: str) -> AgentProbe:
        # A cancellation (shutdown) leaves the thread behind: its commands end by their timeout.
        identity = await trio.to_thread.run_sync(_identity, binary, abandon_on_cancel=True)
        if identity is None:
            return AgentProbe(found=False)
        known = self._known.get(identity)
        if known is None:
            known = await trio.to_thread.run_sync(probe_blocking, binary, abandon_on_cancel=True)
            self._known[identity] = known
        return known


# One per daemon: every run of one binary shares what it said.
PROBES: Final = AgentProbes()


def describe_agents(agents: Mapping[str, AgentConfig]) -> Iterator[str]:
    """One line per configured agent binary: its version, or a warning (``check-config``)."""
    for name, agent in agents.items():
        probe = probe_blocking(agent.bin)
        known = ".".join(map(str, KNOWN_VERSIONS[name])) if name in KNOWN_VERSIONS else None
        if not probe.found:
            yield f"warning: agents.{name}.bin {agent.bin!r} is not found or not executable"
        elif probe.version is None:
            yield f"warning: agents.{name}: {agent.bin} --version printed no version"
        elif older_than_known(name, probe):
            yield (
                f"warning: agents.{name}: {agent.bin} is {probe.version}, older than {known}: "
                f"its tokens and cost count per_turn unless agents.{name}.usage says otherwise"
            )
        else:
            yield f"agents.{name}: {agent.bin} {probe.version}"
