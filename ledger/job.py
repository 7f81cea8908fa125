"""The Job aggregate: one publish job, its state machine and the events that record it.

The state machine is data (`TRANSITIONS`): for each event type, the states it may leave from and
the state it enters. `Job._check` is the one place that consults it; a refused command raises
`InvalidTransition` before any event exists, so nothing is written. Every event is hash-chained
(`ledger.aggregate.AuditedAggregate`) and carries the receipts a reader of the timeline needs.

Decisions take their time (`now`) and randomness (`rng`) as arguments. This module must never
import anything from the web, the database drivers or HTTP clients.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.aggregate import AuditedAggregate
from ledger.clock import iso_z
from ledger.errors import InvalidTransition, LeaseNotExpired, NotDue, WrongAttempt
from ledger.retry import RetryPolicy

SYSTEM_ACTOR = "system"
JOB_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://job-ledger.dev/ns/job")


class JobState(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PUBLISHED = "published"
    FAILED_RETRYING = "failed_retrying"
    FAILED_TERMINAL = "failed_terminal"
    CANCELED = "canceled"


S = JobState

# event type -> (states it may leave from, state it enters). None is "no job yet".
TRANSITIONS: dict[str, tuple[tuple[JobState | None, ...], JobState]] = {
    "JobCreated": ((None,), S.QUEUED),
    "JobScheduled": ((S.QUEUED,), S.SCHEDULED),
    "AttemptStarted": ((S.SCHEDULED, S.FAILED_RETRYING), S.RUNNING),
    "JobPublished": ((S.RUNNING,), S.PUBLISHED),
    "AttemptFailed": ((S.RUNNING,), S.FAILED_RETRYING),
    "JobFailedTerminally": ((S.RUNNING,), S.FAILED_TERMINAL),
    "JobCanceled": ((S.QUEUED, S.SCHEDULED, S.FAILED_RETRYING), S.CANCELED),
    "JobRequeued": ((S.FAILED_TERMINAL, S.CANCELED), S.QUEUED),
    "JobPaced": ((S.SCHEDULED,), S.SCHEDULED),
}

# command name -> the event types it may append (its allowed source states are their union).
COMMANDS: dict[str, tuple[str, ...]] = {
    "schedule": ("JobScheduled",),
    "start_attempt": ("AttemptStarted",),
    "record_success": ("JobPublished",),
    "record_failure": ("AttemptFailed", "JobFailedTerminally"),
    "expire_lease": ("AttemptFailed", "JobFailedTerminally"),
    "cancel": ("JobCanceled",),
    "requeue": ("JobRequeued",),
    "pace": ("JobPaced",),
}

FINAL_STATES = frozenset({S.PUBLISHED, S.FAILED_TERMINAL, S.CANCELED})

WORKER_LOST = "worker_lost"


def allowed_from(command: str) -> tuple[JobState, ...]:
    states: list[JobState] = []
    for event_type in COMMANDS[command]:
        for state in TRANSITIONS[event_type][0]:
            if state is not None and state not in states:
                states.append(state)
    return tuple(states)


def job_id_for(tenant_id: str, idempotency_key: str) -> UUID:
    """Same (tenant, key) -> same job id in every process: what makes creation idempotent."""
    return uuid5(JOB_ID_NAMESPACE, f"{len(tenant_id)}:{tenant_id}:{idempotency_key}")


@dataclass(frozen=True)
class AttemptFailure:
    """What a publisher reports about a failed attempt."""

    code: str
    message: str
    retryable: bool
    ambiguous: bool = False
    retry_after: float | None = None
    receipt: dict[str, Any] = field(default_factory=dict)


class Job(AuditedAggregate):
    TOPIC = "job-ledger:Job"

    class Event(AuditedAggregate.Event):
        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            job: Job = aggregate
            target = TRANSITIONS[type(self).__name__][1]
            if job.state != target:
                job.state = target
                job.state_entered_at = self.timestamp
            job.updated_at = self.timestamp
            self.apply_to(job)

        def apply_to(self, job: Job) -> None:
            pass

    class JobCreated(Event, Aggregate.Created):
        TOPIC = "job-ledger:JobCreated:v1"
        tenant_id: str
        idempotency_key: str
        request_fingerprint: str
        account_id: str
        board_id: str
        pin: dict[str, Any]
        publish_at: datetime | None
        mode: str
        simulate: list[str] | None
        metadata: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            job: Job = aggregate
            job.state = S.QUEUED
            job.state_entered_at = self.timestamp
            job.created_at = self.timestamp
            job.tenant_id = self.tenant_id
            job.idempotency_key = self.idempotency_key
            job.request_fingerprint = self.request_fingerprint
            job.account_id = self.account_id
            job.board_id = self.board_id
            job.pin = self.pin
            job.publish_at = self.publish_at
            job.mode = self.mode
            job.simulate = self.simulate
            job.metadata = self.metadata
            job.attempts = 0
            job.cycle_attempts = 0
            job.next_run_at = None
            job.lease_worker = None
            job.lease_expires_at = None
            job.attempt_started_at = None
            job.last_error = None
            job.external_ref = None
            super().apply(job)

    Created = JobCreated

    class JobScheduled(Event):
        TOPIC = "job-ledger:JobScheduled:v1"
        run_at: datetime
        lane: str

        def apply_to(self, job: Job) -> None:
            job.next_run_at = self.run_at

    class AttemptStarted(Event):
        TOPIC = "job-ledger:AttemptStarted:v1"
        attempt: int
        worker_id: str
        lease_expires_at: datetime

        def apply_to(self, job: Job) -> None:
            job.attempts = self.attempt
            job.cycle_attempts += 1
            job.lease_worker = self.worker_id
            job.lease_expires_at = self.lease_expires_at
            job.attempt_started_at = self.timestamp
            job.next_run_at = None

    class JobPublished(Event):
        TOPIC = "job-ledger:JobPublished:v1"
        attempt: int
        external_ref: str
        receipt: dict[str, Any]

        def apply_to(self, job: Job) -> None:
            job.external_ref = self.external_ref
            job.last_error = None
            job.lease_worker = None
            job.lease_expires_at = None

    class AttemptFailed(Event):
        TOPIC = "job-ledger:AttemptFailed:v1"
        attempt: int
        error_code: str
        error_message: str
        retryable: bool
        ambiguous: bool
        delay_seconds: float
        next_run_at: datetime
        receipt: dict[str, Any]

        def apply_to(self, job: Job) -> None:
            job.last_error = _error(self)
            job.next_run_at = self.next_run_at
            job.lease_worker = None
            job.lease_expires_at = None

    class JobFailedTerminally(Event):
        TOPIC = "job-ledger:JobFailedTerminally:v1"
        attempt: int
        error_code: str
        error_message: str
        retryable: bool
        ambiguous: bool
        reason: str  # "non_retryable" or "attempts_exhausted"
        receipt: dict[str, Any]

        def apply_to(self, job: Job) -> None:
            job.last_error = _error(self)
            job.next_run_at = None
            job.lease_worker = None
            job.lease_expires_at = None

    class JobCanceled(Event):
        TOPIC = "job-ledger:JobCanceled:v1"
        reason: str | None

        def apply_to(self, job: Job) -> None:
            job.next_run_at = None

    class JobRequeued(Event):
        TOPIC = "job-ledger:JobRequeued:v1"
        reason: str | None

        def apply_to(self, job: Job) -> None:
            job.cycle_attempts = 0
            job.next_run_at = None

    class JobPaced(Event):
        """A scheduled job held back by pacing (token buckets); it runs at `run_at` instead."""

        TOPIC = "job-ledger:JobPaced:v1"
        run_at: datetime
        reason: str

        def apply_to(self, job: Job) -> None:
            job.next_run_at = self.run_at

    # -- state, set only by the events above (annotations hidden from the library, which
    # would otherwise turn the aggregate into a dataclass) --
    if TYPE_CHECKING:
        state: JobState
        tenant_id: str
        idempotency_key: str
        request_fingerprint: str
        account_id: str
        board_id: str
        pin: dict[str, Any]
        publish_at: datetime | None
        mode: str
        simulate: list[str] | None
        metadata: dict[str, Any]
        attempts: int
        cycle_attempts: int
        next_run_at: datetime | None
        lease_worker: str | None
        lease_expires_at: datetime | None
        attempt_started_at: datetime | None
        last_error: dict[str, Any] | None
        external_ref: str | None
        created_at: datetime
        updated_at: datetime
        state_entered_at: datetime

    # -- commands --

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        idempotency_key: str,
        request_fingerprint: str,
        account_id: str,
        board_id: str,
        pin: dict[str, Any],
        publish_at: datetime | None,
        mode: str,
        simulate: list[str] | None,
        metadata: dict[str, Any],
        actor: str,
        now: datetime,
    ) -> Job:
        return cls._start(
            cls.JobCreated,
            id=job_id_for(tenant_id, idempotency_key),
            when=now,
            actor=actor,
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            account_id=account_id,
            board_id=board_id,
            pin=pin,
            publish_at=publish_at,
            mode=mode,
            simulate=simulate,
            metadata=metadata,
        )

    def schedule(self, *, now: datetime, actor: str = SYSTEM_ACTOR) -> None:
        self._check("schedule", "JobScheduled")
        run_at = max(now, self.publish_at) if self.publish_at else now
        self._record(self.JobScheduled, when=now, actor=actor, run_at=run_at, lane=self.account_id)

    def start_attempt(self, *, worker_id: str, lease_seconds: float, now: datetime) -> int:
        """Claim the job for one attempt; returns the attempt number (numbering never restarts)."""
        self._check("start_attempt", "AttemptStarted")
        if self.next_run_at is not None and self.next_run_at > now:
            raise NotDue(
                f"Job {self.id} is not due until {self.next_run_at.isoformat()}.",
                next_run_at=self.next_run_at.isoformat(),
            )
        attempt = self.attempts + 1
        self._record(
            self.AttemptStarted,
            when=now,
            actor=worker_id,
            attempt=attempt,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
        return attempt

    def record_success(
        self,
        *,
        attempt: int,
        external_ref: str,
        receipt: dict[str, Any],
        actor: str,
        now: datetime,
    ) -> None:
        self._check("record_success", "JobPublished")
        self._check_attempt(attempt)
        self._record(
            self.JobPublished,
            when=now,
            actor=actor,
            attempt=attempt,
            external_ref=external_ref,
            receipt=receipt,
        )

    def record_failure(
        self,
        *,
        attempt: int,
        failure: AttemptFailure,
        policy: RetryPolicy,
        actor: str,
        now: datetime,
        rng: random.Random | None = None,
    ) -> JobState:
        """Record a failed attempt; retry with backoff if allowed, else fail terminally."""
        self._check("record_failure", "AttemptFailed", "JobFailedTerminally")
        self._check_attempt(attempt)
        return self._fail(failure, policy=policy, actor=actor, now=now, rng=rng)

    def expire_lease(
        self, *, policy: RetryPolicy, now: datetime, rng: random.Random | None = None
    ) -> JobState:
        """A running attempt whose worker vanished: an ambiguous `worker_lost` failure."""
        self._check("expire_lease", "AttemptFailed", "JobFailedTerminally")
        assert self.lease_expires_at is not None
        if now < self.lease_expires_at:
            raise LeaseNotExpired(
                f"Attempt {self.attempts} of job {self.id} is leased to {self.lease_worker} "
                f"until {self.lease_expires_at.isoformat()}.",
                lease_expires_at=self.lease_expires_at.isoformat(),
            )
        failure = AttemptFailure(
            code=WORKER_LOST,
            message=(
                f"worker {self.lease_worker} stopped reporting; its lease expired at "
                f"{self.lease_expires_at.isoformat()}. The outcome upstream is unknown."
            ),
            retryable=True,
            ambiguous=True,
            receipt={"worker_id": self.lease_worker},
        )
        return self._fail(failure, policy=policy, actor=SYSTEM_ACTOR, now=now, rng=rng)

    def pace(self, *, run_at: datetime, reason: str, actor: str, now: datetime) -> None:
        """Hold a scheduled job back until `run_at` (never earlier than now): pacing."""
        self._check("pace", "JobPaced")
        self._record(self.JobPaced, when=now, actor=actor, run_at=max(run_at, now), reason=reason)

    def cancel(self, *, actor: str, now: datetime, reason: str | None = None) -> None:
        self._check("cancel", "JobCanceled")
        self._record(self.JobCanceled, when=now, actor=actor, reason=reason)

    def requeue(self, *, actor: str, now: datetime, reason: str | None = None) -> None:
        """A human retry of a failed-terminal or canceled job; attempt numbering continues."""
        self._check("requeue", "JobRequeued")
        if actor == SYSTEM_ACTOR or actor.startswith("worker:"):
            raise InvalidTransition("requeue", f"{self.state} (requeue is a human action)", ())
        self._record(self.JobRequeued, when=now, actor=actor, reason=reason)

    # -- views --

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def status(self) -> dict[str, Any]:
        """The job as `GET /v1/jobs/{id}` shows it (section 5 of the spec)."""
        return {
            "id": str(self.id),
            "tenant_id": self.tenant_id,
            "idempotency_key": self.idempotency_key,
            "state": str(self.state),
            "account_id": self.account_id,
            "board_id": self.board_id,
            "pin": self.pin,
            "publish_at": iso_z(self.publish_at),
            "mode": self.mode,
            "simulate": self.simulate,
            "metadata": self.metadata,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "external_ref": self.external_ref,
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
            "state_entered_at": iso_z(self.state_entered_at),
            "next_run_at": iso_z(self.next_run_at),
            "lease_expires_at": iso_z(self.lease_expires_at),
            "version": self.version,
        }

    # -- internals --

    def _check(self, command: str, *event_types: str) -> None:
        if not any(self.state in TRANSITIONS[e][0] for e in event_types):
            raise InvalidTransition(
                command, str(self.state), tuple(map(str, allowed_from(command)))
            )

    def _check_attempt(self, attempt: int) -> None:
        if attempt != self.attempts:
            raise WrongAttempt(
                f"Job {self.id} is running attempt {self.attempts}, not attempt {attempt}; "
                "the report is for an attempt that was already closed.",
                current_attempt=self.attempts,
                reported_attempt=attempt,
            )

    def _fail(
        self,
        failure: AttemptFailure,
        *,
        policy: RetryPolicy,
        actor: str,
        now: datetime,
        rng: random.Random | None,
    ) -> JobState:
        common = {
            "attempt": self.attempts,
            "error_code": failure.code,
            "error_message": failure.message,
            "retryable": failure.retryable,
            "ambiguous": failure.ambiguous,
            "receipt": dict(failure.receipt),
        }
        delay = (
            policy.next_delay(self.cycle_attempts, retry_after=failure.retry_after, rng=rng)
            if failure.retryable
            else None
        )
        if delay is None:
            reason = "attempts_exhausted" if failure.retryable else "non_retryable"
            self._record(self.JobFailedTerminally, when=now, actor=actor, reason=reason, **common)
            return S.FAILED_TERMINAL
        self._record(
            self.AttemptFailed,
            when=now,
            actor=actor,
            delay_seconds=delay,
            next_run_at=now + timedelta(seconds=delay),
            **common,
        )
        return S.FAILED_RETRYING


def _error(event: Job.AttemptFailed | Job.JobFailedTerminally) -> dict[str, Any]:
    return {
        "code": event.error_code,
        "message": event.error_message,
        "retryable": event.retryable,
        "ambiguous": event.ambiguous,
        "attempt": event.attempt,
    }
