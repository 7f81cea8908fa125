"""Running counts a view keeps beside its rows (jobs per tenant, account and state; deliveries
per endpoint and state), so that a count never reads every row of the view.

A view notes each aggregate's key before and after its events (`Moves`, fed by
`AggregateCache.apply`'s `seen` hook) and adds the batch's net moves in its own transaction.
No count is kept at zero, so the table holds exactly what a GROUP BY over the rows gives,
whatever the batches were (a rebuild compares equal). A view made before its counts existed
counts its rows once, when it is set up (`create_counts_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from storage.sql import Tx


class Moves:
    """The net number of aggregates that entered (or left: negative) each key in a batch."""

    def __init__(self, key: Callable[[Any], tuple[str, ...]]) -> None:
        self.key = key
        self.moved: dict[tuple[str, ...], int] = {}

    def leave(self, before: Any | None) -> None:
        """The aggregate before an event (None: none yet), which the event moves out."""
        if before is not None:
            key = self.key(before)
            self.moved[key] = self.moved.get(key, 0) - 1

    def enter(self, after: Any) -> None:
        key = self.key(after)
        self.moved[key] = self.moved.get(key, 0) + 1

    def write(self, tx: Tx, table: str, keys: Sequence[str], count: str) -> None:
        """Add the moves to `table` (`keys` columns, `count` column), dropping zeros. Sorted,
        so that concurrent writers lock the same rows in the same order."""
        moved = sorted((key, n) for key, n in self.moved.items() if n)
        if not moved:
            return
        names = ", ".join(keys)
        marks = ", ".join("?" for _ in range(len(keys) + 1))
        tx.executemany(
            f"INSERT INTO {table} ({names}, {count}) VALUES ({marks}) "
            f"ON CONFLICT ({names}) DO UPDATE SET {count} = {table}.{count} + excluded.{count}",
            [(*key, n) for key, n in moved],
        )
        tx.executemany(
            f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in keys)} AND {count} = 0",
            [key for key, n in moved if n < 0],
        )


def create_counts_table(tx: Tx, table: str, keys: Sequence[str], count: str, rows: str) -> None:
    """The counts table (`keys` TEXT columns and a BIGINT `count`, keyed by `keys`); when it
    is new, counted once from the view's table `rows`."""
    counted = tx.table_exists(table)
    names = ", ".join(keys)
    columns = ", ".join(f"{k} TEXT NOT NULL" for k in keys)
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}, {count} BIGINT NOT NULL, "
        f"PRIMARY KEY ({names}))"
    )
    if not counted:
        tx.execute(
            f"INSERT INTO {table} ({names}, {count}) "
            f"SELECT {names}, COUNT(*) FROM {rows} GROUP BY {names}"
        )
