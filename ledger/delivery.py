"""The Delivery aggregate: one webhook message to one endpoint, and every attempt to send it.

A delivery is made once per (source event, endpoint): its id is derived from both
(`delivery_id_for`), so creating it again (a projector replaying the log) is refused by the store
instead of making a second one. Its `webhook-id` is derived from its id and is the same on every
attempt. The exact body (`payload`, JSON text) is fixed at creation, so every attempt sends the
same bytes.

States (the machine is data, `TRANSITIONS`):
- `pending`: due at `next_attempt_at`;
- `held`: not sent because its endpoint is disabled or deleted (kept for `recover`);
- `succeeded`: an attempt got a 2xx answer;
- `dead_lettered`: every scheduled attempt failed (kept, listable, retryable);
- `failed`: a one-shot delivery (a `webhook.test`) whose only attempt failed.

Events: `DeliveryCreated`, `DeliveryAttempted` (one per attempt, with its receipt; it says the
state the delivery is in after it), `DeliveryHeld`, `DeliveryRetryRequested`. When to try again
is decided by the sender's retry schedule and passed in. This module must never import web,
database or HTTP-client code.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.aggregate import AuditedAggregate
from ledger.clock import iso_z
from ledger.errors import InvalidTransition, WrongAttempt


class DeliveryState(StrEnum):
    PENDING = "pending"
    HELD = "held"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"


D = DeliveryState
ANY_STATE = tuple(DeliveryState)

# event type -> (states it may leave from, states it may enter). None is "no delivery yet".
TRANSITIONS: dict[str, tuple[tuple[DeliveryState | None, ...], tuple[DeliveryState, ...]]] = {
    "DeliveryCreated": ((None,), (D.PENDING, D.HELD)),
    "DeliveryAttempted": (
        (D.PENDING,),
        (D.SUCCEEDED, D.PENDING, D.DEAD_LETTERED, D.FAILED, D.HELD),
    ),
    "DeliveryHeld": ((D.PENDING,), (D.HELD,)),
    "DeliveryRetryRequested": (ANY_STATE, (D.PENDING,)),
}

ORIGIN_EVENT = "event"
ORIGIN_TEST = "test"


def delivery_id_for(endpoint_id: UUID, source_event_id: UUID) -> UUID:
    """One delivery per (endpoint, source event), the same in every process and every replay."""
    return uuid5(endpoint_id, f"delivery:{source_event_id}")


class Delivery(AuditedAggregate):
    TOPIC = "job-ledger:Delivery"

    class Event(AuditedAggregate.Event):
        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            delivery: Delivery = aggregate
            delivery.updated_at = self.timestamp
            self.apply_to(delivery)

        def apply_to(self, delivery: Delivery) -> None:
            pass

    class DeliveryCreated(Event, Aggregate.Created):
        TOPIC = "job-ledger:DeliveryCreated:v1"
        tenant_id: str
        endpoint_id: str
        event_type: str
        payload: str
        origin: str
        source_event_id: str | None
        source_position: int | None
        job_id: str | None
        state: str
        hold_reason: str | None
        next_attempt_at: datetime | None

        def apply(self, aggregate: Any) -> None:
            delivery: Delivery = aggregate
            delivery.tenant_id = self.tenant_id
            delivery.endpoint_id = self.endpoint_id
            delivery.event_type = self.event_type
            delivery.payload = self.payload
            delivery.origin = self.origin
            delivery.source_event_id = self.source_event_id
            delivery.source_position = self.source_position
            delivery.job_id = self.job_id
            delivery.state = DeliveryState(self.state)
            delivery.hold_reason = self.hold_reason
            delivery.next_attempt_at = self.next_attempt_at
            delivery.created_at = self.timestamp
            delivery.attempts = 0
            delivery.round_attempts = 0
            delivery.last_attempt = None
            super().apply(delivery)

    Created = DeliveryCreated

    class DeliveryAttempted(Event):
        TOPIC = "job-ledger:DeliveryAttempted:v1"
        endpoint_id: str
        origin: str
        attempt: int
        succeeded: bool
        receipt: dict[str, Any]
        result_state: str
        next_attempt_at: datetime | None
        hold_reason: str | None

        def apply_to(self, delivery: Delivery) -> None:
            delivery.attempts = self.attempt
            delivery.round_attempts += 1
            delivery.state = DeliveryState(self.result_state)
            delivery.next_attempt_at = self.next_attempt_at
            delivery.hold_reason = self.hold_reason
            delivery.last_attempt = {"attempt": self.attempt, **self.receipt}

    class DeliveryHeld(Event):
        TOPIC = "job-ledger:DeliveryHeld:v1"
        reason: str

        def apply_to(self, delivery: Delivery) -> None:
            delivery.state = D.HELD
            delivery.hold_reason = self.reason
            delivery.next_attempt_at = None

    class DeliveryRetryRequested(Event):
        TOPIC = "job-ledger:DeliveryRetryRequested:v1"
        reason: str

        def apply_to(self, delivery: Delivery) -> None:
            delivery.state = D.PENDING
            delivery.hold_reason = None
            delivery.next_attempt_at = self.timestamp
            delivery.round_attempts = 0

    if TYPE_CHECKING:
        tenant_id: str
        endpoint_id: str
        event_type: str
        payload: str
        origin: str
        source_event_id: str | None
        source_position: int | None
        job_id: str | None
        state: DeliveryState
        hold_reason: str | None
        next_attempt_at: datetime | None
        created_at: datetime
        updated_at: datetime
        attempts: int
        round_attempts: int
        last_attempt: dict[str, Any] | None

    @classmethod
    def create(
        cls,
        *,
        delivery_id: UUID,
        tenant_id: str,
        endpoint_id: UUID,
        event_type: str,
        payload: str,
        origin: str = ORIGIN_EVENT,
        source_event_id: UUID | None = None,
        source_position: int | None = None,
        job_id: str | None = None,
        hold_reason: str | None = None,
        actor: str,
        now: datetime,
    ) -> Delivery:
        return cls._start(
            cls.DeliveryCreated,
            id=delivery_id,
            when=now,
            actor=actor,
            tenant_id=tenant_id,
            endpoint_id=str(endpoint_id),
            event_type=event_type,
            payload=payload,
            origin=origin,
            source_event_id=str(source_event_id) if source_event_id else None,
            source_position=source_position,
            job_id=job_id,
            state=str(D.HELD if hold_reason else D.PENDING),
            hold_reason=hold_reason,
            next_attempt_at=None if hold_reason else now,
        )

    # -- commands --

    def record_attempt(
        self,
        *,
        attempt: int,
        succeeded: bool,
        receipt: dict[str, Any],
        next_attempt_at: datetime | None,
        hold_reason: str | None = None,
        actor: str,
        now: datetime,
    ) -> DeliveryState:
        """Record attempt `attempt` (the next one) and where it leaves the delivery.

        A failed attempt with a `next_attempt_at` stays pending; without one it is dead-lettered
        (a one-shot test delivery: failed); with a `hold_reason` (the endpoint answered 410 Gone
        and was disabled) it is held for `recover`.
        """
        self._check("record an attempt of", "DeliveryAttempted")
        if attempt != self.attempts + 1:
            raise WrongAttempt(
                f"Delivery {self.id} has made {self.attempts} attempts; attempt {attempt} is "
                "not the next one (another sender recorded it first).",
                current_attempt=self.attempts,
                reported_attempt=attempt,
            )
        if succeeded:
            result, next_at, hold_reason = D.SUCCEEDED, None, None
        elif hold_reason is not None:
            result, next_at = D.HELD, None
        elif next_attempt_at is not None and self.origin != ORIGIN_TEST:
            result, next_at = D.PENDING, next_attempt_at
        else:
            result, next_at = (D.FAILED if self.origin == ORIGIN_TEST else D.DEAD_LETTERED), None
        self._record(
            self.DeliveryAttempted,
            when=now,
            actor=actor,
            endpoint_id=self.endpoint_id,
            origin=self.origin,
            attempt=attempt,
            succeeded=succeeded,
            receipt=dict(receipt),
            result_state=str(result),
            next_attempt_at=next_at,
            hold_reason=hold_reason,
        )
        return result

    def hold(self, *, reason: str, actor: str, now: datetime) -> None:
        self._check("hold", "DeliveryHeld")
        self._record(self.DeliveryHeld, when=now, actor=actor, reason=reason)

    def request_retry(self, *, reason: str, actor: str, now: datetime) -> None:
        """Send again now, with a fresh retry schedule (also from dead_lettered and held)."""
        self._check("retry", "DeliveryRetryRequested")
        self._record(self.DeliveryRetryRequested, when=now, actor=actor, reason=reason)

    # -- views --

    @property
    def webhook_id(self) -> str:
        """Standard Webhooks `webhook-id`: stable across attempts, no dots."""
        return f"msg_{self.id.hex}"

    def describe(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "webhook_id": self.webhook_id,
            "tenant_id": self.tenant_id,
            "endpoint_id": self.endpoint_id,
            "event_type": self.event_type,
            "origin": self.origin,
            "job_id": self.job_id,
            "source_event_id": self.source_event_id,
            "state": str(self.state),
            "hold_reason": self.hold_reason,
            "attempts": self.attempts,
            "next_attempt_at": iso_z(self.next_attempt_at),
            "last_attempt": self.last_attempt,
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
            "version": self.version,
        }

    def _check(self, command: str, event_type: str) -> None:
        allowed = TRANSITIONS[event_type][0]
        if self.state not in allowed:
            raise InvalidTransition(
                command,
                str(self.state),
                tuple(str(s) for s in allowed if s is not None),
                subject="a delivery",
            )
