"""The daemon: one nursery tree owning the store, supervisor, server and heartbeat."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from codyd import __version__
from codyd.config import Config
from codyd.errors import StartupFailure
from codyd.mirror import DISABLED_STATUS, Mirror
from codyd.model.layout import StateLayout
from codyd.notify import Webhooks
from codyd.rpc import Methods
from codyd.runs import procs
from codyd.runs.spawn import CHILDREN
from codyd.runs.supervisor import Supervisor
from codyd.server import Server
from codyd.store import Store, open_store
from codyd.systemd import Notifier

if TYPE_CHECKING:
    from codyd.http import HttpListener

log = structlog.get_logger("codyd")

SHUTDOWN_MARGIN_S = 10.0
STREAMS_FINAL_ANSWER_S = 0.5
RENEW_RETRY_S = 0.1  # the first retry of a lease renewal that failed unexpectedly


class StateDirBusy(StartupFailure):
    """Another daemon holds the state directory."""


class StateDirUnusable(StartupFailure):
    """The state directory cannot be created or written."""


@contextlib.contextmanager
def lock_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold the state directory exclusively while the daemon lives (docs/configuration.md)."""
    lock_path = StateLayout(state_dir).lock
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise StateDirUnusable(
            f"cannot use the state directory {state_dir}: {exc.strerror or exc} ({lock_path})"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise StateDirBusy(
                f"the state directory {state_dir} is in use by another codyd (pid {holder}); "
                "stop it or choose another --state-dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise StateDirUnusable(f"cannot write {lock_path}: {exc.strerror or exc}") from None
        yield
    finally:
        os.close(fd)


class Daemon:
    def __init__(self, config: Config, store: Store, *, handle_signals: bool = True) -> None:
        self.config = config
        self.handle_signals = handle_signals
        self.store = store
        self.supervisor = Supervisor(store, config)
        self.methods = Methods(self)
        self.server = Server(config, self.methods.dispatch)
        self.notifier = Notifier()
        self.started_at = time.time()
        self.mirror: Mirror | None = None
        if config.redis_url is not None:
            self.mirror = Mirror(
                config,
                store,
                self.supervisor,
                started_at=self.started_at,
                active_runs=self.supervisor.active_runs,
            )
        self.webhooks = Webhooks(config.webhooks, store, config.node)
        self.http: HttpListener | None = None
        if config.http_listen is not None:
            from codyd.http import HttpListener  # the ASGI stack loads only when it is on

            self.http = HttpListener(self, config.http_listen)
            store.on_append = self.http.metrics.observe_event
            self.server.on_response = self.http.metrics.observe_request
        self.recovered = False
        self.stopping = False
        self._shutdown = trio.Event()
        self._shutdown_reason = ""

    def request_shutdown(self, reason: str) -> None:
        if not self._shutdown.is_set():
            self._shutdown_reason = reason
            self.supervisor.shutting_down = True
            self._shutdown.set()

    def info(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "node": self.config.node,
            "started_at": self.started_at,
            "uptime_s": time.time() - self.started_at,
            "runs": self.supervisor.counts(),
            "accounts": self.supervisor.accounts(),
            "mirror": self.mirror.status() if self.mirror is not None else dict(DISABLED_STATUS),
            "store": self.store.health_info(),
            "disk": self.supervisor.disk.info(),
            "http": self.http.status() if self.http is not None else {"enabled": False},
            "webhooks": self.webhooks.status(),
            "connections": len(self.server.connections),
        }

    async def wait_shutdown_requested(self) -> None:
        await self._shutdown.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown is requested, then stop; started once listening."""
        # Claim the port and the socket first: a daemon that cannot serve must not touch its
        # runs. The port before the socket, so that a taken port leaves no socket file behind.
        if self.http is not None:
            self.http.bind()
        self.server.bind()
        try:
            await self._run(task_status)
        finally:
            self.notifier.close()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            if self.handle_signals:
                nursery.start_soon(self._watch_signals)
            nursery.start_soon(procs.reaper, CHILDREN.owns)
            await nursery.start(self.supervisor.run)
            self.recovered = True
            if self.mirror is not None:
                await nursery.start(self.mirror.run)
            if self.webhooks:
                await nursery.start(self.webhooks.run)
            server_scope = trio.CancelScope()
            await nursery.start(self._serve, server_scope)
            log.info("listening", socket=str(self.config.socket))
            if self.http is not None:
                await nursery.start(self.http.run)
                log.info("listening for HTTP", address=self.config.http_listen)
            self.notifier.notify("READY=1", "STATUS=ready")
            nursery.start_soon(self._heartbeat)
            nursery.start_soon(self._renew_leases)
            task_status.started()
            await self._shutdown.wait()
            await self._stop(server_scope)
            nursery.cancel_scope.cancel()

    async def _serve(
        self,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            await self.server.serve(task_status=task_status)

    async def _stop(self, server_scope: trio.CancelScope) -> None:
        log.info("shutting down", reason=self._shutdown_reason)
        deadline = trio.current_time() + self.supervisor.max_sigkill_delay() + SHUTDOWN_MARGIN_S
        self.stopping = True
        self.notifier.notify("STOPPING=1", "STATUS=shutting down")
        for connection in list(self.server.connections):
            for call in list(connection.calls.values()):
                if call.is_stream:
                    call.end("shutdown")
        if self.http is not None:
            self.http.end_streams()
        # Within the bound: the turns' stop, then up to 2 s for leases, 1 s for the rest.
        grace = self.supervisor.max_sigkill_delay() + SHUTDOWN_MARGIN_S - 3.0
        await self.supervisor.shutdown(grace)
        log.info("turns stopped; store flushed")
        if self.mirror is not None:
            # Within the shutdown bound, keeping a second for what follows.
            budget = min(self.config.shutdown_flush_s, deadline - 1.5 - trio.current_time())
            await self.mirror.flush(max(0.0, budget))
        # Give open streams a moment to send their final response.
        with trio.move_on_after(STREAMS_FINAL_ANSWER_S):
            await self.server.wait_calls_done()
        server_scope.cancel()
        if self.http is not None:
            self.http.close()
        log.info("socket closed", path=str(self.config.socket))

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received", signal=signal.Signals(signum).name)
                self.request_shutdown(signal.Signals(signum).name)

    async def _renew_leases(self) -> None:
        """Every held lease, in one round trip, every lease_ttl_s / 3.

        Its own task: a slow Redis delays renewals, never the heartbeat (and so
        never systemd's watchdog). An unexpected error in a renewal is logged
        and the renewal tried again sooner, backing off (doubling from 0.1 s up
        to the period): the daemon and its runs go on.
        """
        period = self.config.lease_ttl_s / 3
        failures = 0
        while True:
            retry_in = RENEW_RETRY_S * 2 ** min(failures - 1, 16) if failures else period
            await trio.sleep(min(period, retry_in))
            try:
                lost = await self.supervisor.leases.renew_all()
                for run_id, holder in lost.items():
                    self.supervisor.lease_lost(run_id, holder)
            except Exception:
                failures += 1
                log.exception("lease renewal failed; retrying", failures=failures)
            else:
                failures = 0

    async def _heartbeat(self) -> None:
        period = self.config.heartbeat_s
        if self.notifier.watchdog_s is not None:
            period = min(period, self.notifier.watchdog_s / 2)
        path = StateLayout(self.config.state_dir).heartbeat
        failing = False
        while True:
            active = self.supervisor.active_runs()
            payload = {"pid": os.getpid(), "ts": time.time(), "active_runs": active}
            failing = _write_heartbeat(path, payload, failing)
            messages = [f"STATUS={active} active runs"]
            if self.notifier.watchdog_s is not None:
                messages.insert(0, "WATCHDOG=1")
            self.notifier.notify(*messages)
            await trio.sleep(period)


def _write_heartbeat(path: Path, payload: dict[str, Any], failing: bool) -> bool:
    """Write the heartbeat file; True while it cannot be written (said once per episode).

    A full disk or a removed state directory costs the file, never the daemon: the
    next beat tries again.
    """
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(payload) + "\n")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if failing:
            log.debug("heartbeat file still cannot be written", path=str(path), error=str(exc))
        else:
            log.warning(
                "cannot write the heartbeat file; retrying every beat",
                path=str(path),
                error=str(exc),
            )
        return True
    if failing:
        log.info("heartbeat file written again", path=str(path))
    return False


@contextlib.asynccontextmanager
async def open_daemon(
    config: Config, *, handle_signals: bool = True, subreaper: bool = True
) -> AsyncIterator[Daemon]:
    """A whole daemon (store, supervisor, server on ``config.socket``), listening.

    The one start-up path: :func:`serve` runs it until a signal, and tests run it
    in-process, calling the Daemon's methods or connecting to its socket. Leaving
    the block shuts the daemon down as SIGTERM would and closes the store. Without
    ``handle_signals`` the test's own signals stay its own; without ``subreaper``
    the test process keeps its parentage rules (the setting lasts the process's
    life). Locking the state directory is the caller's (see :func:`lock_state_dir`).
    """
    if subreaper:
        procs.become_subreaper()
    async with open_store(
        StateLayout(config.state_dir).db,
        max_events_per_run=config.event_retention.max_events_per_run,
        max_runs=config.event_retention.max_runs,
        run_files=StateLayout(config.state_dir).run_dir,
    ) as store:
        daemon = Daemon(config, store, handle_signals=handle_signals)
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            try:
                yield daemon
            finally:
                daemon.request_shutdown("closed")
    log.info("stopped")


async def serve(config: Config) -> None:
    async with open_daemon(config) as daemon:
        await daemon.wait_shutdown_requested()
