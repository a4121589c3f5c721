"""In-process: runs waiting out limits, rotating sessions, warning of budgets, asking for people.

The agents are real subprocesses (tests/agents/reporter.py printing report sentinels,
fake_claude.py replaying a transcript); the waits, hours long, pass on a ``MockClock``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing
from test_daemon_inprocess import (
    REAL_TIME_BOUND_S,
    events,
    of_type,
    run_daemon,
    wait_event,
    wait_for,
    wait_state,
)

from codyd.config import load_config
from codyd.daemon import Daemon, lock_state_dir, open_daemon
from codyd.errors import InvalidParams

from conftest import AGENTS, agent, short_tempdir

DATA = Path(__file__).parent / "data"
CLAUDE_SESSION = "5e0c9a3b-7d21-4f68-b1e4-8a2f6c0d3e97"
# Real agents take real milliseconds, in which the mock clock may run far ahead. The
# waits are minutes, not hours: the daemon's own timers (heartbeat) cost real time.
PATIENT = {"stall_timeout_s": 1e6, "turn_timeout_s": 1e6}


async def start(daemon: Daemon, workspace: Path, plan: str, **spec: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"workspace": str(workspace), "prompt": "go", **PATIENT}
    params.update(command=agent("reporter", plan), **spec)
    return await daemon.supervisor.start(params)


async def settle(daemon: Daemon, run_id: str, *states: str, step: float = 60.0) -> dict[str, Any]:
    """wait_state in steps of a mock minute: hours of waiting in a few hundred looks."""
    deadline = time.monotonic() + REAL_TIME_BOUND_S
    while (snapshot := daemon.supervisor.get(run_id).snapshot())["state"] not in states:
        assert time.monotonic() < deadline, f"run {run_id} never got there: {snapshot}"
        await trio.sleep(step)
    return snapshot


CLAUDE_ENV = {"CODYD_AGENTS__CLAUDE__BIN": str(AGENTS / "fake_claude.py")}


def transcript_with(tmp: Path, name: str, **event: Any) -> Path:
    """A claude turn that opens its session, then says (by sentinel) what stopped it."""
    init = (DATA / "claude-stream.jsonl").read_text().splitlines()[0]
    path = tmp / name
    path.write_text(f"{init}\n{json.dumps({'__cody_event__': event})}\n")
    return path


def resumed(argv_log: Path) -> list[str | None]:
    """The session each logged claude turn was asked to resume."""
    found: list[str | None] = []
    for line in argv_log.read_text().splitlines():
        resumes = [a.split("=", 1)[1] for a in json.loads(line) if a.startswith("--resume=")]
        found.append(resumes[-1] if resumes else None)
    return found


def test_rate_limited_turn_waits_until_the_reset_then_resumes_the_session() -> None:
    """A rate_limited sentinel: the run waits until the reported reset (+ jitter), then
    the next turn resumes the same claude session."""
    tmp = short_tempdir()

    async def test(daemon: Daemon, workspace: Path) -> None:
        resets_at = time.time() + 1200
        limited = transcript_with(
            tmp, "limited.jsonl", type="rate_limited", resets_at=resets_at, message="limit"
        )
        env = {
            "FAKE_AGENT_SCRIPT": f"{limited},{DATA / 'claude-stream.jsonl'}",
            "FAKE_AGENT_ARGV_LOG": str(tmp / "argv.jsonl"),
        }
        await daemon.supervisor.start(
            {"workspace": str(workspace), "prompt": "go", "agent": "claude", "run_id": "rl"}
            | {"env": env, "max_turns": 1, **PATIENT}
        )
        waiting = await wait_for(daemon, "rl", lambda s: s["phase"] == "waiting")
        wait = waiting["wait"]
        assert wait["reason"] == "rate_limited" and wait["account"] == "claude"
        assert resets_at <= wait["until"] <= resets_at + 30
        assert waiting["state"] == "running" and waiting["stats"]["failed_turns"] == 0
        (event,) = of_type(await events(daemon, "rl"), "rate_limited")
        assert event.data == {"until": wait["until"], "account": "claude", "message": "limit"}
        accounts = daemon.info()["accounts"]
        assert accounts == {"claude": {"limited_until": wait["until"], "runs": 1}}
        began = trio.current_time()
        final = await settle(daemon, "rl", "completed")
        assert trio.current_time() - began >= 1200 - 60  # waited out on trio's clock
        assert final["wait"] is None and final["current_turn"] == 2
        completed = of_type(await events(daemon, "rl"), "turn_completed")
        assert [e.data["outcome"] for e in completed] == ["rate_limited", "ok"]
        assert resumed(tmp / "argv.jsonl") == [None, CLAUDE_SESSION]

    try:
        run_daemon(test, **CLAUDE_ENV)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_rate_limit_without_reset_backs_off_doubling() -> None:
    """No reset time: rate_limit_backoff_s, then twice that for the next limited turn."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start(daemon, workspace, "limit,limit,ok", run_id="bk", max_turns=1)
        final = await wait_state(daemon, "bk", "completed")
        found = await events(daemon, "bk")
        waits = [e.data["until"] - e.ts for e in of_type(found, "rate_limited")]
        assert [round(w) for w in waits] == [100, 200]
        assert final["stats"]["failed_turns"] == 0 and final["current_turn"] == 3

    run_daemon(test, CODYD_RATE_LIMIT_BACKOFF_S="100")


def test_runs_of_one_account_wait_together() -> None:
    """While one run's account is limited, no turn of another run of it starts."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        other = workspace.parent / "ws2"
        other.mkdir()
        await start(daemon, other, "ok", run_id="b", account="team", max_turns=10_000)
        await wait_for(daemon, "b", lambda s: s["current_turn"] >= 2)
        await start(daemon, workspace, "limit+1200,ok", run_id="a", account="team", max_turns=1)
        held = await wait_for(
            daemon, "b", lambda s: (s["wait"] or {}).get("reason") == "account_limited"
        )
        a = daemon.supervisor.get("a").snapshot()
        assert a["wait"]["reason"] == "rate_limited"
        assert held["wait"] == {**a["wait"], "reason": "account_limited"}
        assert held["phase"] == "waiting" and held["state"] == "running"
        info = daemon.info()["accounts"]["team"]
        assert info == {"limited_until": a["wait"]["until"], "runs": 2}
        turns = held["current_turn"]
        while (a := daemon.supervisor.get("a").snapshot())["phase"] == "waiting":
            assert daemon.supervisor.get("b").snapshot()["current_turn"] == turns
            await trio.sleep(60)
        await settle(daemon, "a", "completed")
        await wait_for(daemon, "b", lambda s: s["current_turn"] > turns)
        assert daemon.info()["accounts"]["team"]["limited_until"] is None
        await daemon.supervisor.cancel("b", None)

    run_daemon(test)


def test_pause_and_cancel_while_waiting() -> None:
    """pause ends a wait at once; resumed, the run waits again while its account is limited;
    cancel ends the wait at once too."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start(daemon, workspace, "limit+36000,ok", run_id="pw")
        await wait_for(daemon, "pw", lambda s: s["phase"] == "waiting")
        began = trio.current_time()
        paused = await daemon.supervisor.pause("pw", "later", now=False)
        assert paused["state"] == "paused"
        await wait_for(daemon, "pw", lambda s: s["phase"] == "idle" and s["wait"] is None)
        await daemon.supervisor.resume("pw")
        again = await wait_for(daemon, "pw", lambda s: s["phase"] == "waiting")
        assert again["wait"]["reason"] == "account_limited" and again["current_turn"] == 1
        await daemon.supervisor.cancel("pw", "enough")
        final = await wait_state(daemon, "pw", "cancelled")
        assert trio.current_time() - began < 600  # neither waited out the 10 hours
        assert final["current_turn"] == 1

    run_daemon(test)


def test_a_wait_outlasts_a_daemon_restart() -> None:
    """A daemon restarted during a wait keeps waiting until the stored ``until``."""
    root = short_tempdir()
    config = load_config(
        env={"HOME": str(root)},
        flags={"socket": root / "codyd.sock", "state_dir": root / "state"},
    )
    workspace = root / "ws"
    workspace.mkdir()
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        async with open_daemon(config, handle_signals=False, subreaper=False) as daemon:
            await start(daemon, workspace, "limit+1200,ok", run_id="rs", max_turns=1)
            first = await wait_for(daemon, "rs", lambda s: s["phase"] == "waiting")
            # Committed before the stop: the store's own flush at close is in a worker
            # thread, which the autojumping clock cannot wait for (see test_daemon_inprocess).
            await daemon.store.sync()
        # The start-up reads the store in worker threads: an autojumping clock would take
        # them for idleness and jump over the wait before anyone could look.
        clock.autojump_threshold = math.inf
        async with open_daemon(config, handle_signals=False, subreaper=False) as daemon:
            deadline = time.monotonic() + REAL_TIME_BOUND_S
            while (again := daemon.supervisor.get("rs").snapshot())["phase"] != "waiting":
                assert time.monotonic() < deadline, again
                await trio.sleep(0)
            clock.autojump_threshold = 0
            began = trio.current_time()
            assert again["wait"] == first["wait"] and again["current_turn"] == 1
            assert daemon.info()["accounts"]["command"]["limited_until"] == first["wait"]["until"]
            await trio.sleep(600)
            assert daemon.supervisor.get("rs").snapshot()["current_turn"] == 1
            final = await settle(daemon, "rs", "completed")
            assert trio.current_time() - began >= 1200 - 120
            assert final["current_turn"] == 2
            assert len(of_type(await events(daemon, "rs"), "rate_limited")) == 1

    try:
        with lock_state_dir(config.state_dir):
            trio.run(main, clock=clock)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_auth_failed_pauses_once_with_needs_auth() -> None:
    """auth_failed: paused with needs_auth and one attention event, no retry loop;
    run.resume tries again and clears the attention."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start(daemon, workspace, "auth,ok", run_id="au", max_turns=1)
        paused = await wait_state(daemon, "au", "paused")
        assert paused["attention"]["reason"] == "needs_auth"
        assert "Invalid API key" in paused["attention"]["message"]
        assert "codyctl resume au" in paused["attention"]["message"]
        await trio.sleep(600)  # nothing happens while nobody logs in
        found = await events(daemon, "au")
        assert len(of_type(found, "turn_started")) == 1
        (attention,) = of_type(found, "attention")
        assert attention.data["reason"] == "needs_auth"
        assert of_type(found, "run_paused")[0].data == {"reason": "needs_auth"}
        assert of_type(found, "turn_completed")[0].data["outcome"] == "auth_failed"
        await daemon.supervisor.resume("au")
        final = await wait_state(daemon, "au", "completed")
        assert final["attention"] is None and final["current_turn"] == 2
        assert final["stats"]["failed_turns"] == 0

    run_daemon(test)


def test_context_exhausted_starts_a_new_session() -> None:
    """context_exhausted counts as a turn, fails nothing, and the next turn does not resume."""
    tmp = short_tempdir()

    async def test(daemon: Daemon, workspace: Path) -> None:
        full = transcript_with(tmp, "full.jsonl", type="context_exhausted")
        env = {
            "FAKE_AGENT_SCRIPT": f"{full},{DATA / 'claude-stream.jsonl'}",
            "FAKE_AGENT_ARGV_LOG": str(tmp / "argv.jsonl"),
        }
        await daemon.supervisor.start(
            {"workspace": str(workspace), "prompt": "go", "agent": "claude", "run_id": "cx"}
            | {"env": env, "max_turns": 2, **PATIENT}
        )
        final = await wait_state(daemon, "cx", "completed", "failed")
        assert final["state"] == "completed" and final["current_turn"] == 2
        found = await events(daemon, "cx")
        (rotated,) = of_type(found, "session_rotated")
        assert rotated.data == {"from": CLAUDE_SESSION, "reason": "context_exhausted"}
        outcomes = [e.data["outcome"] for e in of_type(found, "turn_completed")]
        assert outcomes == ["context_exhausted", "ok"]
        assert resumed(tmp / "argv.jsonl") == [None, None]

    try:
        run_daemon(test, **CLAUDE_ENV)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_session_max_turns_rotates_the_session() -> None:
    """After session_max_turns turns in one session the next turn starts a new one."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start(daemon, workspace, "ok", run_id="sm", max_turns=5, session_max_turns=2)
        await wait_state(daemon, "sm", "completed")
        rotated = of_type(await events(daemon, "sm"), "session_rotated")
        assert [(e.turn, e.data["reason"]) for e in rotated] == [(2, "max_turns"), (4, "max_turns")]
        assert rotated[0].data["from"] == "00000000-0000-0000-0000-000000000002"

    run_daemon(test)


def test_budget_warning_once_then_budget_exceeded_asks_for_attention() -> None:
    """budget_warning once when use first reaches warn_fraction; the failure is an attention."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        budget = {"max_tokens": 1000, "warn_fraction": 0.5}
        await start(daemon, workspace, "tokens+300", run_id="bw", max_turns=10, budget=budget)
        final = await wait_state(daemon, "bw", "failed")
        assert final["error"]["code"] == "budget_exceeded" and not final["error"]["retryable"]
        found = await events(daemon, "bw")
        (warning,) = of_type(found, "budget_warning")
        assert warning.data == {"kind": "tokens", "used": 600, "limit": 1000}
        assert warning.turn == 2
        (attention,) = of_type(found, "attention")
        assert attention.data["reason"] == "budget_exceeded"
        assert final["attention"]["reason"] == "budget_exceeded"

    run_daemon(test)


def test_max_turns_with_a_failed_last_turn_fails_the_run() -> None:
    """max_turns reached on a failed turn: failed with that turn's error, and attention."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start(daemon, workspace, "ok,fail", run_id="mf", max_turns=2)
        await start(daemon, workspace.parent, "fail", run_id="all", max_turns=1)
        for run_id in ("mf", "all"):
            final = await wait_state(daemon, run_id, "completed", "failed")
            assert final["state"] == "failed", final
            assert final["error"]["code"] == "error" and final["error"]["retryable"] is True
            assert final["completion"]["detected"] is False
            (attention,) = of_type(await events(daemon, run_id), "attention")
            assert attention.data["reason"] == "failed"

    run_daemon(test)


def test_a_day_long_wait_asks_for_attention() -> None:
    """A reset time more than 24 h ahead: the run waits, and says so with an attention event."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        await start(daemon, workspace, "limit+90000,ok", run_id="day")
        await wait_for(daemon, "day", lambda s: s["phase"] == "waiting")
        attention = await wait_event(daemon, "day", "attention")
        assert attention.data["reason"] == "waiting"
        assert daemon.supervisor.get("day").snapshot()["attention"]["reason"] == "waiting"
        await daemon.supervisor.cancel("day", None)

    run_daemon(test)


def test_an_account_that_is_not_a_short_name_is_refused() -> None:
    """run.start with a bad account: invalid_params naming ``account``, no run created."""

    async def test(daemon: Daemon, workspace: Path) -> None:
        for bad in ("", "has space", "x" * 65, 7):
            try:
                await start(daemon, workspace, "ok", run_id="bad", account=bad)
            except InvalidParams as exc:
                assert exc.field == "account", exc
            else:
                raise AssertionError(f"account {bad!r} was accepted")
        assert "bad" not in daemon.store.runs

    run_daemon(test)
