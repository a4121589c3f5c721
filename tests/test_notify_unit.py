"""The pieces of a webhook message: its id, its body and its signature."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from codyd.config import WebhookConfig
from codyd.model.events import Event
from codyd.notify import payload
from codyd.notify.signing import signed_headers

EVENT = Event(42, "r1", 7, 1_700_000_000.25, "run_failed", 3, {"error": {"code": "x"}})


def test_the_signature_verifies_with_the_reference_library() -> None:
    """Signed with the decoded key of a whsec_ secret, or the bytes of any other."""
    for secret in ("whsec_" + base64.b64encode(b"k" * 24).decode(), "plain words"):
        hook = WebhookConfig(name="a", url="http://h/", secret=secret)
        body = payload.body(EVENT, {"run_id": "r1"})
        headers = signed_headers(hook.key, "n:42", 1_700_000_000, body)
        verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode())
        # The reference library refuses a stale timestamp: check the signature itself.
        expected = verifier.sign("n:42", datetime.fromtimestamp(1_700_000_000, UTC), body)
        assert headers["webhook-signature"] == expected


def test_the_body_carries_the_event_and_its_run() -> None:
    document = json.loads(payload.body(EVENT, {"run_id": "r1", "state": "failed"}))
    assert document == {
        "type": "run_failed",
        "timestamp": "2023-11-14T22:13:20.250Z",
        "data": {"event": EVENT.to_wire(), "run": {"run_id": "r1", "state": "failed"}},
    }
    assert payload.message_id("node-a", EVENT) == "node-a:42"
