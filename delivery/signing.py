"""Webhook signing by the Standard Webhooks specification (https://www.standardwebhooks.com).

What this module is for: turning a delivery (message id, attempt timestamp, body bytes) and the
endpoint's signing secrets into the `webhook-*` headers that any Standard Webhooks library
verifies, and verifying them again (for our own tests and for the consumer guide).

- Secrets look like `whsec_<base64>`: 32 random bytes for the secrets we make; 24 to 64 bytes
  are accepted, so secrets made by other Standard Webhooks tools can be imported.
- The signed content is `b"{msg_id}.{timestamp}." + body`, exactly the bytes that are sent.
  When a payload is encrypted for an endpoint, the encrypted envelope is what is signed.
- `webhook-signature` lists one `v1,<base64 HMAC-SHA256>` per secret, space-separated: the
  current secret first, then secrets still in their rotation grace period, so consumers that
  have not switched yet keep verifying.
- `webhook-id` is the same on every retry of one delivery (`message_id(delivery_id)`), so a
  consumer can drop duplicates; `webhook-timestamp` is the unix time of this attempt.

What it must never do: any I/O, read a clock, settings or the environment (the timestamp and
`now` are arguments), log or put a secret into an exception message, or compare signatures
with `==` (always `hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import uuid
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
SIGNATURE_VERSION = "v1"
USER_AGENT = "job-ledger-webhooks/1"
CONTENT_TYPE = "application/json"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The webhook signature does not verify."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.message)


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and the padded base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The HMAC key inside a `whsec_...` secret (the prefix is optional; padding may be omitted).

    Raises ValueError naming the problem, never echoing the secret.
    """
    text = secret.removeprefix(SECRET_PREFIX).strip()
    if not text:
        raise ValueError("signing secret is empty")
    if not text.isascii():
        raise ValueError("signing secret is not base64 (non-ASCII characters)")
    padded = text + "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret is not valid base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"signing secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"this one holds {len(key)}"
        )
    return key


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, _signed_content(msg_id, timestamp, body), hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}." + body>` with the secret's key."""
    digest = _digest(secret_bytes(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated, in order.

    Pass the current secret first, then the secrets still in their rotation grace period.
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header a webhook request carries (Standard Webhooks plus content type and agent)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
    }


def message_id(delivery_id: uuid.UUID) -> str:
    """The stable `webhook-id` of a delivery: `msg_` and 32 hex digits (no dots)."""
    return f"msg_{delivery_id.hex}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check a received webhook as a consumer would; raise SignatureError if it does not verify.

    `headers` may use any letter case. `now` is the receiver's unix time; the timestamp must be
    within `tolerance` seconds of it either way (replay protection). Any one `v1` signature made
    with `secret` is enough; signatures of other versions are ignored.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lowered.get(name):
            raise SignatureError(f"missing header {name}")
    msg_id = lowered["webhook-id"]
    stamp = lowered["webhook-timestamp"].strip()
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 15):
        raise SignatureError("webhook-timestamp is not unix seconds")
    timestamp = int(stamp)
    if timestamp < now - tolerance:
        raise SignatureError("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise SignatureError("webhook-timestamp is too new")
    expected = _digest(secret_bytes(secret), msg_id, timestamp, body)
    for entry in lowered["webhook-signature"].split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, candidate):
            return
    raise SignatureError("no matching signature")
