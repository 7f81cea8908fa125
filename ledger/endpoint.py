"""The Endpoint aggregate: a tenant's webhook endpoint, its settings and its signing secrets.

Events: `EndpointRegistered`, `EndpointUpdated`, `EndpointSecretRotated`, `EndpointDisabled`,
`EndpointEnabled`, `EndpointDeleted`; all hash-chained (`AuditedAggregate`).

Secrets are never in an event in the clear: the caller passes them sealed (encrypted with the
service's key, see `ledger.webhooks.EndpointSecrets`). After a rotation the previous secret keeps
signing beside the new one until its `expires_at` (Standard Webhooks: several `v1,` entries).

This module checks what an endpoint may hold (event types, timeouts, retry schedule) but not
whether its URL may be reached: that is the delivery edge's SSRF guard. It must never import
web, database or HTTP-client code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.aggregate import AuditedAggregate
from ledger.clock import iso_z
from ledger.errors import InvalidEndpoint, InvalidTransition

# SPEC section 6. `job.failed` is the terminal failure; `job.retrying` a failed attempt that
# will be retried.
WEBHOOK_EVENT_TYPES = (
    "job.queued",
    "job.scheduled",
    "job.running",
    "job.retrying",
    "job.published",
    "job.failed",
    "job.canceled",
    "job.requeued",
    "endpoint.disabled",
    "webhook.test",
)
ALL_TYPES = "*"
URL_MAX = 2048
DESCRIPTION_MAX = 500
MAX_TIMEOUT_SECONDS = 30.0
MAX_SCHEDULE_ENTRIES = 20
MAX_DELAY_SECONDS = 7 * 24 * 3600.0
MAX_IN_FLIGHT = 64
MAX_GRACE_SECONDS = 7 * 24 * 3600.0


class EndpointState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    DELETED = "deleted"


@dataclass(frozen=True)
class EndpointSettings:
    """What a client chooses for an endpoint. `None` means the service default applies."""

    url: str
    event_types: tuple[str, ...]
    description: str | None = None
    timeout_seconds: float | None = None
    retry_schedule: tuple[float, ...] | None = None
    max_in_flight: int | None = None

    def checked(self) -> EndpointSettings:
        _check_url(self.url)
        _check_event_types(self.event_types)
        if self.description is not None and len(self.description) > DESCRIPTION_MAX:
            raise InvalidEndpoint("description", f"must be at most {DESCRIPTION_MAX} characters")
        if self.timeout_seconds is not None and not (
            _finite(self.timeout_seconds) and 0 < self.timeout_seconds <= MAX_TIMEOUT_SECONDS
        ):
            raise InvalidEndpoint(
                "timeout_seconds", f"must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g}"
            )
        if self.retry_schedule is not None:
            _check_schedule(self.retry_schedule)
        if self.max_in_flight is not None and not 1 <= self.max_in_flight <= MAX_IN_FLIGHT:
            raise InvalidEndpoint("max_in_flight", f"must be 1 to {MAX_IN_FLIGHT}")
        return self

    def as_fields(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "event_types": list(self.event_types),
            "description": self.description,
            "timeout_seconds": self.timeout_seconds,
            "retry_schedule": list(self.retry_schedule) if self.retry_schedule else None,
            "max_in_flight": self.max_in_flight,
        }


UPDATABLE = frozenset(EndpointSettings.__dataclass_fields__)


class Endpoint(AuditedAggregate):
    TOPIC = "job-ledger:Endpoint"

    class Event(AuditedAggregate.Event):
        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            endpoint: Endpoint = aggregate
            endpoint.updated_at = self.timestamp
            self.apply_to(endpoint)

        def apply_to(self, endpoint: Endpoint) -> None:
            pass

    class EndpointRegistered(Event, Aggregate.Created):
        TOPIC = "job-ledger:EndpointRegistered:v1"
        tenant_id: str
        url: str
        event_types: list[str]
        description: str | None
        timeout_seconds: float | None
        retry_schedule: list[float] | None
        max_in_flight: int | None
        sealed_secret: str
        sealed_payload_key: str | None

        def apply(self, aggregate: Any) -> None:
            endpoint: Endpoint = aggregate
            endpoint.tenant_id = self.tenant_id
            endpoint.url = self.url
            endpoint.event_types = list(self.event_types)
            endpoint.description = self.description
            endpoint.timeout_seconds = self.timeout_seconds
            endpoint.retry_schedule = self.retry_schedule
            endpoint.max_in_flight = self.max_in_flight
            endpoint.sealed_secret = self.sealed_secret
            endpoint.previous_secrets = []
            endpoint.sealed_payload_key = self.sealed_payload_key
            endpoint.state = EndpointState.ACTIVE
            endpoint.created_at = self.timestamp
            endpoint.disabled_reason = None
            endpoint.disabled_automatically = False
            endpoint.last_error = None
            super().apply(endpoint)

    Created = EndpointRegistered

    class EndpointUpdated(Event):
        TOPIC = "job-ledger:EndpointUpdated:v1"
        changes: dict[str, Any]

        def apply_to(self, endpoint: Endpoint) -> None:
            for name, value in self.changes.items():
                setattr(endpoint, name, value)

    class EndpointSecretRotated(Event):
        TOPIC = "job-ledger:EndpointSecretRotated:v1"
        sealed_secret: str
        previous_expires_at: datetime

        def apply_to(self, endpoint: Endpoint) -> None:
            endpoint.previous_secrets = [
                *endpoint.previous_secrets,
                (endpoint.sealed_secret, self.previous_expires_at),
            ]
            endpoint.sealed_secret = self.sealed_secret

    class EndpointDisabled(Event):
        TOPIC = "job-ledger:EndpointDisabled:v1"
        reason: str
        automatic: bool
        last_error: dict[str, Any] | None

        def apply_to(self, endpoint: Endpoint) -> None:
            endpoint.state = EndpointState.DISABLED
            endpoint.disabled_reason = self.reason
            endpoint.disabled_automatically = self.automatic
            if self.last_error is not None:
                endpoint.last_error = self.last_error

    class EndpointEnabled(Event):
        TOPIC = "job-ledger:EndpointEnabled:v1"

        def apply_to(self, endpoint: Endpoint) -> None:
            endpoint.state = EndpointState.ACTIVE
            endpoint.disabled_reason = None
            endpoint.disabled_automatically = False

    class EndpointDeleted(Event):
        TOPIC = "job-ledger:EndpointDeleted:v1"

        def apply_to(self, endpoint: Endpoint) -> None:
            endpoint.state = EndpointState.DELETED

    if TYPE_CHECKING:
        tenant_id: str
        url: str
        event_types: list[str]
        description: str | None
        timeout_seconds: float | None
        retry_schedule: list[float] | None
        max_in_flight: int | None
        sealed_secret: str
        previous_secrets: list[tuple[str, datetime]]
        sealed_payload_key: str | None
        state: EndpointState
        created_at: datetime
        updated_at: datetime
        disabled_reason: str | None
        disabled_automatically: bool
        last_error: dict[str, Any] | None

    @classmethod
    def register(
        cls,
        *,
        endpoint_id: UUID,
        tenant_id: str,
        settings: EndpointSettings,
        sealed_secret: str,
        sealed_payload_key: str | None,
        actor: str,
        now: datetime,
    ) -> Endpoint:
        fields = settings.checked().as_fields()
        return cls._start(
            cls.EndpointRegistered,
            id=endpoint_id,
            when=now,
            actor=actor,
            tenant_id=tenant_id,
            sealed_secret=sealed_secret,
            sealed_payload_key=sealed_payload_key,
            **fields,
        )

    # -- commands --

    def update(self, *, changes: dict[str, Any], actor: str, now: datetime) -> bool:
        """Apply changed settings; returns False (and records nothing) when nothing changes."""
        self._check_not_deleted("update")
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidEndpoint(sorted(unknown)[0], "cannot be changed")
        current = self.settings()
        merged = {**current.as_fields(), **changes}
        proposed = EndpointSettings(
            url=merged["url"],
            event_types=tuple(merged["event_types"]),
            description=merged["description"],
            timeout_seconds=merged["timeout_seconds"],
            retry_schedule=tuple(merged["retry_schedule"]) if merged["retry_schedule"] else None,
            max_in_flight=merged["max_in_flight"],
        ).checked()
        new_fields = proposed.as_fields()
        old_fields = current.as_fields()
        diff = {k: new_fields[k] for k in changes if new_fields[k] != old_fields[k]}
        if not diff:
            return False
        self._record(self.EndpointUpdated, when=now, actor=actor, changes=diff)
        return True

    def rotate_secret(
        self, *, sealed_secret: str, grace_seconds: float, actor: str, now: datetime
    ) -> None:
        self._check_not_deleted("rotate the secret of")
        if not (_finite(grace_seconds) and 0 <= grace_seconds <= MAX_GRACE_SECONDS):
            raise InvalidEndpoint(
                "grace_seconds", f"must be 0 to {MAX_GRACE_SECONDS:g} seconds (7 days)"
            )
        self._record(
            self.EndpointSecretRotated,
            when=now,
            actor=actor,
            sealed_secret=sealed_secret,
            previous_expires_at=now + timedelta(seconds=grace_seconds),
        )

    def disable(
        self,
        *,
        reason: str,
        automatic: bool,
        last_error: dict[str, Any] | None,
        actor: str,
        now: datetime,
    ) -> bool:
        """Disable; returns False when it already was (nothing recorded)."""
        self._check_not_deleted("disable")
        if self.state == EndpointState.DISABLED:
            return False
        self._record(
            self.EndpointDisabled,
            when=now,
            actor=actor,
            reason=reason,
            automatic=automatic,
            last_error=last_error,
        )
        return True

    def enable(self, *, actor: str, now: datetime) -> bool:
        self._check_not_deleted("enable")
        if self.state == EndpointState.ACTIVE:
            return False
        self._record(self.EndpointEnabled, when=now, actor=actor)
        return True

    def delete(self, *, actor: str, now: datetime) -> bool:
        if self.state == EndpointState.DELETED:
            return False
        self._record(self.EndpointDeleted, when=now, actor=actor)
        return True

    # -- views --

    def settings(self) -> EndpointSettings:
        return EndpointSettings(
            url=self.url,
            event_types=tuple(self.event_types),
            description=self.description,
            timeout_seconds=self.timeout_seconds,
            retry_schedule=tuple(self.retry_schedule) if self.retry_schedule else None,
            max_in_flight=self.max_in_flight,
        )

    def sealed_signing_secrets(self, now: datetime) -> list[str]:
        """The current secret first, then rotated-out ones still in their grace period."""
        previous = [sealed for sealed, expires in reversed(self.previous_secrets) if expires > now]
        return [self.sealed_secret, *previous]

    def subscribes_to(self, event_type: str) -> bool:
        return ALL_TYPES in self.event_types or event_type in self.event_types

    def describe(self) -> dict[str, Any]:
        """The endpoint as the API shows it: never a secret."""
        return {
            "id": str(self.id),
            "tenant_id": self.tenant_id,
            **self.settings().as_fields(),
            "state": str(self.state),
            "payload_encryption": self.sealed_payload_key is not None,
            "disabled_reason": self.disabled_reason,
            "disabled_automatically": self.disabled_automatically,
            "last_error": self.last_error,
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
            "version": self.version,
        }

    def _check_not_deleted(self, command: str) -> None:
        if self.state == EndpointState.DELETED:
            raise InvalidTransition(
                command, "deleted", ("active", "disabled"), subject="an endpoint"
            )


def subscribes(event_types: list[str] | tuple[str, ...], event_type: str) -> bool:
    return ALL_TYPES in event_types or event_type in event_types


def _check_url(url: object) -> None:
    if not isinstance(url, str) or not 1 <= len(url) <= URL_MAX:
        raise InvalidEndpoint("url", f"must be an http(s) URL of at most {URL_MAX} characters")
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise InvalidEndpoint("url", f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidEndpoint("url", "must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpoint("url", "must not carry a user name or password")
    if parts.fragment:
        raise InvalidEndpoint("url", "must not have a #fragment")


def _check_event_types(event_types: tuple[str, ...]) -> None:
    if not event_types:
        raise InvalidEndpoint("event_types", 'must list at least one event type (or "*")')
    known = (ALL_TYPES, *WEBHOOK_EVENT_TYPES)
    for event_type in event_types:
        if event_type not in known:
            raise InvalidEndpoint(
                "event_types",
                f"unknown event type {event_type!r}; known: {', '.join(known)}",
            )
    if len(set(event_types)) != len(event_types):
        raise InvalidEndpoint("event_types", "must not repeat an event type")


def _check_schedule(schedule: tuple[float, ...]) -> None:
    if not 1 <= len(schedule) <= MAX_SCHEDULE_ENTRIES:
        raise InvalidEndpoint(
            "retry_schedule", f"must have 1 to {MAX_SCHEDULE_ENTRIES} delays (seconds)"
        )
    for delay in schedule:
        if not (_finite(delay) and 0 < delay <= MAX_DELAY_SECONDS):
            raise InvalidEndpoint(
                "retry_schedule",
                f"delay {delay!r} must be more than 0 and at most {MAX_DELAY_SECONDS:g} seconds",
            )


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
