"""Attempt outcomes by class: how many attempts published, failed and were retried, or failed
terminally, per error code. Feeds `ledger_attempt_outcomes_total` in /metrics; like every
projection it is derived from the log alone and rebuildable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ledger.job import Job
from storage.sql import Tx

OUTCOME_BY_TOPIC = {
    Job.JobPublished.TOPIC: "published",
    Job.AttemptFailed.TOPIC: "retrying",
    Job.JobFailedTerminally.TOPIC: "failed",
}


class AttemptOutcomesProjection:
    def __init__(self, *, table: str = "attempt_outcomes") -> None:
        self.table = table
        self.name = table
        self.topics = frozenset(OUTCOME_BY_TOPIC)

    def create_tables(self, tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (outcome TEXT NOT NULL, "
            "error_code TEXT NOT NULL, attempts BIGINT NOT NULL, "
            "PRIMARY KEY (outcome, error_code))"
        )

    def drop_tables(self, tx: Tx) -> None:
        tx.execute(f"DROP TABLE IF EXISTS {self.table}")

    def forget(self) -> None:
        pass

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        for _, event in events:
            outcome = OUTCOME_BY_TOPIC[type(event).TOPIC]
            counts[(outcome, getattr(event, "error_code", ""))] += 1
        tx.executemany(
            f"INSERT INTO {self.table} (outcome, error_code, attempts) VALUES (?, ?, ?) "
            f"ON CONFLICT (outcome, error_code) DO UPDATE "
            f"SET attempts = {self.table}.attempts + excluded.attempts",
            [(o, c, n) for (o, c), n in sorted(counts.items())],
        )


def outcome_counts(tx: Tx, table: str = "attempt_outcomes") -> list[tuple[str, str, int]]:
    rows = tx.execute(f"SELECT outcome, error_code, attempts FROM {table}").fetchall()
    return [(str(o), str(c), int(n)) for o, c, n in rows]
