"""Print → follower latency: how late a line an agent prints reaches someone following it.

``stamper.py`` agents print their monotonic clock every 50 ms, as plain lines and
as sentinel lines, among ``level`` sleeping agents. Followers attached to each:
``run.events`` (``codyctl.client`` in this process, ``follow: true``) and
``codyctl tail RUN -f --json`` (a process; its lines are read here). For
supervisord the anchor is the plain stamper under ``supervisorctl tail -f``; circus
has no way to follow a program's output live.

The stamps printed are read back from the log the daemon kept of the agent's
stdout; each one printed within the window of ``DURATION_S`` is late by
(arrival − stamp), or infinitely late if it never arrived (p99 is then
``never`` once more than 1 % are missing).
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import PY
from bench.scale.codyd_fleet import CodydFleet
from bench.scale.fleet import Fleet, Program
from bench.scale.report import Quantiles, ScaleRow
from codyctl.client import Client

NAME = "latency"
STAMPER = str(Path(__file__).with_name("stamper.py"))
PERIOD_S = 0.05
LEAD_S = 1.0
DURATION_S = 10.0
GRACE_S = 1.0
MODES = ("plain", "sentinel")
TARGETS_S = {
    ("sentinel", "run.events"): 0.020,
    ("sentinel", "codyctl tail -f"): 0.025,
    ("plain", "run.events"): 0.120,
}
Stamps = dict[int, float]


def levels(kind: str) -> tuple[int, ...]:
    return {"codyd": (50, 500), "supervisord": (50,)}.get(kind, ())


def extra_programs(kind: str) -> list[Program]:
    modes = MODES if kind == "codyd" else ("plain",)
    return [
        Program(f"lat-{mode}", (PY, STAMPER, mode, str(PERIOD_S)), autostart=False)
        for mode in modes
    ]


def stamps_in_text(text: str) -> list[tuple[int, float]]:
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "stamp":
            found.append((int(parts[1]), float(parts[2])))
        elif "__cody_event__" in line:
            data = json.loads(line)["__cody_event__"]
            found.append((int(data["n"]), float(data["t"])))
    return found


def stamps_in_event(event: dict[str, Any]) -> list[tuple[int, float]]:
    data = event.get("data") or {}
    if event.get("type") == "custom" and data.get("type") == "stamp":
        return [(int(data["n"]), float(data["t"]))]
    if event.get("type") == "subprocess_output":
        return stamps_in_text(str(data.get("text", "")))
    return []


class Receiver:
    """A follower in a thread, noting when each stamp first reached it."""

    def __init__(self, mode: str, name: str) -> None:
        self.mode = mode
        self.name = name
        self.arrived: Stamps = {}
        self.error: str | None = None
        self._thread = threading.Thread(target=self._guarded, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def note(self, stamps: list[tuple[int, float]]) -> None:
        now = time.monotonic()
        for n, _ in stamps:
            self.arrived.setdefault(n, now)

    def _guarded(self) -> None:
        try:
            self.follow()
        except Exception as exc:
            self.error = repr(exc)

    def follow(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the follower to end (most end by themselves once the agent's run ends)."""

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class EventsReceiver(Receiver):
    def __init__(self, mode: str, socket: Path, run_id: str) -> None:
        super().__init__(mode, "run.events")
        self.socket = socket
        self.run_id = run_id

    def follow(self) -> None:
        params = {"run_id": self.run_id, "after": 0, "follow": True}
        with Client(self.socket, timeout=None) as client:
            for event in client.stream("run.events", params):
                self.note(stamps_in_event(event))


class LineReceiver(Receiver):
    """A follower process whose stdout lines are events as JSON, or raw output."""

    def __init__(self, mode: str, name: str, argv: list[str], as_json: bool) -> None:
        super().__init__(mode, name)
        self.argv = argv
        self.as_json = as_json
        self.proc: subprocess.Popen[bytes] | None = None

    def follow(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if self.as_json:
                self.note(stamps_in_event(json.loads(line)))
            else:
                self.note(stamps_in_text(line))
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()


def receivers_for(fleet: Fleet, program: Program, mode: str) -> list[Receiver]:
    found: list[Receiver] = []
    if isinstance(fleet, CodydFleet):
        found.append(EventsReceiver(mode, fleet.socket, program.name))
    argv = fleet.tail_argv(program)
    if argv is not None:
        name = {"codyd": "codyctl tail -f", "supervisord": "supervisorctl tail -f"}[fleet.kind]
        found.append(LineReceiver(mode, name, argv, as_json=fleet.kind == "codyd"))
    return found


def printed_stamps(path: Path) -> Stamps:
    return dict(stamps_in_text(path.read_text(errors="replace")))


def lateness(printed: Stamps, arrived: Stamps, window: tuple[float, float]) -> list[float]:
    return [
        arrived[n] - t if n in arrived else math.inf
        for n, t in printed.items()
        if window[0] <= t <= window[1]
    ]


def stop_stampers(fleet: Fleet, stampers: list[Program]) -> None:
    if isinstance(fleet, CodydFleet):
        for program in stampers:
            fleet.call("run.cancel", {"run_id": program.name, "reason": "measured"})


def measure(fleet: Fleet, level: int) -> dict[str, Any]:
    stampers = [p for p in fleet.programs if p.name.startswith("lat-")]
    fleet.start_programs(stampers).sent_at()
    receivers = [
        receiver.start()
        for program in stampers
        for receiver in receivers_for(fleet, program, program.argv[2])
    ]
    attached = time.monotonic()
    window = (attached + LEAD_S, attached + LEAD_S + DURATION_S)
    time.sleep(LEAD_S + DURATION_S + GRACE_S)
    stop_stampers(fleet, stampers)
    for receiver in receivers:
        receiver.join(10.0)
        receiver.stop()
        receiver.join(5.0)
    printed = {p.argv[2]: printed_stamps(fleet.stdout_log(p)) for p in stampers}
    measured: dict[str, Any] = {}
    for receiver in receivers:
        late = lateness(printed[receiver.mode], receiver.arrived, window)
        if not late:
            raise RuntimeError(f"{fleet.kind}: no {receiver.mode} stamp printed in the window")
        key = f"{receiver.mode} → {receiver.name}"
        measured[key] = {**Quantiles.of(late).__dict__, "error": receiver.error}
    return measured


def rows(results: dict[str, Any]) -> list[ScaleRow]:
    out: list[ScaleRow] = []
    anchor = results.get("supervisord", {}).get(50, {}).get("plain → supervisorctl tail -f")
    for level in levels("codyd"):
        for mode in ("sentinel", "plain"):
            for follower in ("run.events", "codyctl tail -f"):
                figures = results.get("codyd", {}).get(level, {}).get(f"{mode} → {follower}")
                for q in ("p50", "p99"):
                    limit = TARGETS_S.get((mode, follower)) if q == "p99" else None
                    value = None if figures is None else float(figures[q])
                    theirs = None if anchor is None or level != 50 else float(anchor[q])
                    out.append(ScaleRow(
                        f"{mode} line → {follower} {q}, {level} live agents", "s", value, theirs,
                        None,
                        target="—" if limit is None else f"≤ {limit * 1000:g} ms",
                        passed=None if limit is None else value is not None and value <= limit,
                        note="supervisord: plain line → supervisorctl tail -f" if theirs else "",
                    ))  # fmt: skip
    return out
