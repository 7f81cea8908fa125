"""AES-256-GCM for webhooks: signing secrets sealed at rest, and optional payload encryption.

What this module is for:

- `SecretBox` seals an endpoint's signing secrets before they are stored, with a 32-byte key
  from the settings (`SecretBox.from_setting`, `generate_key`). A sealed value is
  `v1.<base64url(nonce 12 bytes + ciphertext + tag 16 bytes)>`, unpadded, with a fresh random
  nonce each time. Pass the endpoint's id as `associated_data` when sealing and opening, so a
  sealed secret copied onto another endpoint's row does not open. The `v1.` prefix leaves room
  for a later format (e.g. a key id for rotating the storage key).
- Payload encryption per endpoint (the Pinterest Lead Ads delivery model, opt-in): the body
  becomes `{"encryption": "A256GCM", "iv", "ciphertext", "tag"}` (standard base64) under the
  endpoint's own 32-byte key, given to the tenant once at registration. The envelope is what is
  signed and sent, so the signature covers exactly the bytes on the wire.

What it must never do: reuse a nonce with a key (nonces are random, 96 bits, one per message),
put keys, secrets or plaintext into exception messages or logs, or return unauthenticated data
(GCM's tag is checked before anything is returned).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEALED_PREFIX = "v1."
PAYLOAD_ENCRYPTION = "A256GCM"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class SealError(Exception):
    """The sealed value or encrypted payload could not be opened (tampered, or a wrong key)."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.message)


def _decode_key(text: str, what: str) -> bytes:
    cleaned = text.strip()
    try:
        padded = cleaned + "=" * (-len(cleaned) % 4)
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes of base64, not {len(key)} bytes")
    return key


def generate_key() -> str:
    """A new storage key for `SecretBox.from_setting`: base64 of 32 random bytes."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class SecretBox:
    """Seals and opens short strings (signing secrets) with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a SecretBox key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._key = key

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_setting(cls, text: str) -> SecretBox:
        """A box from a setting holding the base64 (standard or url-safe) of a 32-byte key."""
        return cls(_decode_key(text, "the secret-box key"))

    def derive(self, label: str) -> bytes:
        """A 32-byte key for another purpose, HMAC-SHA256(this key, label): one configured
        secret serves several uses (e.g. console sessions) without the key itself being reused."""
        return hmac.new(self._key, label.encode("utf-8"), hashlib.sha256).digest()

    def seal(self, plaintext: str, *, associated_data: bytes | None = None) -> str:
        """`v1.` and the unpadded base64url of nonce + ciphertext + tag."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), associated_data)
        token = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return SEALED_PREFIX + token

    def open(self, token: str, *, associated_data: bytes | None = None) -> str:
        """The plaintext of a `seal` result; SealError if tampered, truncated or a wrong key."""
        if not token.startswith(SEALED_PREFIX):
            raise SealError("not a sealed value (expected the prefix 'v1.')")
        body = token[len(SEALED_PREFIX) :]
        if not _BASE64URL.fullmatch(body):
            raise SealError("the sealed value is not valid base64url")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise SealError("the sealed value is not valid base64url") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealError("the sealed value is too short")
        try:
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise SealError() from None
        return plain.decode("utf-8")


def new_payload_key() -> str:
    """A new per-endpoint payload key: base64 of 32 random bytes (shown to the tenant once)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt_payload(
    key_b64: str, body: bytes, *, rng: Callable[[int], bytes] | None = None
) -> bytes:
    """The JSON envelope `{"encryption": "A256GCM", "iv", "ciphertext", "tag"}` of `body`.

    `rng(n)` gives the n-byte IV (default `os.urandom`); tests may pass a seeded source, and
    production code never should.
    """
    key = _decode_key(key_b64, "the payload key")
    iv = (rng or os.urandom)(NONCE_BYTES)
    if len(iv) != NONCE_BYTES:
        raise ValueError(f"the IV source gave {len(iv)} bytes, not {NONCE_BYTES}")
    sealed = AESGCM(key).encrypt(iv, body, None)
    return orjson.dumps(
        {
            "encryption": PAYLOAD_ENCRYPTION,
            "iv": _b64(iv),
            "ciphertext": _b64(sealed[:-TAG_BYTES]),
            "tag": _b64(sealed[-TAG_BYTES:]),
        }
    )


def decrypt_payload(key_b64: str, envelope: bytes) -> bytes:
    """The body inside an `encrypt_payload` envelope; SealError if it is not one or was altered."""
    key = _decode_key(key_b64, "the payload key")
    try:
        fields = orjson.loads(envelope)
    except orjson.JSONDecodeError:
        raise SealError("the payload is not JSON") from None
    if not isinstance(fields, dict) or fields.get("encryption") != PAYLOAD_ENCRYPTION:
        raise SealError(f"the payload is not an {PAYLOAD_ENCRYPTION} envelope")
    parts: dict[str, bytes] = {}
    for name in ("iv", "ciphertext", "tag"):
        value = fields.get(name)
        if not isinstance(value, str):
            raise SealError(f"the envelope has no {name}")
        try:
            parts[name] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SealError(f"the envelope's {name} is not valid base64") from None
    if len(parts["iv"]) != NONCE_BYTES or len(parts["tag"]) != TAG_BYTES:
        raise SealError(f"the envelope needs a {NONCE_BYTES}-byte iv and a {TAG_BYTES}-byte tag")
    try:
        return AESGCM(key).decrypt(parts["iv"], parts["ciphertext"] + parts["tag"], None)
    except InvalidTag:
        raise SealError() from None
