"""Pure parts of the API: RFC 3339, cursors, media types, schema errors, problem mapping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from api.bodies import is_json_media_type
from api.http import json_response
from api.problems import Problem, from_ledger_error
from api.reads import InvalidCursor, decode_cursor, encode_cursor
from api.rfc3339 import parse_datetime
from api.schemas import LIST_JOBS_PARAMS, NEW_JOB, parse_query, validate_body
from ledger.errors import (
    IdempotencyConflict,
    InvalidJob,
    InvalidTransition,
    JobNotFound,
    StoreUnavailable,
)
from ledger.tenancy import Token


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23t10:00:00.5z", datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-23T11:30:00+01:30", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00.123456789-00:00", datetime(2026, 11, 23, 10, 0, 0, 123456, UTC)),
    ],
)
def test_rfc3339_accepts(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23",
        "2026-11-23T10:00:00",
        "2026-11-23 10:00:00Z",
        "2026-02-30T10:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T10:00:60Z",
        "2026-11-23T10:00:00+24:00",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff16-11-23T10:00:00Z"  # full-width digits,
        "tomorrow",
    ],
)
def test_rfc3339_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|valid|offset"):
        parse_datetime(text)


def test_cursor_round_trip_and_forgeries() -> None:
    for position in (1, 42, 10**15):
        assert decode_cursor(encode_cursor(position)) == position
    for bad in ("", "%%%", "bG9nOjA", "bG9nOjAx", "bG9nOi0x", "aGVsbG8", encode_cursor(5) + "="):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON;charset=UTF-8", True),
        ("application/merge-patch+json", True),
        ("application/json; charset=latin-1", False),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        (None, False),
    ],
)
def test_json_media_types(value: str | None, ok: bool) -> None:
    assert is_json_media_type(value) is ok


def valid_job() -> dict[str, Any]:
    return {
        "account_id": "a",
        "board_id": "b",
        "pin": {"media_source": {"source_type": "image_url", "url": "https://e.com/x.png"}},
    }


def invalid_names(body: dict[str, Any]) -> list[str]:
    with pytest.raises(Problem) as caught:
        validate_body(NEW_JOB, body)
    assert caught.value.status == 422
    return [p["name"] for p in caught.value.invalid_params or []]


def test_schema_errors_name_every_field() -> None:
    validate_body(NEW_JOB, valid_job())
    body = valid_job()
    body["extra"] = 1
    body["pin"]["title"] = "t" * 101
    body["pin"]["media_source"]["kind"] = "x"
    body["simulate"] = ["published", "boom"]
    del body["board_id"]
    assert sorted(invalid_names(body)) == sorted(
        ["extra", "board_id", "pin.title", "pin.media_source.kind", "simulate[1]"]
    )
    assert invalid_names({**valid_job(), "publish_at": 5}) == ["publish_at"]
    assert invalid_names({**valid_job(), "metadata": {"k": 1}}) == ["metadata.k"]


def test_query_parsing() -> None:
    parsed = parse_query(
        [("limit", "5"), ("created_after", "2026-01-01T00:00:00Z"), ("state", "queued")],
        LIST_JOBS_PARAMS,
    )
    assert parsed == {
        "limit": 5,
        "created_after": datetime(2026, 1, 1, tzinfo=UTC),
        "state": "queued",
    }
    for params, name in (
        ([("limit", "0")], "limit"),
        ([("limit", "1e3")], "limit"),
        ([("limit", "٣")], "limit"),
        ([("state", "x")], "state"),
        ([("account_id", "")], "account_id"),
        ([("nope", "1")], "nope"),
        ([("state", "queued"), ("state", "queued")], "state"),
    ):
        with pytest.raises(Problem) as caught:
            parse_query(params, LIST_JOBS_PARAMS)
        assert caught.value.status == 400
        assert caught.value.invalid_params == [
            {"name": name, "reason": caught.value.invalid_params[0]["reason"]}  # type: ignore[index]
        ]


def test_ledger_errors_map_to_one_status_each() -> None:
    job = UUID(int=1)
    cases = [
        (JobNotFound(job), 404, "not-found"),
        (InvalidTransition("cancel", "published", ("queued",)), 409, "invalid-transition"),
        (IdempotencyConflict(job, "k"), 409, "idempotency-conflict"),
        (InvalidJob("pin.title", "too long"), 422, "validation-error"),
        (StoreUnavailable(), 503, "store-unavailable"),
    ]
    for error, status, slug in cases:
        problem = from_ledger_error(error, retry_after=7)
        assert (problem.status, problem.slug) == (status, slug)
    unavailable = from_ledger_error(StoreUnavailable(), retry_after=7)
    assert unavailable.headers == {"Retry-After": "7"}
    invalid = from_ledger_error(InvalidJob("pin.title", "too long"), retry_after=7)
    assert invalid.invalid_params == [{"name": "pin.title", "reason": "too long"}]


def test_token_format() -> None:
    token = Token.new()
    text = str(token)
    assert text.startswith(f"jlk_{token.key_id.hex}_")
    assert Token.parse(text) == token
    for bad in ("", "jlk_", f"jlk_{token.key_id.hex}", "xyz_" + text[4:], text + " "):
        assert Token.parse(bad) is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from([200, 201]), st.none() | st.integers(0, 10**12))
def test_json_response_writes_what_starlette_would(data, status, position) -> None:
    """orjson writes the bytes `JSONResponse` writes (the status documents GET returns from
    the view are orjson's too: one body whichever path answers)."""
    ours = json_response(data, status=status, position=position)
    theirs = JSONResponse(data, status_code=status)
    assert ours.body == theirs.body
    assert ours.status_code == status
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.headers.get("ledger-position") == (None if position is None else str(position))


def test_json_response_writes_floats_and_integer_keys_as_valid_json() -> None:
    body = json_response({"latency_ms": 1e-05, "by_code": {429: 2}}).body
    assert orjson.loads(body) == {"latency_ms": 1e-05, "by_code": {"429": 2}}
