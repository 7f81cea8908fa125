"""The endpoint-health read model (SPEC section 7): how each webhook endpoint is doing.

Two tables, both derived only from the log:
- `endpoint_health`: one row per endpoint: its state, the current failure streak
  (`consecutive_failures`, `failing_since`), consecutive and total dead letters, last success,
  last failure and last error. Re-enabling an endpoint starts a new streak.
- `endpoint_attempts`: the latest `KEEP_ATTEMPTS` attempts per endpoint (time, outcome,
  latency, status), from which a report computes the success rate and latency percentiles over
  a recent window.

Only deliveries of real events count; `webhook.test` attempts do not move health. The sender
reads the streak to disable an endpoint automatically (SPEC section 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from ledger.delivery import ORIGIN_TEST, Delivery, DeliveryState
from ledger.endpoint import Endpoint
from storage.sql import Tx, parse_utc_text, utc_text

KEEP_ATTEMPTS = 1000
FAILING_STREAK = 5
FAILING_RATE = 0.5
DEGRADED_RATE = 0.95

HEALTH_TOPICS = frozenset(
    cls.TOPIC
    for cls in (
        Endpoint.EndpointRegistered,
        Endpoint.EndpointDisabled,
        Endpoint.EndpointEnabled,
        Endpoint.EndpointDeleted,
        Delivery.DeliveryAttempted,
    )
)
ROW = (
    "endpoint_id",
    "tenant_id",
    "endpoint_state",
    "consecutive_failures",
    "failing_since",
    "consecutive_dead_letters",
    "dead_letters_total",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "updated_at",
    "position",
    "created_position",
)


class EndpointHealthProjection:
    def __init__(self, *, table: str = "endpoint_health") -> None:
        self.table = table
        self.attempts_table = f"{table}_attempts"
        self.tables = (self.table, self.attempts_table)
        self.name = table
        self.topics = HEALTH_TOPICS

    def create_tables(self, tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "endpoint_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, endpoint_state TEXT NOT NULL, "
            "consecutive_failures INTEGER NOT NULL, failing_since TEXT, "
            "consecutive_dead_letters INTEGER NOT NULL, dead_letters_total INTEGER NOT NULL, "
            "last_success_at TEXT, last_failure_at TEXT, last_error TEXT, "
            "updated_at TEXT NOT NULL, position BIGINT NOT NULL, "
            "created_position BIGINT NOT NULL)"
        )
        tx.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table}_tenant "
            f"ON {self.table} (tenant_id, created_position)"
        )
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.attempts_table} ("
            "endpoint_id TEXT NOT NULL, position BIGINT NOT NULL, attempted_at TEXT NOT NULL, "
            "succeeded INTEGER NOT NULL, latency_ms DOUBLE PRECISION, status_code INTEGER, "
            "PRIMARY KEY (endpoint_id, position))"
        )

    def drop_tables(self, tx: Tx) -> None:
        tx.execute(f"DROP TABLE IF EXISTS {self.attempts_table}")
        tx.execute(f"DROP TABLE IF EXISTS {self.table}")

    def forget(self) -> None:
        pass

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        attempts: list[tuple[Any, ...]] = []

        def row_for(endpoint_id: str) -> dict[str, Any] | None:
            if endpoint_id not in rows:
                found = tx.execute(
                    f"SELECT {', '.join(ROW)} FROM {self.table} WHERE endpoint_id = ?",
                    (endpoint_id,),
                ).fetchone()
                if found is None:
                    return None
                rows[endpoint_id] = dict(zip(ROW, found, strict=True))
            return rows[endpoint_id]

        for position, event in events:
            at = str(utc_text(event.timestamp))
            if isinstance(event, Endpoint.EndpointRegistered):
                rows[str(event.originator_id)] = {
                    "endpoint_id": str(event.originator_id),
                    "tenant_id": event.tenant_id,
                    "endpoint_state": "active",
                    "consecutive_failures": 0,
                    "failing_since": None,
                    "consecutive_dead_letters": 0,
                    "dead_letters_total": 0,
                    "last_success_at": None,
                    "last_failure_at": None,
                    "last_error": None,
                    "updated_at": at,
                    "position": position,
                    "created_position": position,
                }
                continue
            endpoint_id = (
                event.endpoint_id
                if isinstance(event, Delivery.DeliveryAttempted)
                else str(event.originator_id)
            )
            row = row_for(endpoint_id)
            if row is None:  # an endpoint registered before this projection's history began
                continue
            row["updated_at"], row["position"] = at, position
            if isinstance(event, Endpoint.EndpointDisabled):
                row["endpoint_state"] = "disabled"
                if event.last_error is not None:
                    row["last_error"] = orjson.dumps(event.last_error).decode()
            elif isinstance(event, Endpoint.EndpointEnabled):
                row["endpoint_state"] = "active"
                row["consecutive_failures"] = 0
                row["failing_since"] = None
                row["consecutive_dead_letters"] = 0
            elif isinstance(event, Endpoint.EndpointDeleted):
                row["endpoint_state"] = "deleted"
            elif event.origin != ORIGIN_TEST:
                _apply_attempt(row, event, at)
                receipt = event.receipt
                attempts.append(
                    (
                        endpoint_id,
                        position,
                        at,
                        1 if event.succeeded else 0,
                        receipt.get("latency_ms"),
                        receipt.get("status_code"),
                    )
                )
        if rows:
            tx.upsert(
                self.table,
                ROW,
                [tuple(r[c] for c in ROW) for r in rows.values()],
                key=("endpoint_id",),
                keep=("created_position",),
            )
        if attempts:
            tx.executemany(
                f"INSERT INTO {self.attempts_table} (endpoint_id, position, attempted_at, "
                "succeeded, latency_ms, status_code) VALUES (?, ?, ?, ?, ?, ?)",
                attempts,
            )
            for endpoint_id in sorted({a[0] for a in attempts}):
                tx.execute(
                    f"DELETE FROM {self.attempts_table} WHERE endpoint_id = ? AND position <= "
                    f"(SELECT position FROM {self.attempts_table} WHERE endpoint_id = ? "
                    f"ORDER BY position DESC LIMIT 1 OFFSET {KEEP_ATTEMPTS})",
                    (endpoint_id, endpoint_id),
                )


def _apply_attempt(row: dict[str, Any], event: Any, at: str) -> None:
    if event.succeeded:
        row["consecutive_failures"] = 0
        row["failing_since"] = None
        row["consecutive_dead_letters"] = 0
        row["last_success_at"] = at
        return
    receipt = event.receipt
    row["consecutive_failures"] += 1
    row["failing_since"] = row["failing_since"] or at
    row["last_failure_at"] = at
    row["last_error"] = orjson.dumps(
        {
            "at": at,
            "delivery_id": str(event.originator_id),
            "attempt": event.attempt,
            "status_code": receipt.get("status_code"),
            "error_class": receipt.get("error_class"),
            "error": receipt.get("error"),
        }
    ).decode()
    if event.result_state == DeliveryState.DEAD_LETTERED:
        row["consecutive_dead_letters"] += 1
        row["dead_letters_total"] += 1


# -- queries --


def health_row(tx: Tx, endpoint_id: str, table: str = "endpoint_health") -> dict[str, Any] | None:
    found = tx.execute(
        f"SELECT {', '.join(ROW)} FROM {table} WHERE endpoint_id = ?", (endpoint_id,)
    ).fetchone()
    return None if found is None else dict(zip(ROW, found, strict=True))


def list_endpoint_ids(
    tx: Tx,
    tenant_id: str | None,
    *,
    limit: int,
    after_position: int = 0,
    table: str = "endpoint_health",
) -> tuple[list[str], int | None]:
    """Endpoint ids (not deleted) in registration order, and the cursor position when more
    follow."""
    where = "created_position > ? AND endpoint_state <> 'deleted'"
    params: list[Any] = [after_position]
    if tenant_id is not None:
        where += " AND tenant_id = ?"
        params.append(tenant_id)
    rows = tx.execute(
        f"SELECT endpoint_id, created_position FROM {table} WHERE {where} "
        "ORDER BY created_position LIMIT ?",
        [*params, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [str(r[0]) for r in rows], (int(rows[-1][1]) if more and rows else None)


def health_report(
    tx: Tx,
    endpoint_id: str,
    *,
    now: datetime,
    window_seconds: float = 24 * 3600.0,
    table: str = "endpoint_health",
) -> dict[str, Any] | None:
    """`GET /v1/endpoints/{id}/health`: the streak, and rate and latency over the window."""
    row = health_row(tx, endpoint_id, table)
    if row is None:
        return None
    since = utc_text(now - timedelta(seconds=window_seconds))
    samples = tx.execute(
        f"SELECT succeeded, latency_ms FROM {table}_attempts "
        "WHERE endpoint_id = ? AND attempted_at >= ?",
        (endpoint_id, since),
    ).fetchall()
    total = len(samples)
    succeeded = sum(int(s[0]) for s in samples)
    latencies = sorted(float(s[1]) for s in samples if s[1] is not None)
    rate = succeeded / total if total else None
    return {
        "endpoint_id": endpoint_id,
        "state": classify(row, rate, total),
        "endpoint_state": row["endpoint_state"],
        "window_seconds": window_seconds,
        "attempts": total,
        "succeeded": succeeded,
        "success_rate": rate,
        "latency_ms": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95)},
        "consecutive_failures": row["consecutive_failures"],
        "failing_since": _iso(row["failing_since"]),
        "consecutive_dead_letters": row["consecutive_dead_letters"],
        "dead_letters_total": row["dead_letters_total"],
        "last_success_at": _iso(row["last_success_at"]),
        "last_failure_at": _iso(row["last_failure_at"]),
        "last_error": orjson.loads(row["last_error"]) if row["last_error"] else None,
    }


def classify(row: dict[str, Any], rate: float | None, attempts: int) -> str:
    """`disabled` (not active), `failing`, `degraded` or `healthy`; documented in operations.md."""
    if row["endpoint_state"] != "active":
        return "disabled"
    streak = int(row["consecutive_failures"])
    if streak >= FAILING_STREAK or (rate is not None and attempts >= 5 and rate < FAILING_RATE):
        return "failing"
    if streak > 0 or (rate is not None and rate < DEGRADED_RATE):
        return "degraded"
    return "healthy"


def health_states(tx: Tx, *, now: datetime, table: str = "endpoint_health") -> dict[str, int]:
    """How many endpoints are in each health state (for /metrics)."""
    counts: dict[str, int] = {"healthy": 0, "degraded": 0, "failing": 0, "disabled": 0}
    ids = tx.execute(
        f"SELECT endpoint_id FROM {table} WHERE endpoint_state <> 'deleted'"
    ).fetchall()
    for (endpoint_id,) in ids:
        report = health_report(tx, str(endpoint_id), now=now, table=table)
        if report is not None:
            counts[report["state"]] += 1
    return counts


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _iso(text: str | None) -> str | None:
    value = parse_utc_text(text) if text else None
    return value.isoformat().replace("+00:00", "Z") if value else None
