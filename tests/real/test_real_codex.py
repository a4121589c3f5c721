"""The real codex CLI (0.171.0) driven by codyd against a loopback Responses API stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from realtier import CODEX_MODEL, Run, daemon_with
from standins import TEXT, WRITTEN

pytestmark = pytest.mark.real_agents

PRICES = {"input": 1.25, "cached": 0.125, "output": 10.0}  # USD per million, for the "*" model
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def three_turns() -> Iterator[tuple[Run, dict[str, Any]]]:
    """One run of three turns (max_turns=3) against the growing-usage stand-in."""
    with daemon_with("codex") as run:
        run.start("cx3", max_turns=3)
        final = run.daemon.wait_state("cx3", *TERMINAL, timeout=180)
        yield run, final


def turns(run: Run, run_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    started = [e["data"] for e in run.events(run_id, "turn_started")]
    completed = [e["data"] for e in run.events(run_id, "turn_completed")]
    return list(zip(started, completed, strict=False))


def test_three_turns_resume_one_thread(three_turns) -> None:
    """Turns 2 and 3 resume turn 1's thread: codex sends the whole conversation each time."""
    run, final = three_turns
    pairs = turns(run, "cx3")
    assert final["state"] == "completed", run.explain("cx3")
    assert final["completion"]["reason"] == "max_turns"
    assert [done["outcome"] for _, done in pairs] == ["ok", "ok", "ok"], run.explain("cx3")
    thread = run.events("cx3", "session_started")[0]["data"]["session_id"]
    assert final["session_id"] == thread
    argvs = [started["argv"] for started, _ in pairs]
    assert "resume" not in argvs[0]
    for argv in argvs[1:]:
        assert argv[-3:] == ["resume", thread, "-"]
    calls = run.server.model_calls("openai")
    assert [c["status"] for c in calls] == [200, 200, 200]
    # request k carries the k-1 answers before it: the thread really was resumed
    for k, call in enumerate(calls, start=1):
        assert str(call["body"]).count(TEXT) == k - 1
    assert {c["body"]["model"] for c in calls} == {CODEX_MODEL}
    messages = [e["data"]["text"] for e in run.events("cx3", "message")]
    assert messages == [TEXT] * 3


def test_tokens_equal_what_was_served(three_turns) -> None:
    """stats.tokens and each turn_completed.tokens are what the API reported for that turn.

    codex prints the thread's running total on resume (1000, 3000, 6000 input): the adapter
    must count each turn's own part."""
    run, final = three_turns
    served = run.server.served("openai")
    assert served == {"input": 6000, "cached": 600, "output": 60}
    tokens = final["stats"]["tokens"]
    assert {k: tokens[k] for k in served} == served
    assert tokens["total"] == served["input"] + served["output"]
    per_turn = [done["tokens"] for _, done in turns(run, "cx3")]
    for call, counted in zip(run.server.model_calls("openai"), per_turn, strict=True):
        assert {k: counted[k] for k in served} == {k: call["usage"][k] for k in served}


def test_agent_version_in_turn_started(three_turns) -> None:
    run, _ = three_turns
    for started, _ in turns(run, "cx3"):
        assert "0.171.0" in (started.get("agent_version") or "")


def test_default_args_let_codex_write_the_workspace() -> None:
    """codex's own default sandbox is read-only: its patch is then rejected with only a stderr
    line. codyd's default args (--sandbox workspace-write) let the patch land."""
    with daemon_with("codex") as run:
        target = run.daemon.workspace() / "hello.txt"
        run.server.set_mode("write", path=str(target))
        run.start("cxw", max_turns=1)
        final = run.daemon.wait_state("cxw", *TERMINAL, timeout=120)
        explain = run.explain("cxw")
        assert final["state"] == "completed", explain
        assert target.exists() and target.read_text() == WRITTEN, explain
        written = [e["data"]["path"] for e in run.events("cxw", "file_written")]
        assert written == ["hello.txt"]
        served = run.server.served("openai")
        assert len(run.server.model_calls("openai")) == 2
        assert {k: final["stats"]["tokens"][k] for k in served} == served


def test_cost_from_configured_prices(tmp_path) -> None:
    """agents.codex.prices turns each turn's served tokens into cost_usd (estimated)."""
    config = tmp_path / "codyd.toml"
    config.write_text(
        '[agents.codex.prices."*"]\n'
        f"input = {PRICES['input']}\ncached = {PRICES['cached']}\noutput = {PRICES['output']}\n"
    )
    with daemon_with("codex", config=config) as run:
        run.start("cxc", max_turns=3)
        final = run.daemon.wait_state("cxc", *TERMINAL, timeout=180)
        assert final["state"] == "completed", run.explain("cxc")
        costs = []
        for call in run.server.model_calls("openai"):
            use = call["usage"]
            fresh = use["input"] - use["cached"]
            micro = fresh * PRICES["input"] + use["cached"] * PRICES["cached"]
            costs.append((micro + use["output"] * PRICES["output"]) / 1_000_000)
        per_turn = [done["cost_usd"] for _, done in turns(run, "cxc")]
        assert per_turn == pytest.approx(costs, rel=1e-9, abs=1e-12)
        assert final["stats"]["cost_usd"] == pytest.approx(sum(costs), rel=1e-9, abs=1e-12)
        estimated = [e["data"].get("estimated") for e in run.events("cxc", "cost")]
        assert estimated and all(flag is True for flag in estimated)


def test_invalid_key_pauses_with_needs_auth() -> None:
    """A 401 ends the turn auth_failed: the run pauses (needs_auth) at once, no retry loop."""
    with daemon_with("codex", mode="401") as run:
        run.start("cx401", max_turns=2)
        final = run.wait(
            "cx401", "the run to pause or end", lambda s: s["state"] in ("paused", *TERMINAL)
        )
        explain = run.explain("cx401")
        assert final["state"] == "paused", explain
        outcomes = [done["outcome"] for _, done in turns(run, "cx401")]
        assert outcomes == ["auth_failed"], explain
        assert final["stats"]["failed_turns"] == 0
        assert [e["data"]["reason"] for e in run.events("cx401", "run_paused")] == ["needs_auth"]
        attention = [e["data"] for e in run.events("cx401", "attention")]
        assert [a["reason"] for a in attention] == ["needs_auth"]
        assert (final.get("attention") or {}).get("reason") == "needs_auth"
        # request_max_retries = 0: codex asked once, codyd did not ask again
        assert len(run.server.model_calls("openai")) == 1
        # the key is fixed: run.resume tries again, and the refused turn did not count
        run.server.set_mode("normal")
        run.daemon.call("run.resume", {"run_id": "cx401"})
        final = run.daemon.wait_state("cx401", *TERMINAL, timeout=120)
        assert final["state"] == "completed", run.explain("cx401")
        outcomes = [done["outcome"] for _, done in turns(run, "cx401")]
        assert outcomes == ["auth_failed", "ok", "ok"]


def test_usage_limit_waits_until_the_reset() -> None:
    """A usage-limit 429 ends the turn rate_limited; the run waits until the reset (+0–30 s)."""
    reset_in = 900.0
    with daemon_with("codex", mode="429", reset_in=reset_in) as run:
        run.start("cx429", max_turns=5)
        final = run.wait(
            "cx429",
            "the run to wait or end",
            lambda s: s["phase"] == "waiting" or s["state"] in ("paused", *TERMINAL),
        )
        explain = run.explain("cx429")
        assert final["state"] == "running" and final["phase"] == "waiting", explain
        outcomes = [done["outcome"] for _, done in turns(run, "cx429")]
        assert outcomes == ["rate_limited"], explain
        (call,) = run.server.model_calls("openai")
        wait = final["wait"]
        assert wait["reason"] == "rate_limited"
        # codex prints the reset as "try again at 9:27 PM": minute resolution, local time
        assert call["resets_at"] - 60 <= wait["until"] <= call["resets_at"] + 30 + 60
        assert wait["until"] > time.time() + reset_in / 2
        limited = [e["data"] for e in run.events("cx429", "rate_limited")]
        assert len(limited) == 1 and limited[0]["until"] == wait["until"]


def test_usage_limit_holds_the_other_runs_of_the_account() -> None:
    """While the account "codex" is limited, another run of it waits without starting a turn."""
    with daemon_with("codex", mode="429", reset_in=900.0) as run:
        run.start("cxa", max_turns=5)
        first = run.wait(
            "cxa",
            "the run to wait or end",
            lambda s: s["phase"] == "waiting" or s["state"] in ("paused", *TERMINAL),
        )
        assert first["phase"] == "waiting", run.explain("cxa")
        run.start("cxb", workspace="ws2", max_turns=5)
        second = run.wait(
            "cxb",
            "the second run to wait or end",
            lambda s: s["phase"] == "waiting" or s["state"] in ("paused", *TERMINAL),
        )
        assert second["state"] == "running", run.explain("cxb")
        assert second["wait"]["reason"] == "account_limited"
        assert second["wait"]["until"] == first["wait"]["until"]
        assert run.events("cxb", "turn_started") == []
        assert len(run.server.model_calls("openai")) == 1
        accounts = run.daemon.call("daemon.info")["accounts"]
        assert accounts["codex"] == {"limited_until": first["wait"]["until"], "runs": 2}


def test_context_exhausted_starts_a_new_thread() -> None:
    """A context-window error ends the turn context_exhausted; the next turn starts afresh."""
    with daemon_with("codex", mode="context") as run:
        run.start("cxctx", max_turns=2)
        final = run.daemon.wait_state("cxctx", *TERMINAL, timeout=180)
        explain = run.explain("cxctx")
        pairs = turns(run, "cxctx")
        assert [done["outcome"] for _, done in pairs] == ["context_exhausted", "ok"], explain
        assert final["state"] == "completed" and final["stats"]["failed_turns"] == 0
        sessions = [e["data"]["session_id"] for e in run.events("cxctx", "session_started")]
        assert len(sessions) == 2 and sessions[0] != sessions[1]
        assert "resume" not in pairs[1][0]["argv"]
        rotated = [e["data"] for e in run.events("cxctx", "session_rotated")]
        assert rotated == [{"from": sessions[0], "reason": "context_exhausted"}]
