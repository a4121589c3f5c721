"""What the HTTP listener uses of the daemon that runs it.

Typed as a protocol, so the listener sits below :mod:`codyd.daemon` in the import
graph (the daemon builds the listener; nothing here imports the daemon).
"""

from __future__ import annotations

from typing import Protocol

from codyd.mirror import Mirror
from codyd.notify import Webhooks
from codyd.rpc import DaemonView, Methods
from codyd.server import Server


class HttpDaemon(DaemonView, Protocol):
    """The socket methods' view of the daemon, plus what only HTTP needs."""

    methods: Methods
    server: Server
    mirror: Mirror | None
    webhooks: Webhooks
    recovered: bool  # start-up recovery is done: /readyz may say ready
