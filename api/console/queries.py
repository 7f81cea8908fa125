"""What the console pages read from the read models (blocking; run through `ApiState.call`).

Plain SQL over the `job_status` and `endpoint_health` projection tables, scoped to a tenant
(None: every tenant, for admin keys), each read along an index or a running count, never
across every job: the queue page is read again every 2 s. This module must never write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from projections.job_status import job_counts
from storage.sql import SqlStore, Tx, utc_text

ACTIVE_STATES = ("queued", "scheduled", "running", "failed_retrying")
OUTCOME_STATES = ("published", "failed_terminal")
STATE_ORDER = (
    "queued",
    "scheduled",
    "running",
    "failed_retrying",
    "published",
    "failed_terminal",
    "canceled",
)


def _scope(tenant_id: str | None) -> tuple[str, list[Any]]:
    return ("tenant_id = ? AND ", [tenant_id]) if tenant_id is not None else ("", [])


def counts_by_state(tx: Tx, tenant_id: str | None) -> dict[str, int]:
    """Jobs in each state now, from the job-status view's running counts (the queue page
    asks every 2 s: counting `job_status` itself took 460 ms over a million jobs)."""
    found: dict[str, int] = {}
    for _, state, n in job_counts(tx, tenant_id):
        found[state] = found.get(state, 0) + n
    return {state: found.get(state, 0) for state in STATE_ORDER}


def _rows(tx: Tx, columns: str, rest: str, params: list[Any]) -> list[dict[str, Any]]:
    names = [c.strip() for c in columns.split(",")]
    rows = tx.execute(f"SELECT {columns} {rest}", params).fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows]


def active_jobs(tx: Tx, tenant_id: str | None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Queued, scheduled, running and retrying jobs, oldest first."""
    where, params = _scope(tenant_id)
    marks = ", ".join("?" for _ in ACTIVE_STATES)
    return _rows(
        tx,
        "job_id, tenant_id, state, account_id, board_id, created_at, next_run_at, attempts",
        f"FROM job_status WHERE {where}state IN ({marks}) ORDER BY created_position LIMIT ?",
        [*params, *ACTIVE_STATES, limit],
    )


def outcomes(tx: Tx, tenant_id: str | None, *, limit: int = 50) -> list[dict[str, Any]]:
    """The most recently finished jobs (published or failed for good), newest first.

    Each final state is read newest first along the `(state, state_entered_at)` index (a
    final job's last event is the one that finished it), then the two are merged: ordering
    them together by `position` sorted every finished job of the tenant (235 ms over a
    million jobs, against 0.2)."""
    where, params = _scope(tenant_id)
    found: list[dict[str, Any]] = []
    for state in OUTCOME_STATES:
        found += _rows(
            tx,
            "job_id, tenant_id, state, account_id, board_id, updated_at, attempts, doc, position",
            f"FROM job_status WHERE {where}state = ? ORDER BY state_entered_at DESC LIMIT ?",
            [*params, state, limit],
        )
    found.sort(key=lambda row: int(row["position"]), reverse=True)
    for row in found:
        del row["position"]
    return found[:limit]


def created_per_hour(
    tx: Tx, tenant_id: str | None, *, now: datetime, hours: int = 24
) -> list[tuple[datetime, dict[str, int]]]:
    """Jobs created in each of the last `hours` hours, split by their current state (along
    the `created_at` index: 60-100 ms for the 67,000 jobs of the last day among a million,
    against 195 ms reading every job)."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    where, params = _scope(tenant_id)
    rows = tx.execute(
        "SELECT SUBSTR(created_at, 1, 13), state, COUNT(*) FROM job_status "
        f"WHERE {where}created_at >= ? GROUP BY SUBSTR(created_at, 1, 13), state",
        [*params, utc_text(start)],
    ).fetchall()
    buckets: dict[str, dict[str, int]] = {}
    for hour, state, n in rows:
        buckets.setdefault(str(hour), {})[str(state)] = int(n)
    series = []
    for i in range(hours):
        at = start + timedelta(hours=i)
        series.append((at, buckets.get(at.strftime("%Y-%m-%dT%H"), {})))
    return series


class HourlyCache:
    """Hour-by-hour series (a chart's data) kept for `seconds` per tenant scope: the queue page
    asks every 2 s, and a series of whole hours need not be read again that often (the jobs
    created per hour read every job of the last day: 60-100 ms for 67,000 of them)."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self._kept: dict[str | None, tuple[datetime, Any]] = {}

    def get(self, scope: str | None, now: datetime, read: Callable[[], Any]) -> Any:
        kept = self._kept.get(scope)
        if kept is not None and timedelta(0) <= now - kept[0] < timedelta(seconds=self.seconds):
            return kept[1]
        value = read()
        self._kept[scope] = (now, value)
        return value


def endpoint_ids(tx: Tx, tenant_id: str | None, *, limit: int = 200) -> list[str]:
    where, params = _scope(tenant_id)
    rows = tx.execute(
        f"SELECT endpoint_id FROM endpoint_health WHERE {where}endpoint_state <> 'deleted' "
        "ORDER BY created_position LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [str(r[0]) for r in rows]


def read(store: SqlStore, fn: Any, *args: Any, **kwargs: Any) -> Any:
    with store.transaction() as tx:
        return fn(tx, *args, **kwargs)
