"""The projections this service keeps, by name (the name is also the live table's name)."""

from __future__ import annotations

from collections.abc import Callable

from ledger.application import JobLedger
from projections.attempt_outcomes import AttemptOutcomesProjection
from projections.delivery_queue import DeliveryQueueProjection
from projections.endpoint_health import EndpointHealthProjection
from projections.job_status import JobStatusProjection
from projections.runner import Projection
from projections.state_history import JobStateHistoryProjection

ProjectionFactory = Callable[[JobLedger, str], Projection]

PROJECTIONS: dict[str, ProjectionFactory] = {
    "job_status": lambda ledger, table: JobStatusProjection(ledger, table=table),
    "attempt_outcomes": lambda ledger, table: AttemptOutcomesProjection(table=table),
    "delivery_queue": lambda ledger, table: DeliveryQueueProjection(ledger, table=table),
    "endpoint_health": lambda ledger, table: EndpointHealthProjection(table=table),
    "job_state_history": lambda ledger, table: JobStateHistoryProjection(table=table),
}


# Followers of the log that are not views (they make events; never rebuilt), but whose lag
# readiness, /metrics and `ledger projections status` report like the views'.
FOLLOWERS = ("delivery_fanout",)


def tracked_names() -> list[str]:
    return [*sorted(PROJECTIONS), *FOLLOWERS]


def live(ledger: JobLedger, name: str) -> Projection:
    return PROJECTIONS[name](ledger, name)


def shadow(ledger: JobLedger, name: str) -> Projection:
    return PROJECTIONS[name](ledger, f"{name}__rebuild")
