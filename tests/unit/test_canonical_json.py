"""The canonical JSON that event hashes and request fingerprints are computed over: stored
hashes were computed with it, so its bytes must never change (a faster encoder, a library
upgrade). A hash computed by hand from the documented form is pinned here."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from uuid import UUID

from ledger.audit import hash_event


def test_a_stored_hash_stays_what_it_was() -> None:
    """A hash computed before the fast path existed: any change of form shows here."""
    fields = {
        "originator_id": UUID("0b7e4c1e-2f7a-4b8e-9c1d-3a5f6e7d8c9b"),
        "originator_version": 1,
        "timestamp": datetime(2026, 11, 24, 14, 30, 5, 123456, tzinfo=UTC),
        "tenant_id": "tn_1",
        "pin": {"title": 'Café "crème"', "link": None, "tags": ["a", "b"]},
        "metadata": {"z": "1", "a": "2"},
        "publish_at": None,
        "simulate": ["timeout"],
        "prev_hash": "0" * 64,
        "hash": "ignored: the hash is not part of its own body",
    }
    assert hash_event("job-ledger:JobCreated:v1", fields) == (
        hashlib.sha256(
            b'{"metadata":{"a":"2","z":"1"},"originator_id":"0b7e4c1e-2f7a-4b8e-9c1d-3a5f6e7d8c9b",'
            b'"originator_version":1,"pin":{"link":null,"tags":["a","b"],'
            b'"title":"Caf\xc3\xa9 \\"cr\xc3\xa8me\\""},"prev_hash":"'
            + b"0"
            * 64
            + b'","publish_at":null,"simulate":["timeout"],"tenant_id":"tn_1",'
            b'"timestamp":"2026-11-24T14:30:05.123456+00:00",'
            b'"topic":"job-ledger:JobCreated:v1"}'
        ).hexdigest()
    )
