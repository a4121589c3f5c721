"""One webhook's task: follows the store from a durable cursor and POSTs the events it wants.

At least once, in order: the task reads committed events after its cursor (a gid,
kept in the store as ``webhook.<name>.cursor``), sends them one at a time, and
moves the cursor past an event only once the receiver answered 2xx. A daemon that
stops before the cursor reached the disk sends that event again on its next start,
with the same ``webhook-id``.

A receiver that refuses, fails or is too slow is tried again after a delay on trio's
clock (``backoff_s``, doubling, capped at ``backoff_max_s``) until it takes the event:
events behind it wait in the store, not in memory (``lag_events`` grows). Nothing a
run does waits for a webhook, and each webhook has its own task.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from codyd.config import WebhookConfig, redact_url
from codyd.mirror.backoff import Backoff
from codyd.model.events import Event
from codyd.notify import payload
from codyd.notify.sender import DeliveryFailed, Sender
from codyd.store import Store

log = structlog.get_logger("codyd.notify")

# Events read from the store at a time: what a webhook holds in memory, at most.
BATCH_EVENTS = 64
# While events flow the cursor is saved at most this often (each save is a store commit);
# a crash sends again at most what was delivered since, with the same webhook-id.
CURSOR_SAVE_S = 0.5
# An idle task looks at the store at least this often, even without a commit.
IDLE_CHECK_S = 5.0


def cursor_key(name: str) -> str:
    return f"webhook.{name}.cursor"


class Delivery:
    """Delivers the events one webhook subscribes to; ``run`` is its task."""

    def __init__(
        self, hook: WebhookConfig, store: Store, node: str, sender: Sender | None = None
    ) -> None:
        self.hook = hook
        self.store = store
        self.node = node
        self.sender = sender if sender is not None else Sender(hook)
        self.cursor = 0
        self._saved_cursor: int | None = None
        self._next_save = 0.0
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self._backoff = Backoff(first_s=hook.backoff_s, cap_s=hook.backoff_max_s)
        self._types = None if hook.all_events else hook.events

    @property
    def lag_events(self) -> int:
        """Committed gids after the cursor: 0 once every wanted event was delivered.

        Counted in gids, like the mirror's: while an event waits for its receiver,
        every event committed after it counts, wanted or not.
        """
        return max(0, self.store.committed_gid - self.cursor)

    def status(self) -> dict[str, Any]:
        """This webhook's entry in ``daemon.info.webhooks``."""
        return {
            "lag_events": self.lag_events,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
        }

    # -- the task ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.info(
            "webhook started",
            webhook=self.hook.name,
            url=redact_url(self.hook.url),
            events=list(self.hook.events),
        )
        task_status.started()
        try:
            await self._with_retries(self._load)
            while True:
                await self._with_retries(self._cycle)
        finally:
            self._save_cursor(force=True)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self.sender.aclose()

    async def _with_retries(self, step: Callable[[], Awaitable[None]]) -> None:
        """``step()`` once; a fault of codyd's own (a store read, a bug) is logged and retried."""
        while True:
            try:
                await step()
                return
            except Exception as exc:
                # A webhook is not worth the daemon: its fault stays in its task.
                self.last_error = f"internal: {type(exc).__name__}: {exc}"
                log.exception("webhook failed unexpectedly; retrying", webhook=self.hook.name)
                await trio.sleep(self._backoff.next_delay())

    async def _load(self) -> None:
        saved = await self.store.kv_get(cursor_key(self.hook.name))
        committed = self.store.committed_gid
        if saved is None or not saved.isdigit():
            # A new webhook gets what happens from now on, not the store's whole history.
            if saved is not None:
                log.warning(
                    "webhook cursor in the store is not a number; starting from now",
                    webhook=self.hook.name,
                )
            self.cursor = committed
            self._save_cursor(force=True)
        else:
            self.cursor = int(saved)
            self._saved_cursor = self.cursor
            if self.cursor > committed:
                # A store restored from an older copy: what it holds after now is new.
                log.warning(
                    "webhook cursor is ahead of the store; going back",
                    webhook=self.hook.name,
                    cursor=self.cursor,
                    committed_gid=committed,
                )
                self.cursor = committed
        self._backoff.reset()
        log.info("webhook resumes", webhook=self.hook.name, cursor=self.cursor)

    async def _cycle(self) -> None:
        upto = self.store.committed_gid
        if upto <= self.cursor:
            self._save_cursor(force=True)
            with trio.move_on_after(IDLE_CHECK_S):
                await self.store.wait_committed()
            return
        events = await self.store.read_events(None, self.cursor, self._types, BATCH_EVENTS)
        for event in events:
            await self._deliver(event)
            self.cursor = event.gid
            self._save_cursor()
        if len(events) < BATCH_EVENTS:
            # Every wanted event up to ``upto`` was sent: the rest are of other types.
            self.cursor = max(self.cursor, upto)
            self._save_cursor()

    async def _deliver(self, event: Event) -> None:
        """POST ``event`` until its receiver takes it."""
        record = self.store.runs.get(event.run_id)
        body = payload.body(event, record.summary() if record is not None else None)
        message_id = payload.message_id(self.node, event)
        failing = False
        while True:
            try:
                await self.sender.post(message_id, body)
            except DeliveryFailed as exc:
                self.last_error = str(exc)
                delay = self._backoff.next_delay()
                self._save_cursor(force=True)
                (log.debug if failing else log.warning)(
                    "webhook delivery failed; retrying",
                    webhook=self.hook.name,
                    webhook_id=message_id,
                    error=self.last_error,
                    in_s=delay,
                    lag_events=self.lag_events,
                )
                failing = True
                await trio.sleep(delay)
                continue
            break
        self._backoff.reset()
        self.last_success_at = time.time()
        if failing:
            log.info("webhook delivers again", webhook=self.hook.name, webhook_id=message_id)

    def _save_cursor(self, *, force: bool = False) -> None:
        """Queue the cursor for the store's next commit: when forced, else at most every 0.5 s."""
        now = trio.current_time()
        if self.cursor != self._saved_cursor and (force or now >= self._next_save):
            self.store.kv_set(cursor_key(self.hook.name), str(self.cursor))
            self._saved_cursor = self.cursor
            self._next_save = now + CURSOR_SAVE_S
