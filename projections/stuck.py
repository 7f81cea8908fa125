"""The stuck-job report (SPEC section 7), read from the job-status view.

A job counts as stuck when it has waited past a per-state threshold: queued too long (nothing
scheduled it), due but not started (no worker picked it up), running past its lease (its
worker is gone and nothing reaped it yet), or retrying more often than allowed. Every row says
why. Counts by state and by account and the oldest queued age come with it. Time is passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger.clock import iso_z
from projections.job_status import job_counts
from storage.sql import Tx, parse_utc_text, utc_text


@dataclass(frozen=True)
class StuckThresholds:
    queued_seconds: float = 300.0
    overdue_seconds: float = 300.0
    lease_grace_seconds: float = 0.0
    max_retrying_attempts: int = 3


REASONS = {
    "queued_too_long": "queued for longer than {queued_seconds:g} s without being scheduled",
    "not_started": "due for longer than {overdue_seconds:g} s without an attempt starting",
    "lease_expired": "running past its lease; the worker may be gone",
    "retrying_too_often": "failed and retrying after more than {max_retrying_attempts} attempts",
}


def stuck_report(
    tx: Tx,
    *,
    tenant_id: str | None,
    now: datetime,
    thresholds: StuckThresholds,
    limit: int = 100,
    table: str = "job_status",
) -> dict[str, Any]:
    """Every read here follows an index or the view's running counts (`job_counts`): none
    reads every job of the scope."""
    tenant_sql = "tenant_id = ? AND " if tenant_id is not None else ""
    tenant_params: list[Any] = [tenant_id] if tenant_id is not None else []
    t = thresholds
    checks: list[tuple[str, str, list[Any], str]] = [
        (
            "queued_too_long",
            "state = 'queued' AND state_entered_at < ?",
            [utc_text(now - timedelta(seconds=t.queued_seconds))],
            "state_entered_at",
        ),
        (
            "not_started",
            "state IN ('scheduled', 'failed_retrying') AND next_run_at < ?",
            [utc_text(now - timedelta(seconds=t.overdue_seconds))],
            "next_run_at",
        ),
        (
            "lease_expired",
            "state = 'running' AND lease_expires_at < ?",
            [utc_text(now - timedelta(seconds=t.lease_grace_seconds))],
            "lease_expires_at",
        ),
        (
            "retrying_too_often",
            "state = 'failed_retrying' AND attempts > ?",
            [t.max_retrying_attempts],
            "state_entered_at",
        ),
    ]
    found: list[tuple[datetime | None, dict[str, Any]]] = []
    for reason, condition, params, since_column in checks:
        rows = tx.execute(
            f"SELECT job_id, tenant_id, state, account_id, board_id, attempts, {since_column}, "
            f"next_run_at, lease_expires_at FROM {table} WHERE {tenant_sql}{condition} "
            f"ORDER BY {since_column} LIMIT ?",
            [*tenant_params, *params, limit],
        ).fetchall()
        for row in rows:
            since = parse_utc_text(row[6])
            found.append(
                (
                    since,
                    {
                        "job_id": row[0],
                        "tenant_id": row[1],
                        "state": row[2],
                        "account_id": row[3],
                        "board_id": row[4],
                        "attempts": row[5],
                        "reason": reason,
                        "why": REASONS[reason].format(**asdict(t)),
                        "since": iso_z(since),
                        "age_seconds": round((now - since).total_seconds(), 3) if since else None,
                        "next_run_at": iso_z(parse_utc_text(row[7])),
                        "lease_expires_at": iso_z(parse_utc_text(row[8])),
                    },
                )
            )
    # Oldest first, by time (ISO texts with and without fractions do not sort as times do).
    found.sort(key=lambda f: f[0] or now)
    stuck = [row for _, row in found]
    by_state: dict[str, int] = {}
    accounts: dict[str, dict[str, int]] = {}
    for account, state, n in job_counts(tx, tenant_id, table):
        accounts.setdefault(account, {})[state] = n
        by_state[state] = by_state.get(state, 0) + n
    oldest = tx.execute(
        f"SELECT MIN(state_entered_at) FROM {table} WHERE {tenant_sql}state = 'queued'",
        tenant_params,
    ).fetchone()[0]
    oldest_at = parse_utc_text(oldest)
    return {
        "generated_at": iso_z(now),
        "thresholds": asdict(t),
        "counts_by_state": by_state,
        "counts_by_account": accounts,
        "oldest_queued_age_seconds": (
            round((now - oldest_at).total_seconds(), 3) if oldest_at else None
        ),
        "stuck": stuck[:limit],
    }
