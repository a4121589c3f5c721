"""Webhooks: events from the store POSTed to receivers, signed, at least once (SPEC 11).

What is sent and how to receive it: docs/http.md, "Webhooks".
"""

from codyd.notify.webhooks import Webhooks

__all__ = ["Webhooks"]
