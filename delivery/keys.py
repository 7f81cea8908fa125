"""`EndpointKeys`: makes endpoint signing secrets and payload keys, and seals them at rest.

Implements `ledger.webhooks.EndpointSecrets` with AES-256-GCM (`delivery.crypto.SecretBox`)
under the service's secret key (`LEDGER_SECRET_KEY`), so the ledger only ever stores sealed
values. Losing that key makes every endpoint's secret unreadable: rotate each endpoint's
secret after replacing it. This module must never log or return a key it was given.
"""

from __future__ import annotations

from delivery.crypto import SecretBox, new_payload_key
from delivery.signing import new_secret


class EndpointKeys:
    def __init__(self, box: SecretBox) -> None:
        self._box = box

    def new_signing_secret(self) -> str:
        return new_secret()

    def new_payload_key(self) -> str:
        return new_payload_key()

    def seal(self, plaintext: str) -> str:
        return self._box.seal(plaintext)

    def open(self, sealed: str) -> str:
        return self._box.open(sealed)
