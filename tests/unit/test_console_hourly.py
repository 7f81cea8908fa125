"""The console's hour-by-hour series are read again only once they are `seconds` old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.console.queries import HourlyCache

START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_a_series_is_read_once_per_scope_while_it_is_fresh() -> None:
    reads: list[str | None] = []
    cache = HourlyCache(seconds=30)

    def read(scope: str | None) -> object:
        reads.append(scope)
        return (scope, len(reads))

    def get(scope: str | None, at: datetime) -> object:
        return cache.get(scope, at, lambda: read(scope))

    first = get("t1", START)
    assert get("t1", START + timedelta(seconds=29)) is first
    assert get("t2", START + timedelta(seconds=1)) == ("t2", 2)  # scopes apart
    assert get(None, START + timedelta(seconds=1)) == (None, 3)
    assert get("t1", START + timedelta(seconds=30)) == ("t1", 4)  # stale: read again
    assert get("t1", START + timedelta(seconds=10)) == ("t1", 5)  # a clock that went back
    assert reads == ["t1", "t2", None, "t1", "t1"]
