"""`storage.transcoder.OrjsonTranscoder` against eventsourcing's `JSONTranscoder` as the
oracle: the same bytes out, the same objects back, the same refusals."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum, IntEnum, StrEnum
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.config import parse_database_url
from storage.transcoder import OrjsonTranscoder


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


ORACLE = _registered(JSONTranscoder())
FAST = _registered(OrjsonTranscoder())

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    st.decimals(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        # what eventsourcing writes for a transcoded value, nested in a document
        st.fixed_dictionaries({"_type_": st.just("uuid_hex"), "_data_": st.uuids().map(str)}),
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, counting NaN equal to NaN (the oracle reads its own `NaN` back as a NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_it_writes_and_reads_what_the_json_transcoder_does(state: dict[str, Any]) -> None:
    ours, theirs = FAST.encode(state), ORACLE.encode(state)
    assert _same(FAST.decode(theirs), ORACLE.decode(theirs))
    assert _same(ORACLE.decode(ours), ORACLE.decode(theirs))
    assert _same(FAST.decode(ours), ORACLE.decode(theirs))


def test_the_service_s_events_are_byte_for_byte_the_same() -> None:
    state = {
        "timestamp": datetime(2026, 11, 25, 8, 17, 28, 177262, tzinfo=UTC),
        "event_id": UUID("2bd04972-5ace-5e6d-bde7-57ea1eac9c1f"),
        "actor": "key:k",
        "attempt": 1,
        "pin": {"title": "Un chat \u00e9l\u00e9gant \U0001f431", "link": None},
        "simulate": ("server_error", "published"),
        "receipt": {"status": 201, "retry_after": 1.5},
    }
    assert FAST.encode(state) == ORACLE.encode(state)
    assert FAST.decode(ORACLE.encode(state)) == ORACLE.decode(ORACLE.encode(state))


@pytest.mark.parametrize(
    "state",
    [
        {"big": 2**64 + 1},  # orjson refuses to write it
        {"nan": float("nan"), "inf": -math.inf},  # orjson would write null
        {"keys": {1: "int key", None: "none key", 2.5: "float key"}},  # json turns them to text
        {"str_enum": StrEnum("S", ["a"]).a, "int_enum": IntEnum("I", ["one"]).one},
    ],
    ids=["big-int", "nan", "non-str-keys", "enum-subclasses"],
)
def test_values_orjson_treats_otherwise_are_written_as_json_writes_them(state) -> None:
    assert FAST.encode(state) == ORACLE.encode(state)
    assert _same(FAST.decode(ORACLE.encode(state)), ORACLE.decode(ORACLE.encode(state)))


def test_an_integer_beyond_64_bits_is_read_as_that_integer() -> None:
    data = b'{"n":123456789012345678901234567890,"m":-9223372036854775809}'
    assert FAST.decode(data) == {"n": 123456789012345678901234567890, "m": -(2**63) - 1}
    assert type(FAST.decode(b'{"f":1e300}')["f"]) is float


def test_what_json_refuses_is_refused() -> None:
    class Color(Enum):
        RED = 1

    for value in (Color.RED, {1, 2}, b"bytes"):
        with pytest.raises(TypeError):  # TranscodingNotRegisteredError is a TypeError
            ORACLE.encode({"v": value})
        with pytest.raises(TypeError):
            FAST.encode({"v": value})
    unknown = b'{"v":{"_type_":"no_such","_data_":"x"}}'
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.decode(unknown)


def test_the_service_uses_it() -> None:
    env = parse_database_url("sqlite:///x.db").eventsourcing_env()
    assert env["TRANSCODER_TOPIC"] == "storage.transcoder:OrjsonTranscoder"
