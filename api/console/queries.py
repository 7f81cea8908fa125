"""What the console pages read from the read models (blocking; run through `ApiState.call`).

Plain SQL over the `job_status` and `endpoint_health` projection tables, scoped to a tenant
(None: every tenant, for admin keys). This module must never write.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

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
    where, params = _scope(tenant_id)
    rows = tx.execute(
        f"SELECT state, COUNT(*) FROM job_status WHERE {where}1 = 1 GROUP BY state", params
    ).fetchall()
    found = {str(state): int(n) for state, n in rows}
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
    """The most recently finished jobs (published or failed for good), newest first."""
    where, params = _scope(tenant_id)
    return _rows(
        tx,
        "job_id, tenant_id, state, account_id, board_id, updated_at, attempts, doc",
        f"FROM job_status WHERE {where}state IN (?, ?) ORDER BY position DESC LIMIT ?",
        [*params, *OUTCOME_STATES, limit],
    )


def created_per_hour(
    tx: Tx, tenant_id: str | None, *, now: datetime, hours: int = 24
) -> list[tuple[datetime, dict[str, int]]]:
    """Jobs created in each of the last `hours` hours, split by their current state."""
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
