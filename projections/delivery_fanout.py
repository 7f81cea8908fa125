"""The delivery projector: follows the log and makes one `Delivery` per (state change, matching
endpoint) (SPEC section 6, "at least once").

For each batch of log entries it first decides which deliveries the batch calls for, from the
endpoints and jobs as they stood at each event's log position (kept in its own two tables), and
makes them through the ledger (`create_deliveries`, idempotent: a delivery's id is derived from
the endpoint and the source event, so a replay after a crash makes none twice). Only then does
it advance its tracking position, together with its tables, in one transaction. A crash between
the two repeats the batch, which finds the deliveries made and skips them: none lost, none
doubled.

The message body is fixed here, once, as JSON text: every attempt sends the same bytes.
Deliveries for a disabled endpoint are made `held` (kept for `recover`, never dropped).

It is not rebuildable like a view (its output is events); `ledger projections rebuild` leaves
it alone. This module must never import the web layer or the delivery package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import orjson

from ledger.application import JobLedger
from ledger.clock import iso_z
from ledger.delivery import Delivery, delivery_id_for
from ledger.endpoint import Endpoint, subscribes
from ledger.job import TRANSITIONS, Job
from ledger.webhooks import JOB_EVENT_WEBHOOK_TYPES, NewDelivery
from projections.job_status import JOB_TOPICS
from storage.sql import SqlStore, Tx

ENDPOINT_TOPICS = frozenset(
    cls.TOPIC
    for cls in (
        Endpoint.EndpointRegistered,
        Endpoint.EndpointUpdated,
        Endpoint.EndpointDisabled,
        Endpoint.EndpointEnabled,
        Endpoint.EndpointDeleted,
    )
)
ENDPOINT_COLUMNS = ("endpoint_id", "tenant_id", "event_types", "state")
JOB_COLUMNS = (
    "job_id",
    "tenant_id",
    "idempotency_key",
    "account_id",
    "board_id",
    "state",
    "attempts",
    "external_ref",
    "last_error",
)
FANOUT_ACTOR = "system:delivery-projector"


class DeliveryFanout:
    makes_events = True  # its runner reads alone, before the views (`RunnerGroup`)

    def __init__(self, ledger: JobLedger, *, name: str = "delivery_fanout") -> None:
        self.ledger = ledger
        self.name = name
        self.endpoints_table = f"{name}_endpoints"
        self.jobs_table = f"{name}_jobs"
        self.tables = (self.endpoints_table, self.jobs_table)
        self.topics = JOB_TOPICS | ENDPOINT_TOPICS
        self._endpoints: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._tenant_endpoints: dict[str, list[str]] = {}
        # Told of the deliveries each batch made, once they are saved (a sender in this
        # process takes the pending ones at once, without waiting for the delivery queue).
        self.made: list[Callable[[Sequence[Delivery]], None]] = []

    def create_tables(self, tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.endpoints_table} (endpoint_id TEXT PRIMARY KEY, "
            "tenant_id TEXT NOT NULL, event_types TEXT NOT NULL, state TEXT NOT NULL)"
        )
        tx.execute(
            f"CREATE INDEX IF NOT EXISTS {self.endpoints_table}_tenant "
            f"ON {self.endpoints_table} (tenant_id)"
        )
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.jobs_table} (job_id TEXT PRIMARY KEY, "
            "tenant_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, account_id TEXT NOT NULL, "
            "board_id TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, "
            "external_ref TEXT, last_error TEXT)"
        )

    def drop_tables(self, tx: Tx) -> None:
        for table in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def forget(self) -> None:
        self._endpoints.clear()
        self._jobs.clear()
        self._tenant_endpoints.clear()

    # -- before the tracking transaction: decide and make the deliveries --

    def prepare(self, store: SqlStore, events: Sequence[tuple[int, Any]]) -> None:
        self.forget()
        with store.reading() as tx:  # its own tables, which only its owner writes
            self._load(tx, events)
        wanted: list[NewDelivery] = []
        for position, event in events:
            if isinstance(event, Job.Event):
                wanted.extend(self._job_event(position, event))
            else:
                wanted.extend(self._endpoint_event(position, event))
        made = self.ledger.create_deliveries(wanted, actor=FANOUT_ACTOR)
        if made:
            for callback in self.made:
                callback(made)

    # -- inside the tracking transaction: store what the batch changed --

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        if self._endpoints:
            _upsert(
                tx,
                self.endpoints_table,
                ENDPOINT_COLUMNS,
                [
                    {**e, "event_types": orjson.dumps(e["event_types"]).decode()}
                    for e in self._endpoints.values()
                    if e.get("_changed")
                ],
            )
        if self._jobs:
            new: list[tuple[Any, ...]] = []
            old: list[tuple[Any, ...]] = []
            for job in self._jobs.values():
                if job.get("_changed"):
                    (new if job.get("_new") else old).append(_job_row(job))
            # a job created in this batch has no row yet (a batch is applied exactly once)
            tx.insert_many(self.jobs_table, JOB_COLUMNS, new, key=JOB_COLUMNS[:1])
            tx.upsert_many(self.jobs_table, JOB_COLUMNS, old, key=JOB_COLUMNS[:1])
        self.forget()

    # -- internals --

    def _load(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        # jobs created in this batch have no row to read (the usual batch under creates)
        job_ids = {
            str(e.originator_id)
            for _, e in events
            if isinstance(e, Job.Event) and e.originator_version > 1
        }
        for row in tx.rows_where_in(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM {self.jobs_table}", "job_id", sorted(job_ids)
        ):
            job = dict(zip(JOB_COLUMNS, row, strict=True))
            job["last_error"] = orjson.loads(job["last_error"]) if job["last_error"] else None
            self._jobs[job["job_id"]] = job
        endpoints = f"SELECT {', '.join(ENDPOINT_COLUMNS)} FROM {self.endpoints_table}"
        endpoint_ids = {str(e.originator_id) for _, e in events if isinstance(e, Endpoint.Event)}
        for row in tx.rows_where_in(endpoints, "endpoint_id", sorted(endpoint_ids)):
            self._add_endpoint(_endpoint(row))
        # every endpoint of every tenant this batch touches, as of the batch's start
        tenants = {getattr(e, "tenant_id", None) for _, e in events}
        tenants |= {j["tenant_id"] for j in self._jobs.values()}
        tenants |= {e["tenant_id"] for e in self._endpoints.values()}
        for row in tx.rows_where_in(endpoints, "tenant_id", sorted(t for t in tenants if t)):
            self._add_endpoint(_endpoint(row))

    def _add_endpoint(self, endpoint: dict[str, Any]) -> None:
        if endpoint["endpoint_id"] in self._endpoints:
            return
        self._endpoints[endpoint["endpoint_id"]] = endpoint
        self._tenant_endpoints.setdefault(endpoint["tenant_id"], []).append(endpoint["endpoint_id"])

    def _job_event(self, position: int, event: Any) -> list[NewDelivery]:
        job_id = str(event.originator_id)
        name = type(event).__name__
        if isinstance(event, Job.JobCreated):
            job: dict[str, Any] = {
                "job_id": job_id,
                "tenant_id": event.tenant_id,
                "idempotency_key": event.idempotency_key,
                "account_id": event.account_id,
                "board_id": event.board_id,
                "state": None,
                "attempts": 0,
                "external_ref": None,
                "last_error": None,
                "_new": True,
            }
            self._jobs[job_id] = job
        else:
            found = self._jobs.get(job_id)
            if found is None:  # pragma: no cover - every job starts with JobCreated in the log
                return []
            job = found
        previous = job["state"]
        job["state"] = str(TRANSITIONS[name][1])
        job["_changed"] = True
        if hasattr(event, "attempt"):
            job["attempts"] = event.attempt
        if isinstance(event, Job.JobPublished):
            job["external_ref"] = event.external_ref
            job["last_error"] = None
        if isinstance(event, Job.AttemptFailed | Job.JobFailedTerminally):
            job["last_error"] = {
                "code": event.error_code,
                "message": event.error_message,
                "retryable": event.retryable,
                "ambiguous": event.ambiguous,
                "attempt": event.attempt,
            }
        webhook_type = JOB_EVENT_WEBHOOK_TYPES.get(name)
        if webhook_type is None or not self._tenant_endpoints.get(job["tenant_id"]):
            return []  # (no payload built for a tenant without endpoints)
        data = {
            "job_id": job_id,
            "tenant_id": job["tenant_id"],
            "idempotency_key": job["idempotency_key"],
            "account_id": job["account_id"],
            "board_id": job["board_id"],
            "state": job["state"],
            "previous_state": previous,
            "attempt": job["attempts"],
            "external_ref": job["external_ref"],
            "error": job["last_error"],
            "occurred_at": iso_z(event.timestamp),
            "version": event.originator_version,
        }
        return self._fan_out(position, event, job["tenant_id"], webhook_type, data, job_id)

    def _endpoint_event(self, position: int, event: Any) -> list[NewDelivery]:
        endpoint_id = str(event.originator_id)
        if isinstance(event, Endpoint.EndpointRegistered):
            self._add_endpoint(
                {
                    "endpoint_id": endpoint_id,
                    "tenant_id": event.tenant_id,
                    "event_types": list(event.event_types),
                    "state": "active",
                }
            )
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:  # pragma: no cover - registration precedes every other event
            return []
        endpoint["_changed"] = True
        if isinstance(event, Endpoint.EndpointUpdated) and "event_types" in event.changes:
            endpoint["event_types"] = list(event.changes["event_types"])
        elif isinstance(event, Endpoint.EndpointEnabled):
            endpoint["state"] = "active"
        elif isinstance(event, Endpoint.EndpointDeleted):
            endpoint["state"] = "deleted"
        elif isinstance(event, Endpoint.EndpointDisabled):
            endpoint["state"] = "disabled"
            data = {
                "endpoint_id": endpoint_id,
                "tenant_id": endpoint["tenant_id"],
                "reason": event.reason,
                "automatic": event.automatic,
                "last_error": event.last_error,
                "occurred_at": iso_z(event.timestamp),
                "version": event.originator_version,
            }
            return self._fan_out(
                position, event, endpoint["tenant_id"], "endpoint.disabled", data, None
            )
        return []

    def _fan_out(
        self,
        position: int,
        event: Any,
        tenant_id: str,
        webhook_type: str,
        data: dict[str, Any],
        job_id: str | None,
    ) -> list[NewDelivery]:
        payload = orjson.dumps(
            {"type": webhook_type, "timestamp": iso_z(event.timestamp), "data": data}
        ).decode()
        wanted = []
        for endpoint_id in self._tenant_endpoints.get(tenant_id, ()):
            endpoint = self._endpoints[endpoint_id]
            if endpoint["state"] == "deleted" or not subscribes(
                endpoint["event_types"], webhook_type
            ):
                continue
            if webhook_type == "endpoint.disabled" and endpoint_id == data["endpoint_id"]:
                continue  # told to the tenant's other endpoints, not the one that failed
            wanted.append(
                NewDelivery(
                    delivery_id=delivery_id_for(UUID(endpoint_id), event.event_id),
                    tenant_id=tenant_id,
                    endpoint_id=UUID(endpoint_id),
                    event_type=webhook_type,
                    payload=payload,
                    source_event_id=event.event_id,
                    source_position=position,
                    job_id=job_id,
                    hold_reason="endpoint_disabled" if endpoint["state"] == "disabled" else None,
                )
            )
        return wanted


def _job_row(job: dict[str, Any]) -> tuple[Any, ...]:
    error = job["last_error"]
    return tuple(
        (orjson.dumps(error).decode() if error else None) if c == "last_error" else job[c]
        for c in JOB_COLUMNS
    )


def _upsert(tx: Tx, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    tx.upsert_many(table, columns, [tuple(r[c] for c in columns) for r in rows], key=columns[:1])


def _endpoint(row: Any) -> dict[str, Any]:
    endpoint = dict(zip(ENDPOINT_COLUMNS, row, strict=True))
    endpoint["event_types"] = orjson.loads(endpoint["event_types"])
    return endpoint
