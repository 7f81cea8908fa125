"""Strict RFC 3339 date-time parsing (`2026-11-23T10:00:00Z`, `...+01:00`, fractions allowed).

Python's `datetime.fromisoformat` accepts much more than RFC 3339 (dates without a time, times
without an offset, week dates); the API promises RFC 3339, so this module accepts exactly its
`date-time` production, minus leap seconds (`:60`), which Python cannot represent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$",
    re.ASCII,
)


def parse_datetime(text: str) -> datetime:
    """The UTC-aware datetime `text` names; ValueError with the reason otherwise."""
    match = _DATE_TIME.match(text)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time such as 2026-11-23T10:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    micro = int((fraction + "000000")[:6])
    if match.group(8):
        offset = timedelta(0)
    else:
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError("has an offset out of range (at most +/-23:59)")
        offset = timedelta(hours=off_h, minutes=off_m)
        if match.group(9) == "-":
            offset = -offset
    try:
        value = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a valid calendar date and time") from None
