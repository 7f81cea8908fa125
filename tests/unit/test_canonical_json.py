"""The canonical JSON that event hashes and request fingerprints are computed over: stored
hashes were computed with it, so its bytes must never change (a faster encoder, a library
upgrade). A hash computed by hand from the documented form is pinned here."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit import _reference_json, canonical_json, hash_event


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


# -- the fast path writes the reference's bytes --

_TIMEZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min])
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson refuses those, the reference writes them
    | st.floats()  # NaN and infinities too
    | st.text()
    | st.uuids()
    | st.datetimes(timezones=_TIMEZONES)
    | st.datetimes()  # naive: refused by both
    | st.decimals(allow_nan=False)
    | st.frozensets(st.text(max_size=3), max_size=3)
)
_KEYS = st.text() | st.integers(-5, 5)  # integer keys: orjson refuses them, json writes them
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=12,
)


def _outcome(encode: Callable[[Any], bytes], body: Any) -> bytes | type[BaseException]:
    try:
        return encode(body)
    except Exception as error:  # the kind of failure is what is compared
        return type(error)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.text(), _VALUES, max_size=6))
def test_the_fast_path_writes_the_reference_bytes_or_fails_the_same_way(body) -> None:
    assert _outcome(canonical_json, body) == _outcome(_reference_json, body)


@pytest.mark.parametrize(
    ("value", "written"),
    [(1e-05, b"1e-05"), (float("nan"), b"NaN"), (0.5, b"0.5"), (2**64, b"18446744073709551616")],
)
def test_values_orjson_writes_otherwise_take_the_reference(value, written) -> None:
    """orjson writes 1e-05 as 0.00001, NaN as null, and refuses ints beyond 64 bits."""
    assert canonical_json({"v": [value]}) == b'{"v":[' + written + b"]}"
