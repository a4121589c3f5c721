"""One POST to a receiver, with httpx on trio; every way it can fail becomes one error.

A receiver's answer is never held whole: it is read up to ``DRAIN_BYTES`` and
dropped, but for the first ``ANSWER_BYTES`` of a refusal, kept for ``last_error``.
The whole attempt, connecting and the answer included, is bounded by the webhook's
``timeout_s`` on trio's clock.
"""

from __future__ import annotations

import time

import httpx
import trio

from codyd import __version__
from codyd.config import WebhookConfig
from codyd.notify.signing import signed_headers

ANSWER_BYTES = 200  # of a refusal's body, in last_error
# An answer is read up to this much, so that its connection can serve the next POST.
DRAIN_BYTES = 64 * 1024


class DeliveryFailed(Exception):
    """The receiver did not take the message; the text says why (for ``last_error``)."""


class Sender:
    def __init__(self, hook: WebhookConfig) -> None:
        self.hook = hook
        self._key = hook.key
        # No proxy or .netrc from the environment: a receiver gets only what is signed.
        self._client = httpx.AsyncClient(
            timeout=hook.timeout_s,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": f"codyd/{__version__}"},
        )

    async def post(self, message_id: str, body: bytes) -> int:
        """POST ``body``; the 2xx status, or :class:`DeliveryFailed`."""
        headers = signed_headers(self._key, message_id, int(time.time()), body)
        with trio.move_on_after(self.hook.timeout_s):
            try:
                return await self._send(headers, body)
            except httpx.TimeoutException:
                pass
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        raise DeliveryFailed(f"no answer within {self.hook.timeout_s:g} s")

    async def _send(self, headers: dict[str, str], body: bytes) -> int:
        request = self._client.build_request("POST", self.hook.url, headers=headers, content=body)
        response = await self._client.send(request, stream=True)
        answer = b""
        read = 0
        try:
            async for chunk in response.aiter_raw():
                if len(answer) < ANSWER_BYTES:
                    answer += chunk[: ANSWER_BYTES - len(answer)]
                read += len(chunk)
                if read >= DRAIN_BYTES:
                    break
        finally:
            await response.aclose()
        if 200 <= response.status_code < 300:
            return response.status_code
        text = answer.decode(errors="replace").strip()
        raise DeliveryFailed(f"HTTP {response.status_code}" + (f": {text}" if text else ""))

    async def aclose(self) -> None:
        await self._client.aclose()
