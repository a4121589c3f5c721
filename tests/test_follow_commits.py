"""Followers of one run read only the commits that hold their run, and still miss nothing."""

from __future__ import annotations

import time
from pathlib import Path

from codyd.model.record import RunRecord
from codyd.spec import parse_run_spec
from codyd.store import open_store

from conftest import Daemon, agent


def make_record(workspace: Path) -> RunRecord:
    params = {"workspace": str(workspace), "prompt": "x", "command": ["true"]}
    return RunRecord(spec=parse_run_spec(params), node="test-node", created_at=time.time())


async def test_committed_seq_moves_with_the_commits_of_its_run(tmp_path: Path) -> None:
    """A run's committed seq is unknown until a commit holds it, then moves only with its own."""
    async with open_store(tmp_path / "store.db") as store:
        first, second = make_record(tmp_path), make_record(tmp_path)
        assert store.committed_seq(first.run_id) is None
        store.add_run(first)
        store.add_run(second)
        store.append(first, "message", {"n": 1})
        store.append(first, "message", {"n": 2})
        assert store.committed_seq(first.run_id) is None  # queued, not committed
        await store.sync()
        assert store.committed_seq(first.run_id) == 2
        assert store.committed_seq(second.run_id) == 0
        store.append(second, "message", {"n": 3})
        await store.sync()
        assert store.committed_seq(first.run_id) == 2
        assert store.committed_seq(second.run_id) == 1


def test_quiet_run_follower_misses_nothing_while_others_commit(daemon: Daemon) -> None:
    """A follower of a slow run gets every event and its end while a chatty run commits often."""
    daemon.start_run(agent("ticker", 0.01, 150), max_turns=1, run_id="chatty",
                     workspace=str(daemon.workspace("chatty")))  # fmt: skip
    daemon.start_run(agent("ticker", 0.4, 4), max_turns=1, run_id="quiet",
                     workspace=str(daemon.workspace("quiet")))  # fmt: skip
    followed = daemon.follow_until_end("quiet", timeout=30)
    stored = daemon.events("quiet")
    assert [event["seq"] for event in followed] == list(range(1, len(stored) + 1))
    assert followed == stored
    assert followed[-1]["type"] == "run_completed"
    outputs = "".join(e["data"]["text"] for e in followed if e["type"] == "subprocess_output")
    assert outputs.split() == ["tick", "0", "tick", "1", "tick", "2", "tick", "3"]


def test_filtered_follower_ends_when_its_run_ends(daemon: Daemon) -> None:
    """A follower of one event type of a quiet run ends finished with just that event."""
    daemon.start_run(agent("ticker", 0.01, 150), max_turns=1, run_id="chatty",
                     workspace=str(daemon.workspace("chatty")))  # fmt: skip
    daemon.start_run(agent("ticker", 0.3, 3), max_turns=1, run_id="quiet",
                     workspace=str(daemon.workspace("quiet")))  # fmt: skip
    with daemon.client(timeout=30) as client:
        params = {"run_id": "quiet", "after": 0, "follow": True, "types": ["run_completed"]}
        events = list(client.stream("run.events", params))
        assert [event["type"] for event in events] == ["run_completed"]
        assert client.last_stream_result is not None
        assert client.last_stream_result["end"] == "finished"
