"""The HTTP server's own refusals carry codyd's JSON error body (docs/http.md, Limits).

hypercorn answers a request it cannot parse (a head past the size limit, bytes that are
not HTTP/1.1) itself, before any route runs, with an empty body. Every other refusal of
codyd's has the ``{"error": {code, message, retryable, data}}`` body, so the one method
hypercorn sends those answers with is replaced here, once, by one that sends that body.
Without the method (another hypercorn release) the empty answers stay, and the test of
hostile clients says so.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import h11

MESSAGES = {
    400: "the request is not HTTP/1.1 that codyd can read",
    431: "the request head (request line and headers) is too large",
}


def error_body(status: int) -> bytes:
    message = MESSAGES.get(status, f"the request was refused ({status})")
    error = {"code": "bad_request", "message": message, "retryable": False, "data": {}}
    return json.dumps({"error": error}).encode()


def install() -> bool:
    """Make hypercorn's HTTP/1.1 refusals JSON; True when it could be done."""
    try:
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:  # pragma: no cover - hypercorn without its h11 protocol
        return False
    if not hasattr(H11Protocol, "_send_error_response"):
        return False
    if getattr(H11Protocol._send_error_response, "codyd", False):
        return True

    async def send_error_response(self: Any, status_code: int) -> None:
        body = error_body(status_code)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(
            status_code=status_code,
            headers=list(chain(headers, self.config.response_headers("h11"))),
        )
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    send_error_response.codyd = True  # type: ignore[attr-defined]
    H11Protocol._send_error_response = send_error_response  # type: ignore[method-assign]
    return True
