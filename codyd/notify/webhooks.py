"""Every configured webhook: one :class:`Delivery` task each, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from codyd.config import WebhookConfig
from codyd.store import Store

if TYPE_CHECKING:
    from codyd.notify.delivery import Delivery


class Webhooks:
    def __init__(self, hooks: Sequence[WebhookConfig], store: Store, node: str) -> None:
        self.deliveries: dict[str, Delivery] = {}
        if hooks:
            from codyd.notify.delivery import Delivery  # the HTTP client loads only when needed

            self.deliveries = {hook.name: Delivery(hook, store, node) for hook in hooks}

    def __bool__(self) -> bool:
        return bool(self.deliveries)

    def status(self) -> dict[str, Any]:
        """``daemon.info.webhooks``: ``{<name>: {lag_events, last_error, last_success_at}}``."""
        return {name: delivery.status() for name, delivery in self.deliveries.items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every webhook's task; a slow or failing receiver holds back only its own."""
        async with trio.open_nursery() as nursery:
            for delivery in self.deliveries.values():
                await nursery.start(delivery.run)
            task_status.started()
