"""`WebhookTester`: what `POST /v1/endpoints/{id}/test` uses to send a test delivery now.

`delivery.sender.Sender` implements it: `deliver_now` leases the delivery (so no claim loop
sends it at the same time), makes exactly one attempt, signed and sent like any other through
the target guard, records it in the ledger and returns what went over the wire. The app is
given one by the composition root, and its lifespan closes it (its HTTP client lives on the
app's event loop); without one, the test route answers 503 `webhooks-unavailable`.

`render_test_exchange` turns that result into the JSON the route answers: the request exactly
as sent (method, URL, headers, body) and the response (status, headers, body excerpt, latency)
or the error that stood in for one. The request's `webhook-signature` header is an HMAC, not a
secret; nothing here may ever add a signing secret or payload key.
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from delivery.sender import SentAttempt


class WebhookTester(Protocol):
    async def deliver_now(self, delivery_id: UUID) -> SentAttempt:
        """Send the delivery's next attempt now and record it (`Sender.deliver_now`)."""
        ...

    async def aclose(self) -> None:
        """Close the HTTP client (on the loop it was used on)."""
        ...


def render_test_exchange(sent: SentAttempt) -> dict[str, Any]:
    return {
        "succeeded": sent.succeeded,
        "request": {
            "method": sent.request.method,
            "url": sent.request.url,
            "headers": dict(sent.request.headers),
            "body": sent.request.body,
        },
        "response": {
            "status_code": sent.response.status_code,
            "headers": dict(sent.response.headers),
            "body": sent.response.body,
            "latency_ms": sent.response.latency_ms,
            "error_class": sent.error_class,
            "error": sent.error,
        },
    }
