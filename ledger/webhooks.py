"""Webhook commands of `JobLedger`: endpoints, deliveries and their attempts (SPEC section 6).

`WebhookCommands` is a mixin (like `TenancyCommands`). Signing secrets and payload keys are
made and sealed by an injected `EndpointSecrets` (the delivery edge implements it with
AES-256-GCM); the ledger only ever stores sealed values and hands a new secret back once.

Which job events become which webhook event types is decided here (`JOB_EVENT_WEBHOOK_TYPES`);
the delivery projector follows the log and calls `create_deliveries`, which is idempotent:
a replay finds the delivery already made and skips it. This module must never import web,
database or HTTP-client code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from ledger.commands import AggregateCommands, Changed, positions_by_aggregate
from ledger.delivery import ORIGIN_TEST, Delivery
from ledger.endpoint import Endpoint, EndpointSettings, EndpointState
from ledger.errors import (
    ConcurrentUpdate,
    DeliveryNotFound,
    EndpointNotFound,
    InvalidTransition,
    LedgerError,
    WebhooksNotConfigured,
    WrongAttempt,
    store_errors,
)

if TYPE_CHECKING:
    from ledger.clock import Clock

DEFAULT_GRACE_SECONDS = 24 * 3600.0

# Job event -> webhook event type. `JobPaced` moves no state, so it is not announced.
JOB_EVENT_WEBHOOK_TYPES = {
    "JobCreated": "job.queued",
    "JobScheduled": "job.scheduled",
    "AttemptStarted": "job.running",
    "AttemptFailed": "job.retrying",
    "JobPublished": "job.published",
    "JobFailedTerminally": "job.failed",
    "JobCanceled": "job.canceled",
    "JobRequeued": "job.requeued",
}


class EndpointSecrets(Protocol):
    """Makes and seals endpoint secrets (implemented at the delivery edge)."""

    def new_signing_secret(self) -> str: ...
    def new_payload_key(self) -> str: ...
    def seal(self, plaintext: str) -> str: ...
    def open(self, sealed: str) -> str: ...


@dataclass(frozen=True)
class AttemptOutcome:
    """One attempt to record (`record_delivery_attempts`) on the delivery as it was loaded to
    be sent (the record is decided on that object, which it changes)."""

    loaded: Delivery
    attempt: int
    succeeded: bool
    receipt: dict[str, Any]
    next_attempt_at: datetime | None
    hold_reason: str | None
    actor: str

    def decision(self) -> dict[str, Any]:
        """The attempt's outcome as the record commands take it."""
        return {
            "attempt": self.attempt,
            "succeeded": self.succeeded,
            "receipt": self.receipt,
            "next_attempt_at": self.next_attempt_at,
            "hold_reason": self.hold_reason,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class RegisteredEndpoint:
    """A new endpoint; `secret` (and `payload_key`) are shown this once only."""

    endpoint: Endpoint
    secret: str
    payload_key: str | None
    positions: tuple[int, ...]

    @property
    def position(self) -> int:
        return max(self.positions, default=0)


@dataclass(frozen=True)
class NewDelivery:
    """A delivery the projector wants to exist (made at most once per endpoint and event)."""

    delivery_id: UUID
    tenant_id: str
    endpoint_id: UUID
    event_type: str
    payload: str
    source_event_id: UUID
    source_position: int
    job_id: str | None
    hold_reason: str | None


class WebhookCommands(AggregateCommands):
    if TYPE_CHECKING:
        clock: Clock

    endpoint_secrets: EndpointSecrets | None = None

    # -- endpoints --

    def register_endpoint(
        self,
        tenant_id: str,
        settings: EndpointSettings,
        *,
        encrypt_payloads: bool = False,
        actor: str,
    ) -> RegisteredEndpoint:
        secrets = self._secrets()
        settings.checked()
        secret = secrets.new_signing_secret()
        payload_key = secrets.new_payload_key() if encrypt_payloads else None
        endpoint = Endpoint.register(
            endpoint_id=uuid4(),
            tenant_id=tenant_id,
            settings=settings,
            sealed_secret=secrets.seal(secret),
            sealed_payload_key=secrets.seal(payload_key) if payload_key else None,
            actor=actor,
            now=self.clock.now(),
        )
        with store_errors():
            recordings = self.save(endpoint)
        return RegisteredEndpoint(
            endpoint, secret, payload_key, tuple(r.notification.id for r in recordings)
        )

    def get_endpoint(self, endpoint_id: UUID, *, tenant_id: str | None) -> Endpoint:
        """The endpoint, if it exists, is not deleted and (unless admin: None) is the tenant's."""
        endpoint = self._load(endpoint_id, Endpoint)
        if endpoint is None or not _visible(endpoint, tenant_id):
            raise EndpointNotFound(endpoint_id)
        return endpoint

    def get_endpoints(
        self, endpoint_ids: Sequence[UUID], *, tenant_id: str | None
    ) -> list[Endpoint]:
        """Those of the endpoints `get_endpoint` would find, read together, in the order of
        `endpoint_ids`."""
        found = self._load_many(endpoint_ids, Endpoint)
        return [
            endpoint
            for endpoint in (found.get(i) for i in endpoint_ids)
            if endpoint is not None and _visible(endpoint, tenant_id)
        ]

    def update_endpoint(
        self, endpoint_id: UUID, *, tenant_id: str | None, changes: dict[str, Any], actor: str
    ) -> Changed:
        return self._change(
            endpoint_id,
            tenant_id,
            lambda e: e.update(changes=changes, actor=actor, now=self.clock.now()),
        )

    def disable_endpoint(
        self,
        endpoint_id: UUID,
        *,
        tenant_id: str | None,
        reason: str,
        actor: str,
        automatic: bool = False,
        last_error: dict[str, Any] | None = None,
    ) -> Changed:
        return self._change(
            endpoint_id,
            tenant_id,
            lambda e: e.disable(
                reason=reason,
                automatic=automatic,
                last_error=last_error,
                actor=actor,
                now=self.clock.now(),
            ),
        )

    def enable_endpoint(self, endpoint_id: UUID, *, tenant_id: str | None, actor: str) -> Changed:
        return self._change(
            endpoint_id, tenant_id, lambda e: e.enable(actor=actor, now=self.clock.now())
        )

    def delete_endpoint(self, endpoint_id: UUID, *, tenant_id: str | None, actor: str) -> Changed:
        return self._change(
            endpoint_id, tenant_id, lambda e: e.delete(actor=actor, now=self.clock.now())
        )

    def rotate_endpoint_secret(
        self,
        endpoint_id: UUID,
        *,
        tenant_id: str | None,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        actor: str,
    ) -> tuple[Changed, str]:
        """A new signing secret (returned once); the old one signs beside it for the grace."""
        secrets = self._secrets()
        secret = secrets.new_signing_secret()
        sealed = secrets.seal(secret)

        def rotate(endpoint: Endpoint) -> bool:
            endpoint.rotate_secret(
                sealed_secret=sealed, grace_seconds=grace_seconds, actor=actor, now=self.clock.now()
            )
            return True

        return self._change(endpoint_id, tenant_id, rotate), secret

    def signing_secrets(self, endpoint: Endpoint) -> list[str]:
        """Plain signing secrets for this instant: current first, then those in their grace."""
        secrets = self._secrets()
        return [secrets.open(s) for s in endpoint.sealed_signing_secrets(self.clock.now())]

    def payload_key(self, endpoint: Endpoint) -> str | None:
        sealed = endpoint.sealed_payload_key
        return self._secrets().open(sealed) if sealed else None

    # -- deliveries --

    def create_deliveries(
        self, wanted: Sequence[NewDelivery], *, actor: str = "system"
    ) -> list[Delivery]:
        """Make the deliveries that do not exist yet; returns those made (as saved).

        All in one atomic save when none exists (the common case); if the store refuses that
        because some already exist (a replay after a crash), one by one, skipping those.
        """
        if not wanted:
            return []
        now = self.clock.now()

        def make(new: NewDelivery) -> Delivery:
            return Delivery.create(
                delivery_id=new.delivery_id,
                tenant_id=new.tenant_id,
                endpoint_id=new.endpoint_id,
                event_type=new.event_type,
                payload=new.payload,
                source_event_id=new.source_event_id,
                source_position=new.source_position,
                job_id=new.job_id,
                hold_reason=new.hold_reason,
                actor=actor,
                now=now,
            )

        deliveries = [make(new) for new in wanted]
        try:
            with store_errors():
                self.save(*deliveries)
            return deliveries
        except IntegrityError:
            pass
        made = []
        for new in wanted:
            delivery = make(new)
            try:
                with store_errors():
                    self.save(delivery)
                made.append(delivery)
            except IntegrityError:
                continue  # made before (a replay): at most one delivery per endpoint and event
        return made

    def create_test_delivery(self, endpoint: Endpoint, *, payload: str, actor: str) -> Changed:
        delivery = Delivery.create(
            delivery_id=uuid4(),
            tenant_id=endpoint.tenant_id,
            endpoint_id=endpoint.id,
            event_type="webhook.test",
            payload=payload,
            origin=ORIGIN_TEST,
            actor=actor,
            now=self.clock.now(),
        )
        with store_errors():
            recordings = self.save(delivery)
        return Changed(delivery, tuple(r.notification.id for r in recordings))

    def get_delivery(self, delivery_id: UUID, *, tenant_id: str | None) -> Delivery:
        delivery = self._load(delivery_id, Delivery)
        if delivery is None or (tenant_id is not None and delivery.tenant_id != tenant_id):
            raise DeliveryNotFound(delivery_id)
        return delivery

    def get_deliveries(self, delivery_ids: Sequence[UUID]) -> dict[UUID, Delivery]:
        """The deliveries among these ids, any tenant's, read together (the sender's claim
        pass); an id that names no delivery is left out."""
        return self._load_many(delivery_ids, Delivery)

    def delivery_attempts(self, delivery_id: UUID) -> list[Delivery.DeliveryAttempted]:
        with store_errors():
            events = list(self.events.get(delivery_id))
        return [e for e in events if isinstance(e, Delivery.DeliveryAttempted)]

    def record_delivery_attempt(
        self,
        delivery_id: UUID,
        *,
        attempt: int,
        succeeded: bool,
        receipt: dict[str, Any],
        next_attempt_at: datetime | None,
        hold_reason: str | None = None,
        actor: str,
        loaded: Delivery | None = None,
    ) -> Changed:
        """Record an attempt's outcome. `loaded`: the delivery as the sender read it before
        sending (saves a read; if it changed meanwhile, it is read again)."""

        def record(delivery: Delivery) -> bool:
            delivery.record_attempt(
                attempt=attempt,
                succeeded=succeeded,
                receipt=receipt,
                next_attempt_at=next_attempt_at,
                hold_reason=hold_reason,
                actor=actor,
                now=self.clock.now(),
            )
            return True

        return self._update_aggregate(
            delivery_id, Delivery, DeliveryNotFound, None, record, loaded=loaded
        )

    def record_delivery_attempts(
        self, attempts: Sequence[AttemptOutcome]
    ) -> list[Changed | LedgerError]:
        """`record_delivery_attempt` for several deliveries, saved in one store transaction
        when they can be; each result is what the single command returns or raises for its
        delivery. A delivery that changed since it was loaded makes the store refuse the
        batch (nothing written); then each is recorded on its own, on a fresh read."""
        results: list[Changed | LedgerError | None] = []
        changed: list[Delivery] = []
        for outcome in attempts:
            try:
                outcome.loaded.record_attempt(**outcome.decision(), now=self.clock.now())
            except LedgerError as refused:  # WrongAttempt, InvalidTransition
                results.append(refused)
                continue
            results.append(None)
            changed.append(outcome.loaded)
        try:
            with store_errors():
                recordings = self._commit(*changed) if changed else []
        except IntegrityError:
            return [self._record_alone(outcome) for outcome in attempts]
        positions = positions_by_aggregate(recordings)
        return [
            result
            if result is not None
            else Changed(outcome.loaded, positions.get(outcome.loaded.id, ()))
            for outcome, result in zip(attempts, results, strict=True)
        ]

    def _record_alone(self, outcome: AttemptOutcome) -> Changed | LedgerError:
        try:
            return self.record_delivery_attempt(outcome.loaded.id, **outcome.decision())
        except (WrongAttempt, InvalidTransition, ConcurrentUpdate) as refused:
            return refused

    def hold_delivery(self, delivery_id: UUID, *, reason: str, actor: str) -> Changed:
        def hold(delivery: Delivery) -> bool:
            delivery.hold(reason=reason, actor=actor, now=self.clock.now())
            return True

        return self._update_aggregate(delivery_id, Delivery, DeliveryNotFound, None, hold)

    def retry_delivery(
        self, delivery_id: UUID, *, tenant_id: str | None, actor: str, reason: str = "manual"
    ) -> Changed:
        """Send again now with a fresh schedule; refused while the endpoint is not active."""

        def retry(delivery: Delivery) -> bool:
            self._require_active(UUID(delivery.endpoint_id))
            delivery.request_retry(reason=reason, actor=actor, now=self.clock.now())
            return True

        return self._update_aggregate(delivery_id, Delivery, DeliveryNotFound, tenant_id, retry)

    def retry_deliveries(
        self,
        delivery_ids: Sequence[UUID],
        *,
        endpoint_id: UUID,
        states: Collection[str],
        actor: str,
        reason: str,
    ) -> list[Changed]:
        """`retry_delivery` for those of the endpoint's deliveries among `delivery_ids` that
        are still in one of `states` (an endpoint's recovery), read together and saved in one
        store transaction; one saved meanwhile by someone else makes the store refuse the
        batch (nothing written), and each is then retried on its own, on a fresh read.
        Returns the deliveries retried, in the order of `delivery_ids`; refused as a whole
        while the endpoint is not active."""
        self._require_active(endpoint_id)

        def wanted(delivery: Delivery) -> bool:
            return delivery.endpoint_id == str(endpoint_id) and str(delivery.state) in states

        found = self._load_many(delivery_ids, Delivery)
        chosen = [d for d in (found.get(i) for i in delivery_ids) if d is not None and wanted(d)]
        for delivery in chosen:
            delivery.request_retry(reason=reason, actor=actor, now=self.clock.now())
        try:
            with store_errors():
                recordings = self._commit(*chosen) if chosen else []
        except IntegrityError:
            return [
                c for c in (self._retry_alone(d.id, wanted, actor, reason) for d in chosen) if c
            ]
        positions = positions_by_aggregate(recordings)
        return [Changed(d, positions.get(d.id, ())) for d in chosen]

    def _retry_alone(
        self, delivery_id: UUID, wanted: Callable[[Delivery], bool], actor: str, reason: str
    ) -> Changed | None:
        """`retry_delivery` of one of a refused batch, if it is still `wanted`."""

        def retry(delivery: Delivery) -> bool:
            if not wanted(delivery):
                return False  # retried, sent or moved since it was read
            delivery.request_retry(reason=reason, actor=actor, now=self.clock.now())
            return True

        changed = self._update_aggregate(delivery_id, Delivery, DeliveryNotFound, None, retry)
        return changed if changed.positions else None

    # -- internals --

    def _require_active(self, endpoint_id: UUID) -> None:
        """Deliveries are retried only to an active endpoint (InvalidTransition otherwise)."""
        endpoint = self._load(endpoint_id, Endpoint)
        if endpoint is None or endpoint.state != EndpointState.ACTIVE:
            state = str(endpoint.state) if endpoint else "deleted"
            raise InvalidTransition(
                "retry a delivery to", state, ("active",), subject="an endpoint"
            )

    def _secrets(self) -> EndpointSecrets:
        if self.endpoint_secrets is None:
            raise WebhooksNotConfigured()
        return self.endpoint_secrets

    def _change(
        self, endpoint_id: UUID, tenant_id: str | None, decide: Callable[[Endpoint], bool]
    ) -> Changed:
        def checked(endpoint: Endpoint) -> bool:
            if endpoint.state == EndpointState.DELETED:
                raise EndpointNotFound(endpoint_id)
            return decide(endpoint)

        return self._update_aggregate(endpoint_id, Endpoint, EndpointNotFound, tenant_id, checked)


def _visible(endpoint: Endpoint, tenant_id: str | None) -> bool:
    """Whether a reader of `tenant_id` (None: an admin) finds the endpoint: not deleted, and
    the tenant's."""
    return endpoint.state != EndpointState.DELETED and (
        tenant_id is None or endpoint.tenant_id == tenant_id
    )
