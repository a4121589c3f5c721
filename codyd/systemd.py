"""The systemd notify protocol: READY, STOPPING, WATCHDOG and STATUS datagrams."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends ``sd_notify`` messages to ``$NOTIFY_SOCKET``; does nothing without it."""

    def __init__(self) -> None:
        env = os.environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and watchdog_for_us else None
        self._sock: socket.socket | None = None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
