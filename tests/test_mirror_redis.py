"""The mirror in-process against a real redis-server: faults that are bugs, not outages.

A bug is injected into an otherwise real link (its first calls raise before anything is
sent); everything else — store, Redis, threads — is real.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from codyd.config import load_config
from codyd.mirror import Mirror
from codyd.mirror.redis_io import RedisLink
from codyd.model.record import RunRecord
from codyd.spec import parse_run_spec
from codyd.store import Store, open_store

from redis_server import RedisServer

PREFIX = "u:"
FAILED = "mirror failed unexpectedly; retrying"


class Target:
    """Control is not exercised here: nothing may call it."""

    shutting_down = False

    async def pause(self, run_id: Any, reason: str | None, now: bool, source: str = "") -> Any:
        raise AssertionError("no control expected")

    async def resume(self, run_id: Any, source: str = "") -> Any:
        raise AssertionError("no control expected")

    async def cancel(self, run_id: Any, reason: str | None, source: str = "") -> Any:
        raise AssertionError("no control expected")


class BuggyLink(RedisLink):
    """A real link whose first ``failures`` pipelines and every delete hit a bug."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures

    async def pipeline(self, build: Callable[[], tuple[bytes, int]]) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise KeyError("a bug in the mirror")
        return await super().pipeline(build)

    async def delete(self, key: str) -> None:
        raise ZeroDivisionError("a bug while flushing")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.remove()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "store.db") as opened:
        yield opened


def mirror_for(tmp_path: Path, store: Store, server: RedisServer, failures: int) -> Mirror:
    env = {"HOME": str(tmp_path), "CODYD_REDIS_URL": server.url, "CODYD_KEY_PREFIX": PREFIX}
    config = load_config(env=env)
    link = BuggyLink(server.url, failures)
    return Mirror(config, store, Target(), started_at=time.time(), active_runs=lambda: 0, link=link)


async def some_events(tmp_path: Path, store: Store, count: int) -> RunRecord:
    params = {"workspace": str(tmp_path), "prompt": "x", "command": ["true"], "run_id": "r1"}
    record = RunRecord(spec=parse_run_spec(params), node="n", created_at=time.time())
    store.add_run(record)
    for n in range(count):
        store.append(record, "custom", {"n": n})
    await store.sync()
    return record


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Bounded poll on the trio clock."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_bug_is_logged_with_its_traceback_and_retried(
    tmp_path: Path, store: Store, redis_server: RedisServer
) -> None:
    """Unexpected exceptions in the mirror are logged with a traceback and retried with backoff; the events still arrive, once each."""
    await some_events(tmp_path, store, 50)
    mirror = mirror_for(tmp_path, store, redis_server, failures=3)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            await wait_for(lambda: mirror.connected and mirror.lag_events == 0)
            nursery.cancel_scope.cancel()
    failures = [entry for entry in logs if entry["event"] == FAILED]
    assert len(failures) == 3
    assert all(entry["exc_info"] is True and entry["log_level"] == "error" for entry in failures)
    assert failures[0]["error"] == "'a bug in the mirror'"
    retries = [entry["in_s"] for entry in logs if entry["event"] == "mirror retrying"]
    assert retries == [0.1, 0.2, 0.4]
    assert redis_server.client().xlen(f"{PREFIX}run:r1:events") == 50


async def test_a_bug_while_flushing_does_not_reach_the_shutdown(
    tmp_path: Path, store: Store, redis_server: RedisServer
) -> None:
    """flush reports False and logs the traceback instead of raising into the daemon's shutdown."""
    await some_events(tmp_path, store, 5)
    mirror = mirror_for(tmp_path, store, redis_server, failures=0)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(mirror.run)
            flushed = await mirror.flush(5.0)
            nursery.cancel_scope.cancel()
    assert flushed is False
    failed = [entry for entry in logs if entry["event"].startswith("mirror failed while flushing")]
    assert len(failed) == 1 and failed[0]["exc_info"] is True
    assert redis_server.client().xlen(f"{PREFIX}events") == 5
