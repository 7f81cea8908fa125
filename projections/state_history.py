"""Jobs by state over time: how many jobs each tenant had in each state at the end of each
hour (the console's chart), derived from the log alone.

Three tables: `job_state_history` (tenant, hour, state -> jobs: the count after the last
event of that hour, for the states that changed in it), `job_state_history_now` (the
running counts per tenant) and `job_state_history_jobs` (each job's current state, to know
what an event moves it from).
An hour without events has no rows: its counts are those of the last hour before it
(`state_history` carries them forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ledger.job import TRANSITIONS, Job, JobState
from projections.job_status import JOB_TOPICS
from storage.sql import Tx, utc_text

HOUR_FORMAT = "%Y-%m-%dT%H"


def hour_of(value: datetime) -> str:
    return str(utc_text(value))[:13]


class JobStateHistoryProjection:
    def __init__(self, *, table: str = "job_state_history") -> None:
        self.table = table
        self.name = table
        self.tables = (table, f"{table}_now", f"{table}_jobs")
        self.topics = JOB_TOPICS

    def create_tables(self, tx: Tx) -> None:
        t = self.table
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (tenant_id TEXT NOT NULL, hour TEXT NOT NULL, "
            "state TEXT NOT NULL, jobs BIGINT NOT NULL, PRIMARY KEY (tenant_id, hour, state))"
        )
        tx.execute(f"CREATE INDEX IF NOT EXISTS {t}_hour ON {t} (hour)")
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {t}_now (tenant_id TEXT NOT NULL, state TEXT NOT NULL, "
            "jobs BIGINT NOT NULL, PRIMARY KEY (tenant_id, state))"
        )
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {t}_jobs (job_id TEXT PRIMARY KEY, "
            "tenant_id TEXT NOT NULL, state TEXT NOT NULL)"
        )

    def drop_tables(self, tx: Tx) -> None:
        for table in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def forget(self) -> None:
        pass

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        t = self.table
        jobs: dict[str, tuple[str, str | None]] = {}  # job -> (tenant, state)
        wanted = sorted({str(e.originator_id) for _, e in events if e.originator_version > 1})
        for job_id, tenant, state in tx.rows_where_in(
            f"SELECT job_id, tenant_id, state FROM {t}_jobs", "job_id", wanted
        ):
            jobs[str(job_id)] = (str(tenant), str(state))
        counts: dict[str, dict[str, int]] = {}
        # (tenant, hour) -> the counts of the states that changed in that hour: only those
        # rows are written (a job's event moves one or two of the seven states)
        snapshots: dict[tuple[str, str], dict[str, int]] = {}
        for _, event in events:
            job_id = str(event.originator_id)
            if isinstance(event, Job.JobCreated):
                tenant, before = event.tenant_id, None
            elif job_id in jobs:
                tenant, before = jobs[job_id]
            else:  # pragma: no cover - every job starts with JobCreated in the log
                continue
            after = str(TRANSITIONS[type(event).__name__][1])
            if tenant not in counts:
                counts[tenant] = self._counts(tx, tenant)
            by_state = counts[tenant]
            snapshot = snapshots.setdefault((tenant, hour_of(event.timestamp)), {})
            if before is not None:
                by_state[before] -= 1
                snapshot[before] = by_state[before]
            by_state[after] += 1
            snapshot[after] = by_state[after]
            jobs[job_id] = (tenant, after)
        changed = {(tenant, state) for (tenant, _), by in snapshots.items() for state in by}
        tx.upsert_many(
            f"{t}_jobs",
            ("job_id", "tenant_id", "state"),
            [(job_id, tenant, state) for job_id, (tenant, state) in jobs.items()],
            key=("job_id",),
            keep=("tenant_id",),
        )
        tx.upsert_many(
            f"{t}_now",
            ("tenant_id", "state", "jobs"),
            [(tenant, s, counts[tenant][s]) for tenant, s in sorted(changed)],
            key=("tenant_id", "state"),
        )
        tx.upsert_many(
            t,
            ("tenant_id", "hour", "state", "jobs"),
            [
                (tenant, hour, s, n)
                for (tenant, hour), by in snapshots.items()
                for s, n in by.items()
            ],
            key=("tenant_id", "hour", "state"),
        )

    def _counts(self, tx: Tx, tenant: str) -> dict[str, int]:
        counts = {str(s): 0 for s in JobState}
        for state, n in tx.execute(
            f"SELECT state, jobs FROM {self.table}_now WHERE tenant_id = ?", (tenant,)
        ).fetchall():
            counts[str(state)] = int(n)
        return counts


def state_history(
    tx: Tx,
    tenant_id: str | None,
    *,
    now: datetime,
    hours: int = 24,
    table: str = "job_state_history",
) -> list[tuple[datetime, dict[str, int]]]:
    """Jobs in each state at the end of each of the last `hours` hours (all tenants: None).

    An hour holds rows for the states that changed in it (all seven, where an earlier release
    wrote it): each state's count carries forward from the last hour that has its row."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    first = start.strftime(HOUR_FORMAT)
    last = now.strftime(HOUR_FORMAT)
    scope, params = ("tenant_id = ? AND ", [tenant_id]) if tenant_id is not None else ("", [])
    latest: dict[str, dict[str, int]] = {}
    for tenant, state, n in tx.execute(
        f"SELECT h.tenant_id, h.state, h.jobs FROM {table} h JOIN ("
        f"SELECT tenant_id, state, MAX(hour) AS hour FROM {table} WHERE {scope}hour < ? "
        "GROUP BY tenant_id, state) m "
        "ON h.tenant_id = m.tenant_id AND h.state = m.state AND h.hour = m.hour",
        [*params, first],
    ).fetchall():
        latest.setdefault(str(tenant), {})[str(state)] = int(n)
    by_hour: dict[str, list[tuple[str, str, int]]] = {}
    for tenant, hour, state, n in tx.execute(
        f"SELECT tenant_id, hour, state, jobs FROM {table} WHERE {scope}hour >= ? AND hour <= ?",
        [*params, first, last],
    ).fetchall():
        by_hour.setdefault(str(hour), []).append((str(tenant), str(state), int(n)))
    series = []
    for i in range(hours):
        at = start + timedelta(hours=i)
        for tenant, state, n in by_hour.get(at.strftime(HOUR_FORMAT), []):
            latest.setdefault(tenant, {})[state] = n
        total: dict[str, int] = {}
        for by_state in latest.values():
            for state, n in by_state.items():
                total[state] = total.get(state, 0) + n
        series.append((at, total))
    return series
