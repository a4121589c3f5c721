"""The real claude CLI (2.1.332) driven by codyd against a loopback Messages API stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from realtier import CLAUDE_MODEL, Run, claude_cost, daemon_with
from standins import TEXT, WRITTEN

pytestmark = pytest.mark.real_agents

TERMINAL = ("completed", "failed", "cancelled")
FIGURES = ("input", "cached", "output")


@pytest.fixture(scope="module")
def three_turns() -> Iterator[tuple[Run, dict[str, Any]]]:
    """One run of three turns (max_turns=3) against the growing-usage stand-in."""
    with daemon_with("claude") as run:
        run.start("cl3", max_turns=3)
        final = run.daemon.wait_state("cl3", *TERMINAL, timeout=180)
        yield run, final


def turns(run: Run, run_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    started = [e["data"] for e in run.events(run_id, "turn_started")]
    completed = [e["data"] for e in run.events(run_id, "turn_completed")]
    return list(zip(started, completed, strict=False))


def test_three_turns_resume_one_session(three_turns) -> None:
    """Turns 2 and 3 pass --resume=<turn 1's session>; claude sends the whole conversation."""
    run, final = three_turns
    pairs = turns(run, "cl3")
    assert final["state"] == "completed", run.explain("cl3")
    assert final["completion"]["reason"] == "max_turns"
    assert [done["outcome"] for _, done in pairs] == ["ok", "ok", "ok"], run.explain("cl3")
    session = run.events("cl3", "session_started")[0]["data"]["session_id"]
    assert final["session_id"] == session
    argvs = [started["argv"] for started, _ in pairs]
    assert not any(arg.startswith("--resume") for arg in argvs[0])
    for argv in argvs[1:]:
        assert argv[-1] == f"--resume={session}"
    calls = run.server.model_calls("anthropic")
    assert [c["status"] for c in calls] == [200, 200, 200]
    assert {c["body"]["model"] for c in calls} == {CLAUDE_MODEL}
    # request k carries the k-1 answers before it: the session really was resumed
    for k, call in enumerate(calls, start=1):
        assert str(call["body"]["messages"]).count(TEXT) == k - 1
    messages = [e["data"]["text"] for e in run.events("cl3", "message")]
    assert messages == [TEXT] * 3


def test_tokens_equal_what_was_served(three_turns) -> None:
    """stats.tokens and each turn_completed.tokens are what the API reported for that turn
    (input counts the cache reads; claude's result.usage is per process)."""
    run, final = three_turns
    served = run.server.served("anthropic")
    assert served == {"input": 6000, "cached": 600, "output": 60}
    tokens = final["stats"]["tokens"]
    assert {k: tokens[k] for k in FIGURES} == served
    assert tokens["total"] == served["input"] + served["output"]
    per_turn = [done["tokens"] for _, done in turns(run, "cl3")]
    for call, counted in zip(run.server.model_calls("anthropic"), per_turn, strict=True):
        assert {k: counted[k] for k in FIGURES} == {k: call["usage"][k] for k in FIGURES}


def test_cost_equals_what_was_served(three_turns) -> None:
    """cost_usd is the served usage at claude's own price for the model.

    claude's total_cost_usd is cumulative across --resume (here 0.00382, 0.01146, 0.02292):
    the adapter must count each turn's own part."""
    run, final = three_turns
    calls = run.server.model_calls("anthropic")
    costs = [claude_cost(call["usage"]) for call in calls]
    per_turn = [done["cost_usd"] for _, done in turns(run, "cl3")]
    assert per_turn == pytest.approx(costs, rel=1e-9, abs=1e-12)
    assert final["stats"]["cost_usd"] == pytest.approx(sum(costs), rel=1e-9, abs=1e-12)


def test_agent_version_in_turn_started(three_turns) -> None:
    run, _ = three_turns
    for started, _ in turns(run, "cl3"):
        assert "2.1.332" in (started.get("agent_version") or "")


def test_default_args_let_claude_write_the_workspace() -> None:
    """Without a permission mode claude -p denies every Write (a `permission_denied` line);
    codyd's default args (--permission-mode acceptEdits) let it write."""
    with daemon_with("claude") as run:
        target = run.daemon.workspace() / "hello.txt"
        run.server.set_mode("write", path=str(target))
        run.start("clw", max_turns=1)
        final = run.daemon.wait_state("clw", *TERMINAL, timeout=120)
        explain = run.explain("clw")
        assert final["state"] == "completed", explain
        assert target.exists() and target.read_text() == WRITTEN, explain
        written = [e["data"]["path"] for e in run.events("clw", "file_written")]
        assert written == ["hello.txt"]
        assert run.events("clw", "permission_denied") == []
        calls = run.server.model_calls("anthropic")
        assert len(calls) == 2
        tokens = final["stats"]["tokens"]
        assert {k: tokens[k] for k in FIGURES} == run.server.served("anthropic")
        # two calls in one process: total_cost_usd is already this turn's own
        cost = sum(claude_cost(call["usage"]) for call in calls)
        assert final["stats"]["cost_usd"] == pytest.approx(cost, rel=1e-9, abs=1e-12)


def test_invalid_key_pauses_with_needs_auth() -> None:
    """A 401 ends the turn auth_failed: the run pauses (needs_auth) at once, no retry loop."""
    with daemon_with("claude", mode="401") as run:
        run.start("cl401", max_turns=2)
        final = run.wait(
            "cl401", "the run to pause or end", lambda s: s["state"] in ("paused", *TERMINAL)
        )
        explain = run.explain("cl401")
        assert final["state"] == "paused", explain
        outcomes = [done["outcome"] for _, done in turns(run, "cl401")]
        assert outcomes == ["auth_failed"], explain
        assert final["stats"]["failed_turns"] == 0
        assert [e["data"]["reason"] for e in run.events("cl401", "run_paused")] == ["needs_auth"]
        attention = [e["data"] for e in run.events("cl401", "attention")]
        assert [a["reason"] for a in attention] == ["needs_auth"]
        assert (final.get("attention") or {}).get("reason") == "needs_auth"
        # CLAUDE_CODE_MAX_RETRIES=1: claude asked twice, codyd did not start it again
        assert len(run.server.model_calls("anthropic")) == 2
        # the key is fixed: run.resume tries again, and the refused turn did not count
        run.server.set_mode("normal")
        run.daemon.call("run.resume", {"run_id": "cl401"})
        final = run.daemon.wait_state("cl401", *TERMINAL, timeout=120)
        assert final["state"] == "completed", run.explain("cl401")
        outcomes = [done["outcome"] for _, done in turns(run, "cl401")]
        assert outcomes == ["auth_failed", "ok", "ok"]


def test_usage_limit_waits_until_the_reset() -> None:
    """A usage-limit 429 ends the turn rate_limited; the run waits until the reset (+0–30 s).

    With an API key claude prints it as `API Error: Request rejected (429) · <the body's
    message>`; the stand-in's message carries the reset time as claude's own limit text does
    (`You've hit your limit · resets 9:45pm`)."""
    reset_in = 1200.0
    with daemon_with("claude", mode="429", reset_in=reset_in) as run:
        run.start("cl429", max_turns=5)
        final = run.wait(
            "cl429",
            "the run to wait or end",
            lambda s: s["phase"] == "waiting" or s["state"] in ("paused", *TERMINAL),
        )
        explain = run.explain("cl429")
        assert final["state"] == "running" and final["phase"] == "waiting", explain
        outcomes = [done["outcome"] for _, done in turns(run, "cl429")]
        assert outcomes == ["rate_limited"], explain
        (call,) = run.server.model_calls("anthropic")
        wait = final["wait"]
        assert wait["reason"] == "rate_limited"
        # the text has minute resolution
        assert call["resets_at"] - 60 <= wait["until"] <= call["resets_at"] + 30 + 60
        assert wait["until"] > time.time() + reset_in / 2
        limited = [e["data"] for e in run.events("cl429", "rate_limited")]
        assert len(limited) == 1 and limited[0]["until"] == wait["until"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_usage_limit_waited_out_then_the_session_goes_on() -> None:
    """Long (about 1.5–2.5 min): the limit resets 60 s after the refusal; codyd waits it out
    and the next turn resumes the same session. The refused turn does not count."""
    with daemon_with("claude", mode="429", reset_in=60.0) as run:
        run.start("clwait", max_turns=1)
        waiting = run.wait(
            "clwait",
            "the run to wait or end",
            lambda s: s["phase"] == "waiting" or s["state"] in ("paused", *TERMINAL),
        )
        assert waiting["phase"] == "waiting", run.explain("clwait")
        run.server.set_mode("normal")
        final = run.daemon.wait_state("clwait", *TERMINAL, timeout=240)
        assert final["state"] == "completed", run.explain("clwait")
        pairs = turns(run, "clwait")
        assert [done["outcome"] for _, done in pairs] == ["rate_limited", "ok"]
        session = run.events("clwait", "session_started")[0]["data"]["session_id"]
        assert pairs[1][0]["argv"][-1] == f"--resume={session}"
        second_start = run.events("clwait", "turn_started")[1]["ts"]
        assert second_start >= waiting["wait"]["until"]


def test_prompt_too_long_starts_a_new_session() -> None:
    """`Prompt is too long` ends the turn context_exhausted; the next turn does not resume."""
    with daemon_with("claude", mode="context") as run:
        run.start("clctx", max_turns=2)
        final = run.daemon.wait_state("clctx", *TERMINAL, timeout=180)
        explain = run.explain("clctx")
        pairs = turns(run, "clctx")
        assert [done["outcome"] for _, done in pairs] == ["context_exhausted", "ok"], explain
        assert final["state"] == "completed" and final["stats"]["failed_turns"] == 0
        sessions = [e["data"]["session_id"] for e in run.events("clctx", "session_started")]
        assert len(sessions) == 2 and sessions[0] != sessions[1]
        assert not any(arg.startswith("--resume") for arg in pairs[1][0]["argv"])
        rotated = [e["data"] for e in run.events("clctx", "session_rotated")]
        assert rotated == [{"from": sessions[0], "reason": "context_exhausted"}]
