"""The embedded store: ordering, batched commits, compare-and-set, reopening, schema, retention."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import trio

from codyd.errors import InvalidState
from codyd.model.record import RunRecord
from codyd.model.state import State
from codyd.spec import parse_run_spec
from codyd.store import SCHEMA_VERSION, Store, StoreVersionError, open_store


def make_record(workspace: Path, **spec: object) -> RunRecord:
    params = {"workspace": str(workspace), "prompt": "x", "command": ["true"], **spec}
    return RunRecord(spec=parse_run_spec(params), node="test-node", created_at=time.time())


def count_commits(store: Store) -> list[str]:
    """Record every COMMIT the store's writer connection executes from now on."""
    commits: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    return commits


async def run_through(store: Store, record: RunRecord, *states: State) -> None:
    """Drive a run through ``states`` by compare-and-set, asserting each step applies."""
    for state in states:
        assert store.compare_and_set(record, {record.state}, state)


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


# -- ordering and visibility --------------------------------------------------------------------


async def test_seq_per_run_and_global_gid(tmp_path: Path) -> None:
    """seq counts 1, 2, 3 … per run with no gaps; gid increases across all runs."""
    async with open_store(tmp_path / "store.db") as store:
        first, second = make_record(tmp_path), make_record(tmp_path)
        store.add_run(first)
        store.add_run(second)
        appended = []
        for n in range(30):
            record = first if n % 3 else second
            appended.append(store.append(record, "message", {"n": n}))
        await store.sync()
        for record in (first, second):
            events = await store.read_events(record.run_id, 0)
            assert [e.seq for e in events] == list(range(1, record.last_seq + 1))
            assert all(e.run_id == record.run_id for e in events)
        gids = [e.gid for e in appended]
        assert gids == sorted(gids) and len(set(gids)) == len(gids)
        assert gids == list(range(gids[0], gids[0] + 30))
        everything = await store.read_events(None, 0)
        assert [e.gid for e in everything] == gids
        assert [e.data["n"] for e in everything] == list(range(30))
        assert store.next_gid == gids[-1] + 1
        assert store.committed_gid == gids[-1]


async def test_event_fields_round_trip(tmp_path: Path) -> None:
    """An event reads back with its turn, type, time and data (bytes included)."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        data = {"text": "héllo", "raw": b"\x00\xff", "nested": {"a": [1, 2.5, None, True]}}
        event = store.append(record, "custom", data, turn=3)
        bare = store.append(record, "run_started")
        await store.sync()
        stored = await store.read_events(record.run_id, 0)
        assert stored == [event, bare]
        assert stored[1].data == {} and stored[1].turn is None


async def test_events_invisible_until_committed(tmp_path: Path) -> None:
    """Appended events cannot be read until their batch is committed."""
    store = Store(tmp_path / "store.db")
    store._open()
    try:
        record = make_record(tmp_path)
        store.add_run(record)
        store.append(record, "message", {"n": 1})
        store.append(record, "message", {"n": 2})
        assert store.pending_events() == 2
        assert await store.read_events(record.run_id, 0) == []
        assert await store.read_events(None, 0) == []
        assert await store.read("SELECT run_id FROM runs") == []
        await store._flush_once()
        assert store.pending_events() == 0
        assert [e.data for e in await store.read_events(record.run_id, 0)] == [{"n": 1}, {"n": 2}]
        assert len(await store.read_events(None, 0)) == 2
    finally:
        store._close()


async def test_global_cursor_waits_for_commit_then_sync_shows_all(tmp_path: Path) -> None:
    """The global cursor never shows an uncommitted event; after sync() everything is there."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        event = store.append(record, "message", {"n": 1})
        assert store.committed_gid < event.gid
        assert await store.read_events(None, 0) == []
        await store.sync()
        assert store.committed_gid == event.gid
        assert await store.read_events(None, 0) == [event]
        assert await store.read_events(record.run_id, 0) == [event]


async def test_sync_with_nothing_queued_returns(tmp_path: Path) -> None:
    """sync() on an idle store returns at once."""
    async with open_store(tmp_path / "store.db") as store:
        with trio.fail_after(2):
            await store.sync()
            await store.sync()


async def test_appends_without_yielding_share_one_commit(tmp_path: Path) -> None:
    """A burst of appends between two checkpoints is committed in one transaction."""
    async with open_store(tmp_path / "store.db") as store:
        commits = count_commits(store)
        record = make_record(tmp_path)
        store.add_run(record)
        for n in range(1000):
            store.append(record, "message", {"n": n})
        await store.sync()
        assert len(commits) == 1
        assert len(await store.read_events(record.run_id, 0, limit=2000)) == 1000


async def test_chatty_producer_gets_few_commits(tmp_path: Path) -> None:
    """A producer that yields after every event still gets many events per commit."""
    events = 3000
    async with open_store(tmp_path / "store.db") as store:
        commits = count_commits(store)
        record = make_record(tmp_path)
        store.add_run(record)
        for n in range(events):
            store.append(record, "message", {"n": n})
            await trio.lowlevel.checkpoint()
        await store.sync()
        assert 1 <= len(commits) <= events // 5, f"{len(commits)} commits for {events} events"
        stored = await store.read_events(record.run_id, 0, limit=events + 1)
        assert [e.seq for e in stored] == list(range(1, events + 1))


async def test_closing_commits_what_is_queued(tmp_path: Path) -> None:
    """Leaving open_store commits the last batch even without sync()."""
    path = tmp_path / "store.db"
    async with open_store(path) as store:
        record = make_record(tmp_path)
        store.add_run(record)
        store.append(record, "message", {"last": True})
    async with open_store(path) as store:
        assert [e.data for e in await store.read_events(record.run_id, 0)] == [{"last": True}]


# -- reading --------------------------------------------------------------------------------------


async def test_read_events_cursor_types_and_limit(tmp_path: Path) -> None:
    """Both cursors honour after, the types filter and the limit."""
    async with open_store(tmp_path / "store.db") as store:
        one, two = make_record(tmp_path), make_record(tmp_path)
        store.add_run(one)
        store.add_run(two)
        for n in range(6):
            store.append(one, "message" if n % 2 else "warning", {"n": n})
            store.append(two, "cost", {"usd": n})
        await store.sync()

        warnings = await store.read_events(one.run_id, 0, types=["warning"])
        assert [(e.seq, e.data["n"]) for e in warnings] == [(1, 0), (3, 2), (5, 4)]
        later = await store.read_events(one.run_id, 3, types=["warning", "message"])
        assert [e.seq for e in later] == [4, 5, 6]
        assert [e.seq for e in await store.read_events(one.run_id, 0, limit=2)] == [1, 2]
        assert await store.read_events(one.run_id, 6) == []
        assert await store.read_events(one.run_id, 0, types=["cost"]) == []

        everything = await store.read_events(None, 0)
        assert len(everything) == 12
        costs = await store.read_events(None, 0, types=["cost"])
        assert {e.run_id for e in costs} == {two.run_id} and len(costs) == 6
        middle = everything[5].gid
        after = await store.read_events(None, middle, types=["cost", "message"], limit=3)
        assert [e.gid for e in after] == [
            e.gid for e in everything if e.gid > middle and e.type != "warning"
        ][:3]
        assert await store.oldest_gid() == everything[0].gid


async def test_turn_rows(tmp_path: Path) -> None:
    """A turn is open until it has ended_at; open_turns lists the open ones."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        store.save_turn(record.run_id, 1, started_at=1.0, pid=4321, pid_start_ticks=99)
        store.save_turn(record.run_id, 2, started_at=2.0, pid=4322, pid_start_ticks=100)
        await store.sync()
        assert sorted(await store.open_turns()) == [
            (record.run_id, 1, 4321, 99),
            (record.run_id, 2, 4322, 100),
        ]
        store.save_turn(record.run_id, 1, ended_at=3.0, outcome="ok", exit_code=0)
        await store.sync()
        assert await store.open_turns() == [(record.run_id, 2, 4322, 100)]
        rows = await store.read("SELECT outcome, exit_code, started_at FROM turns WHERE n = 1")
        assert rows == [("ok", 0, 1.0)]


# -- compare-and-set ------------------------------------------------------------------------------


async def test_compare_and_set_applies_from_expected_states(tmp_path: Path) -> None:
    """The change applies only from an expected state; otherwise nothing changes."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        assert not store.compare_and_set(record, {State.RUNNING}, State.PAUSED, ("x", {}))
        assert record.state is State.QUEUED and record.last_seq == 0
        assert store.compare_and_set(
            record, {State.QUEUED}, State.RUNNING, ("run_started", {}), started_at=12.0, pid=77
        )
        assert (record.state, record.started_at, record.pid) == (State.RUNNING, 12.0, 77)
        await store.sync()
        rows = await store.read("SELECT state FROM runs WHERE run_id = ?", (record.run_id,))
        assert rows == [("running",)]
        assert [e.type for e in await store.read_events(record.run_id, 0)] == ["run_started"]


async def test_compare_and_set_refuses_illegal_transition(tmp_path: Path) -> None:
    """An expected state with no edge to the target raises InvalidState and changes nothing."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        await run_through(store, record, State.RUNNING, State.COMPLETED)
        with pytest.raises(InvalidState) as info:
            store.compare_and_set(record, {State.COMPLETED}, State.RUNNING, ("run_started", {}))
        assert info.value.data == {"state": "completed"}
        assert record.state is State.COMPLETED
        assert record.last_seq == 0
        with pytest.raises(InvalidState):
            store.compare_and_set(record, {State.COMPLETED}, State.QUEUED)


async def test_terminal_state_sets_finished_at_and_clears_pid(tmp_path: Path) -> None:
    """Entering a terminal state stamps finished_at and drops the pid."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        store.compare_and_set(record, {State.QUEUED}, State.RUNNING, pid=5)
        assert (record.snapshot()["finished_at"], record.snapshot()["pid"]) == (None, 5)
        before = time.time()
        store.compare_and_set(record, {State.RUNNING}, State.FAILED, ("run_failed", {"error": {}}))
        assert record.finished_at is not None and record.finished_at >= before
        assert record.pid is None


async def test_racing_compare_and_set_only_one_applies(tmp_path: Path) -> None:
    """Two tasks that both saw 'running' race to change it: exactly one wins."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        await run_through(store, record, State.RUNNING)
        results: dict[State, bool] = {}
        both_saw_running = trio.Event()
        seen = 0

        async def change(target: State, event_type: str) -> None:
            nonlocal seen
            observed = record.state
            seen += 1
            if seen == 2:
                both_saw_running.set()
            await both_saw_running.wait()
            results[target] = store.compare_and_set(record, {observed}, target, (event_type, {}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(change, State.PAUSED, "run_paused")
            nursery.start_soon(change, State.CANCELLING, "run_cancelling")
        assert sorted(results.values()) == [False, True]
        winner = next(state for state, won in results.items() if won)
        assert record.state is winner
        await store.sync()
        events = await store.read_events(record.run_id, 0)
        assert len(events) == 1
        assert (
            events[0].type
            == {State.PAUSED: "run_paused", State.CANCELLING: "run_cancelling"}[winner]
        )


# -- reopening ------------------------------------------------------------------------------------


async def test_reopen_keeps_runs_events_and_gid(tmp_path: Path) -> None:
    """After a reopen the runs, their events and the gid sequence all continue."""
    path = tmp_path / "store.db"
    record = make_record(tmp_path, name="keep", labels={"team": "a"}, env={"K": "v"})
    async with open_store(path) as store:
        store.add_run(record)
        await run_through(store, record, State.RUNNING)
        record.stats.account("token_usage", {"input": 3, "output": 4, "cached": 1})
        record.session_id = "sess-1"
        for n in range(5):
            store.append(record, "message", {"n": n}, turn=1)
        await store.sync()
        next_gid = store.next_gid
        saved = json.loads(record.to_store_json())
        events = await store.read_events(record.run_id, 0)
    async with open_store(path) as store:
        assert set(store.runs) == {record.run_id}
        again = store.runs[record.run_id]
        assert json.loads(again.to_store_json()) == saved
        assert again.snapshot() == record.snapshot()
        assert await store.read_events(record.run_id, 0) == events
        assert store.next_gid == next_gid
        assert store.committed_gid == next_gid - 1
        newer = store.append(again, "message", {"n": 5})
        assert (newer.gid, newer.seq) == (next_gid, 6)
        await store.sync()
        assert (await store.read_events(None, events[-1].gid)) == [newer]


async def test_gids_not_reused_after_newest_events_deleted(tmp_path: Path) -> None:
    """Even when retention deleted every event, a reopened store never reuses a gid."""
    path = tmp_path / "store.db"
    async with open_store(path) as store:
        record = make_record(tmp_path)
        store.add_run(record)
        await run_through(store, record, State.RUNNING)
        for _ in range(4):
            store.append(record, "message")
        await run_through(store, record, State.COMPLETED)
        last_gid = store.next_gid - 1
        store.apply_retention(max_events_per_run=100, max_runs=0)
        await store.sync()
        assert await store.read_events(None, 0) == []
    async with open_store(path) as store:
        assert store.next_gid == last_gid + 1
        assert await store.oldest_gid() == last_gid + 1


# -- schema ---------------------------------------------------------------------------------------


async def test_fresh_store_is_migrated(tmp_path: Path) -> None:
    """A new store file gets the current schema version and its tables."""
    path = tmp_path / "store.db"
    async with open_store(path):
        pass
    assert user_version(path) == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"runs", "events", "turns", "kv"} <= tables
    async with open_store(path):  # a current store opens again without migrating
        pass
    assert user_version(path) == SCHEMA_VERSION


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
async def test_newer_store_is_refused_untouched(tmp_path: Path, wal: bool) -> None:
    """A store from a newer codyd is refused with StoreVersionError, its bytes unchanged."""
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.execute("INSERT INTO from_the_future VALUES (1)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreVersionError) as info:
        async with open_store(path):
            pytest.fail("a newer store must not open")
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert str(path) in message
    assert path.read_bytes() == before
    assert user_version(path) == SCHEMA_VERSION + 1


async def test_live_runs_and_newest_first_pages_survive_a_reopen(tmp_path: Path) -> None:
    """The index of live runs and the creation order are kept as runs come, end and reload."""
    path = tmp_path / "store.db"
    created = [50.0, 10.0, 30.0, 30.0, 20.0]  # added out of order, with a tie
    records = [make_record(tmp_path) for _ in created]
    for record, at in zip(records, created, strict=True):
        record.created_at = at
    expected = [r.run_id for r in sorted(records, key=lambda r: (r.created_at, r.run_id))][::-1]
    async with open_store(path) as store:
        for record in records:
            store.add_run(record)
        await run_through(store, records[1], State.RUNNING, State.COMPLETED)
        await run_through(store, records[2], State.CANCELLED)
        await store.sync()
        assert [r.run_id for r in store.newest_first()] == expected
        below = (records[3].created_at, records[3].run_id)
        assert [r.run_id for r in store.newest_first(below)] == [
            run_id for run_id in expected if (store.runs[run_id].created_at, run_id) < below
        ]
        assert set(store.live) == {records[0].run_id, records[3].run_id, records[4].run_id}
    async with open_store(path) as store:
        assert [r.run_id for r in store.newest_first()] == expected
        assert set(store.live) == {records[0].run_id, records[3].run_id, records[4].run_id}
        assert list(store.newest_first((0.0, ""))) == []


async def test_only_documented_event_types_are_stored(tmp_path: Path) -> None:
    """A misspelt event type is a bug in codyd: refused before it takes a seq."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        with pytest.raises(ValueError, match="turn_startd"):
            store.append(record, "turn_startd", {})
        assert record.last_seq == 0


# -- retention ------------------------------------------------------------------------------------


async def test_retention_trims_runs_and_old_terminal_runs(tmp_path: Path) -> None:
    """Each run keeps its newest N events; older terminal runs lose all theirs."""
    path = tmp_path / "store.db"
    async with open_store(path) as store:
        old, recent, live, small = (make_record(tmp_path) for _ in range(4))
        for record in (old, recent, live, small):
            store.add_run(record)
            await run_through(store, record, State.RUNNING)
        for record, count in ((old, 8), (recent, 8), (live, 12), (small, 3)):
            for i in range(count):
                store.append(record, "message", {"i": i})
        await run_through(store, old, State.COMPLETED)
        await run_through(store, recent, State.COMPLETED)
        old.finished_at, recent.finished_at = 1000.0, 2000.0
        store.apply_retention(max_events_per_run=5, max_runs=1)
        await store.sync()

        assert (old.oldest_seq, old.last_seq) == (9, 8)
        assert await store.read_events(old.run_id, 0) == []
        assert (recent.oldest_seq, recent.last_seq) == (4, 8)
        assert [e.seq for e in await store.read_events(recent.run_id, 0)] == [4, 5, 6, 7, 8]
        assert live.oldest_seq == 8
        assert [e.seq for e in await store.read_events(live.run_id, 0)] == [8, 9, 10, 11, 12]
        assert small.oldest_seq == 1
        assert [e.seq for e in await store.read_events(small.run_id, 0)] == [1, 2, 3]
        rows = await store.read("SELECT run_id FROM runs")
        assert len(rows) == 4  # snapshots stay

        # Nothing grew: a second pass changes nothing.
        store.apply_retention(max_events_per_run=5, max_runs=1)
        await store.sync()
        assert [e.seq for e in await store.read_events(live.run_id, 0)] == [8, 9, 10, 11, 12]
    async with open_store(path) as store:
        assert store.runs[old.run_id].oldest_seq == 9
        assert store.runs[recent.run_id].oldest_seq == 4
        assert store.runs[live.run_id].oldest_seq == 8


async def test_retention_never_empties_live_runs(tmp_path: Path) -> None:
    """max_runs counts terminal runs only: running runs keep their newest events."""
    async with open_store(tmp_path / "store.db") as store:
        record = make_record(tmp_path)
        store.add_run(record)
        await run_through(store, record, State.RUNNING)
        for _ in range(3):
            store.append(record, "message")
        store.apply_retention(max_events_per_run=100, max_runs=0)
        await store.sync()
        assert record.oldest_seq == 1
        assert len(await store.read_events(record.run_id, 0)) == 3


async def test_retention_keeps_newest_terminal_runs(tmp_path: Path) -> None:
    """Of the terminal runs, the max_runs most recently finished keep their events."""
    async with open_store(tmp_path / "store.db") as store:
        records = [make_record(tmp_path) for _ in range(4)]
        for index, record in enumerate(records):
            store.add_run(record)
            await run_through(store, record, State.RUNNING)
            store.append(record, "message")
            await run_through(store, record, State.FAILED)
            record.finished_at = 100.0 - index  # the first one finished last
        store.apply_retention(max_events_per_run=100, max_runs=2)
        await store.sync()
        kept = [bool(await store.read_events(r.run_id, 0)) for r in records]
        assert kept == [True, True, False, False]
        assert [r.oldest_seq for r in records] == [1, 1, 2, 2]


async def test_retention_after_reopen_trims_runs_that_did_not_grow(tmp_path: Path) -> None:
    """A run over the per-run limit is trimmed after a reopen even if it never grows again."""
    path = tmp_path / "store.db"
    async with open_store(path) as store:
        record = make_record(tmp_path)
        store.add_run(record)
        await run_through(store, record, State.RUNNING)
        for _ in range(10):
            store.append(record, "message")
        await run_through(store, record, State.COMPLETED)
    async with open_store(path) as store:
        store.apply_retention(max_events_per_run=5, max_runs=100)
        await store.sync()
        assert [e.seq for e in await store.read_events(record.run_id, 0)] == [6, 7, 8, 9, 10]
