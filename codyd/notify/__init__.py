"""Webhooks: events from the store POSTed to receivers, signed, at least once (docs/http.md).

What is sent and how to receive it: docs/http.md, "Webhooks".
"""

from codyd.notify.webhooks import Webhooks

__all__ = ["Webhooks"]
