"""The stored time text (`storage.sql.utc_text` / `parse_utc_text`): fixed-width UTC that sorts
as the times do. Rows written before the fast paths hold strftime's text, so the text and its
reading must stay exactly strftime's and strptime's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.clock import iso_z
from storage.sql import parse_utc_text, utc_text, utc_texts

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-11)), timezone(timedelta(hours=5, minutes=45))]
)


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9998, 12, 31), timezones=_ZONES)
)
def test_text_and_reading_are_strftime_and_strptime(value: datetime) -> None:
    text = utc_text(value)
    assert text == value.astimezone(UTC).strftime(_FORMAT)
    read = parse_utc_text(text)
    assert read == datetime.strptime(text, _FORMAT).replace(tzinfo=UTC)
    assert read is not None and read.tzinfo is UTC and read == value
    in_utc = value.astimezone(UTC)
    assert utc_texts(in_utc) == (iso_z(in_utc), text)  # job_status's two forms, formatted once


def test_whole_seconds_keep_their_six_zeros_and_sort_as_text() -> None:
    times = [datetime(2026, 11, 23, 10, 0, 0, us, tzinfo=UTC) for us in (0, 1, 500000, 999999)]
    texts = [utc_text(t) for t in times]
    assert texts[0] == "2026-11-23T10:00:00.000000Z"
    assert texts == sorted(texts)
    assert {len(t) for t in texts if t} == {27}


def test_text_that_is_not_a_stored_time_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match format"):
        parse_utc_text("2026-11-23 10:00:00")
    assert parse_utc_text(None) is None and utc_text(None) is None
