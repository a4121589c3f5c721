"""A real webhook receiver for the tests: an HTTP server on loopback in the test process.

It checks every request's signature with the ``standardwebhooks`` reference library,
records what it was sent, and answers as a test tells it: a status for the next few
requests, or no answer at all until released (a receiver too slow for the timeout).
It can close its port and open it again, as a receiver that goes down and comes back.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HOLD_LIMIT_S = 30.0  # a held request is answered after this at the latest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: int
    headers: dict[str, str]
    body: dict[str, Any]
    status: int  # what the receiver answered

    @property
    def gid(self) -> int:
        return int(self.webhook_id.rsplit(":", 1)[1])


class Receiver:
    def __init__(self, secret: str | bytes, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._verifier = Webhook(secret)
        self._changed = threading.Condition()
        self.requests: list[Received] = []  # every request, whatever was answered
        self.refused_signatures: list[str] = []
        self.statuses: list[int] = []  # answers for the next requests; then 200
        self.holding = False
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- lifetime ------------------------------------------------------------------------------

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: a POST now fails to connect."""
        if self._server is not None:
            self.release()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def hold(self) -> None:
        """Answer nothing until :meth:`release` (or ``HOLD_LIMIT_S``)."""
        self._release.clear()
        self.holding = True

    def release(self) -> None:
        self.holding = False
        self._release.set()

    # -- what arrived --------------------------------------------------------------------------

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        with self._changed:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait_delivered(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until ``count`` distinct webhook-ids were answered 2xx; all 2xx requests."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: len({r.webhook_id for r in self.requests if r.status < 300}) >= count,
                timeout,
            )
            got = [r for r in self.requests if 200 <= r.status < 300]
        assert done, f"{len(got)} deliveries of {count} within {timeout}s: {got}"
        return got

    def wait_requests(self, count: int, timeout: float = 20.0) -> list[Received]:
        with self._changed:
            done = self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            got = list(self.requests)
        assert done, f"{len(got)} requests of {count} within {timeout}s"
        return got

    # -- the handler ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers["content-length"]))
        headers = {key.lower(): value for key, value in handler.headers.items()}
        try:
            body = self._verifier.verify(raw, headers)
        except WebhookVerificationError as exc:
            with self._changed:
                self.refused_signatures.append(f"{headers.get('webhook-id')}: {exc}")
                self._changed.notify_all()
            self._answer(handler, 400)
            return
        if self.holding:
            self._release.wait(HOLD_LIMIT_S)
        # Recorded before it is answered: once the sender has its answer it may send the next
        # event on another connection, whose handler must not record it first.
        with self._changed:
            status = self.statuses.pop(0) if self.statuses else 200
            self.requests.append(
                Received(
                    headers["webhook-id"], int(headers["webhook-timestamp"]), headers, body, status
                )
            )
            self._changed.notify_all()
        self._answer(handler, status)

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int) -> None:
        text = json.dumps({"status": status}).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(text)))
            handler.end_headers()
            handler.wfile.write(text)
        except OSError:
            pass  # the client gave up (a timeout): it sends again
