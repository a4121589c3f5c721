"""The store, turn logs and heartbeat on a disk that fails: full, read-only, file deleted."""

from __future__ import annotations

import errno
import os
import resource
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trio
from disk_faults import ext4_image, fill, force_read_only, remount, small_tmpfs
from test_store import make_record

from codyd.daemon import _write_heartbeat
from codyd.runs.output import CappedLog
from codyd.store import (
    CLOSE_FLUSH_S,
    IDENTITY_CHECK_S,
    Store,
    StoreUnusable,
    StoreUnwritable,
    open_store,
)

PAYLOAD = {"text": "x" * 1000}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs", "8m") as mounted:
        yield mounted


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Bounded poll on trio's clock."""
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def store_errors(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["log_level"] == "error" and "store" in str(e["event"])]


async def test_full_disk_is_one_clear_error_and_nothing_is_lost(tmpfs: Path) -> None:
    """A full disk: one error naming the real SQLite error, sync refuses, settle answers,
    nothing queued is dropped, and once space returns every event is committed in order."""
    async with open_store(tmpfs / "codyd.db") as store:
        record = make_record(tmpfs)
        store.add_run(record)
        await store.sync()
        filler = fill(tmpfs)
        with structlog.testing.capture_logs() as logs:
            # More than the WAL can take in the space it already has.
            for _ in range(3000):
                store.append(record, "subprocess_output", PAYLOAD)
            await wait_for(lambda: not store.health.writable)
            for _ in range(50):
                store.append(record, "subprocess_output", PAYLOAD)
            # Retries go on with backoff, at debug level.
            await wait_for(lambda: store.health.failures >= 3)
            info = store.health_info()
            assert info["writable"] is False
            assert "full" in str(info["last_error"]), info
            assert info["since"] is not None and info["pending_events"] == 3050
            with pytest.raises(StoreUnwritable, match="cannot write") as refused:
                await store.sync()
            assert refused.value.code == "overloaded" and refused.value.retryable
            with trio.fail_after(1):
                await store.settle()
            errors = store_errors(logs)
            assert len(errors) == 1, errors
            assert errors[0]["path"] == str(tmpfs / "codyd.db")
            assert "full" in str(errors[0]["error"])
            assert "No space left on device" in str(errors[0]["error"])
            assert "rollback" not in str(errors[0]["error"])
            filler.unlink()
            await wait_for(lambda: store.health.writable, timeout=15)
            await store.sync()
        assert store.health_info()["writable"] is True
        assert any(e["event"].startswith("store writable again") for e in logs)
        events = await store.read_events(record.run_id, 0, limit=10_000)
        assert [e.seq for e in events] == list(range(1, record.last_seq + 1))
        assert record.last_seq == 3050


async def test_close_on_a_full_disk_ends_within_its_deadline(tmpfs: Path) -> None:
    """Closing the store while the disk is full neither hangs nor retries: it logs the loss."""
    started = trio.current_time()
    with structlog.testing.capture_logs() as logs:
        async with open_store(tmpfs / "codyd.db") as store:
            record = make_record(tmpfs)
            store.add_run(record)
            await store.sync()
            fill(tmpfs)
            for _ in range(3000):
                store.append(record, "subprocess_output", PAYLOAD)
            await wait_for(lambda: not store.health.writable)
            assert await store.flush_within(0.3) is False
    assert trio.current_time() - started < CLOSE_FLUSH_S + 5
    assert any("not committed; they are lost" in e["event"] for e in logs), logs


async def test_file_system_turned_read_only_is_reported(tmp_path: Path) -> None:
    """The kernel turns the file system read-only under the open store: one error, the
    daemon's memory keeps what is queued, and closing does not hang."""
    with ext4_image(tmp_path / "ext4") as mounted:
        with structlog.testing.capture_logs() as logs:
            async with open_store(mounted / "codyd.db") as store:
                record = make_record(mounted)
                store.add_run(record)
                await store.sync()
                force_read_only(mounted)
                store.append(record, "subprocess_output", PAYLOAD)
                await wait_for(lambda: not store.health.writable)
                assert store.health_info()["pending_events"] == 1
                with pytest.raises(StoreUnwritable):
                    await store.sync()
                # What was committed is still read.
                assert await store.kv_get("opened_at") is not None
        errors = store_errors(logs)
        assert len(errors) == 2, errors  # the episode's one error, then the loss at close
        assert "Read-only file system" in str(errors[0]["error"]), errors


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_store_file_deleted_or_replaced_is_detected(tmp_path: Path, how: str) -> None:
    """codyd.db gone (or another file in its place): said loudly, nothing written through
    the old handle, and no reader makes an empty store where it was."""
    path = tmp_path / "codyd.db"
    with structlog.testing.capture_logs() as logs:
        async with open_store(path) as store:
            record = make_record(tmp_path)
            store.add_run(record)
            await store.sync()
            path.unlink()
            if how == "replaced":
                sqlite3.connect(path).close()
            inode = path.stat().st_ino if how == "replaced" else None
            # Noticed while idle, with nothing to commit.
            await wait_for(lambda: not store.health.writable, timeout=IDENTITY_CHECK_S + 5)
            assert how in str(store.health.last_error)
            store.append(record, "subprocess_output", PAYLOAD)
            with pytest.raises(StoreUnwritable):
                await store.sync()
            # Reads of what was committed go on from the open file.
            assert await store.read("SELECT run_id FROM runs") == [(record.run_id,)]
    errors = store_errors(logs)
    assert errors and how in str(errors[0]["error"]), errors
    if how == "deleted":
        assert not path.exists()
    else:
        assert path.stat().st_ino == inode
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
        conn.close()


async def test_unwritable_store_is_refused_at_open(tmpfs: Path) -> None:
    async with open_store(tmpfs / "codyd.db") as store:
        store.add_run(make_record(tmpfs))
    remount(tmpfs, "ro")
    try:
        with pytest.raises(StoreUnusable, match=str(tmpfs / "codyd.db")):
            async with open_store(tmpfs / "codyd.db"):
                raise AssertionError("opened an unwritable store")
    finally:
        remount(tmpfs, "rw")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a 0444 file anyway")
async def test_read_only_store_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "codyd.db"
    async with open_store(path) as store:
        store.add_run(make_record(tmp_path))
    path.chmod(0o444)
    with pytest.raises(StoreUnusable, match="readonly"):
        Store(path)._open()


# -- turn logs -------------------------------------------------------------------------------


def test_capped_log_on_a_full_device_drops_and_counts() -> None:
    """ENOSPC on every write: nothing raises, every byte is counted as dropped."""
    with structlog.testing.capture_logs() as logs:
        log = CappedLog(Path("/dev/full"), cap=1000)
        log.write(b"hello\n")
        log.write(b"more\n")
        log.close()
    assert (log.written, log.dropped) == (0, 11)
    assert log.error is not None
    assert len([e for e in logs if e["log_level"] == "warning"]) == 1


def test_capped_log_stops_where_the_disk_filled(tmpfs: Path) -> None:
    """The log keeps what fitted; the rest is counted; the turn's writer never sees an error."""
    log = CappedLog(tmpfs / "stdout.log", cap=64 * 1024 * 1024)
    filler = fill(tmpfs)
    # Free a little room: the log takes it, then stops.
    with filler.open("r+b") as handle:
        handle.truncate(filler.stat().st_size - 16 * 1024)
    total = 0
    for _ in range(100):
        log.write(b"y" * 1024)
        total += 1024
    assert log.error is not None and 0 < log.written < total
    assert log.written + log.dropped == total
    filler.unlink()
    log.close()
    content = (tmpfs / "stdout.log").read_bytes()
    assert content.startswith(b"y" * log.written)
    assert f"log stopped at {log.written} bytes".encode() in content
    assert f"{log.dropped} bytes dropped".encode() in content


def test_capped_log_that_cannot_open_drops_everything(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "gone" / "stdout.log", cap=100)
    log.write(b"abc")
    log.close()
    log.close()
    assert (log.written, log.dropped) == (0, 3)


def test_capped_log_without_a_descriptor_left(tmp_path: Path) -> None:
    """EMFILE when the log is opened: the turn's output is dropped and counted, no raise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        # Every descriptor below the limit in use: the next open gets EMFILE.
        top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            held.append(fd)
            if fd >= top:
                break
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd + 1, hard))
        log = CappedLog(tmp_path / "stdout.log", cap=100)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in held:
            os.close(fd)
    assert log.error is not None and log.error.errno == errno.EMFILE
    log.write(b"abc")
    log.close()
    assert (log.written, log.dropped) == (0, 3)


# -- heartbeat ------------------------------------------------------------------------------


def test_heartbeat_failure_is_logged_once_per_episode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "heartbeat"
    payload = {"pid": 1, "ts": time.time(), "active_runs": 0}
    with structlog.testing.capture_logs() as logs:
        failing = _write_heartbeat(path, payload, False)
        failing = _write_heartbeat(path, payload, failing)
        assert failing
        path.parent.mkdir()
        failing = _write_heartbeat(path, payload, failing)
        assert not failing and path.exists()
    levels = [(e["log_level"], e["event"]) for e in logs]
    assert [lvl for lvl, _ in levels] == ["warning", "debug", "info"], levels
