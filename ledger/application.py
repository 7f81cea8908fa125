"""`JobLedger`: the application service every edge (API, worker, CLI) uses to change or read jobs.

Public surface:
- `create_job(new, tenant_id=, idempotency_key=, actor=)` -> `Created` (idempotent on the key)
- commands: `schedule`, `start_attempt`, `record_success`, `record_failure`, `expire_lease`,
  `pace`, `cancel`, `requeue`, each -> `Written` (the job after the command and its log positions)
- reads: `get_job(id, as_of=None)`, `job_events(id)`
- audit: `write_checkpoint()`, `verify()` (SPEC section 9)
- tenants and keys (`ledger.tenancy`), webhook endpoints and deliveries (`ledger.webhooks`)

Commands load the job, decide, and save with optimistic concurrency. When another writer saved
the same job first, the command is re-decided on the fresh state (up to `COMMAND_RETRIES`
times): it then either applies, or raises the domain error the new state calls for. A lost
update is impossible; a refused command writes nothing.

Storage is chosen by the eventsourcing environment given to the constructor (see
`storage.config`); this module imports no database driver.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.persistence import (
    IntegrityError,
)
from eventsourcing.utils import register_topic

from ledger.audit import DIGEST_START, AuditReport, ChainVerifier, Checkpoint, fold_digest
from ledger.clock import Clock, SystemClock
from ledger.commands import positions_by_aggregate
from ledger.errors import (
    ConcurrentUpdate,
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    LedgerError,
    NotDue,
    store_errors,
)
from ledger.group_commit import GroupCommit
from ledger.job import AttemptFailure, Job, JobState
from ledger.request import NewJob
from ledger.retry import RetryPolicy
from ledger.tenancy import TenancyCommands
from ledger.webhooks import EndpointSecrets, WebhookCommands

COMMAND_RETRIES = 8
LOG_BATCH = 1000
CHECKPOINT_LOG_ID = uuid5(NAMESPACE_URL, "https://job-ledger.dev/ns/audit-checkpoints")

T = TypeVar("T")


class AuditCheckpoint(DomainEvent):
    """A checkpoint of the log digest: `count` chained events up to `position` fold to `digest`."""

    TOPIC = "job-ledger:AuditCheckpoint:v1"
    position: int
    count: int
    digest: str


CHECKPOINT_TOPIC = AuditCheckpoint.TOPIC
register_topic(CHECKPOINT_TOPIC, AuditCheckpoint)


@dataclass(frozen=True)
class Written:
    job: Job
    positions: tuple[int, ...]

    @property
    def position(self) -> int:
        return max(self.positions) if self.positions else 0


@dataclass(frozen=True)
class Created(Written):
    created: bool


class JobLedger(WebhookCommands, TenancyCommands, Application[UUID]):
    name = "Ledger"

    def __init__(
        self,
        env: dict[str, str],
        *,
        clock: Clock | None = None,
        retry_policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        endpoint_secrets: EndpointSecrets | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.endpoint_secrets = endpoint_secrets
        # Called after every save in this process with the last log position and the topics
        # written (wakes the followers that care).
        self.saved_listeners: list[Callable[[int, frozenset[str]], None]] = []
        self.retry_policy = retry_policy or RetryPolicy()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        with store_errors():
            super().__init__(env)
        self.group_commit = GroupCommit(self._save_collected)

    # -- creation --

    def create_job(
        self, new: NewJob, *, tenant_id: str, idempotency_key: str, actor: str
    ) -> Created:
        """Create the job for (tenant, key), or return the one that key already made.

        Insert first: the job's id is derived from (tenant, key), so a replay or a concurrent
        create of the same key is refused by the store's uniqueness check, and only then is
        the existing job read. A first create costs one write and no read.

        Raises IdempotencyConflict when the key was used with a different request.
        """
        job = self.new_job(new, tenant_id=tenant_id, idempotency_key=idempotency_key, actor=actor)
        return self._save_new(job)

    def new_job(self, new: NewJob, *, tenant_id: str, idempotency_key: str, actor: str) -> Job:
        """The job `create_job` would save, not saved (no I/O: callers may batch it)."""
        body = new.as_dict()
        return Job.create(
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            request_fingerprint=new.fingerprint(),
            account_id=new.account_id,
            board_id=new.board_id,
            pin=body["pin"],
            publish_at=new.publish_at,
            mode=new.mode,
            simulate=body["simulate"],
            metadata=body["metadata"],
            actor=actor,
            now=self.clock.now(),
        )

    def create_jobs(self, jobs: Sequence[Job]) -> list[Created | LedgerError]:
        """Save jobs made by `new_job` in one store transaction; each result is what
        `create_job` would have returned or raised for it. When the store refuses the batch
        (a key was used before), nothing of it was written and each job is saved on its own,
        so only the replays and conflicts are told so."""
        unsaved = [list(job.pending_events) for job in jobs]
        try:
            with store_errors():
                recordings = self._commit(*jobs)
        except IntegrityError:
            results: list[Created | LedgerError] = []
            for job, events in zip(jobs, unsaved, strict=True):
                job.pending_events[:] = events  # collected by the refused save: again
                try:
                    results.append(self._save_new(job))
                except IdempotencyConflict as conflict:
                    results.append(conflict)
            return results
        positions = positions_by_aggregate(recordings)
        return [Created(job, positions.get(job.id, ()), created=True) for job in jobs]

    def _save_new(self, job: Job) -> Created:
        try:
            with store_errors():
                recordings = self._commit(job)
        except IntegrityError:
            existing = self._find(job.id)  # a replay, or a concurrent create of the key won
            if existing is None:  # pragma: no cover - the winner's row must be visible
                raise
            if existing.request_fingerprint != job.request_fingerprint:
                raise IdempotencyConflict(job.id, job.idempotency_key) from None
            return Created(existing, (), created=False)
        return Created(job, tuple(r.notification.id for r in recordings), created=True)

    # -- commands --

    def schedule(self, job_id: UUID, *, actor: str = "system") -> Written:
        return self._update(job_id, lambda job: job.schedule(now=self.clock.now(), actor=actor))

    def schedule_many(self, job_ids: Sequence[UUID], *, actor: str = "system") -> list[Written]:
        """Schedule several jobs in one store transaction (the scheduler's batch); see
        `_update_many`."""
        return self._update_many(
            job_ids, lambda job: job.schedule(now=self.clock.now(), actor=actor)
        )

    def start_attempts(
        self, job_ids: Sequence[UUID], *, worker_id: str, lease_seconds: float
    ) -> list[Written]:
        """Start an attempt of each job in one store transaction (the worker's batch); see
        `_update_many`."""
        return self._update_many(
            job_ids,
            lambda job: job.start_attempt(
                worker_id=worker_id, lease_seconds=lease_seconds, now=self.clock.now()
            ),
        )

    def _update_many(
        self, job_ids: Sequence[UUID], command: Callable[[Job], object]
    ) -> list[Written]:
        """`command` applied to each job, all saved in one store transaction: one commit instead
        of one per job. Jobs it refuses (InvalidTransition, NotDue: they moved on) or that do
        not exist are skipped. When another writer changed one of them after it was read, the
        batch writes nothing and each job gets the command on its own instead, exactly as the
        single-job command would (re-deciding on fresh state). Returns what was written, in
        the order of `job_ids`. The jobs are read in one statement (`_load_many`)."""
        found = self._load_many(job_ids, Job)
        jobs: list[Job] = []
        for job_id in job_ids:
            job = found.get(job_id)
            if job is None:
                continue
            try:
                command(job)
            except (InvalidTransition, NotDue):
                continue
            jobs.append(job)
        if not jobs:
            return []
        try:
            with store_errors():
                recordings = self._commit(*jobs)
        except IntegrityError:
            written: list[Written] = []
            for job in jobs:
                try:
                    written.append(self._update(job.id, command))
                except (InvalidTransition, NotDue, JobNotFound, ConcurrentUpdate):
                    continue  # someone else moved it first
            return written
        positions = positions_by_aggregate(recordings)
        return [Written(job, positions.get(job.id, ())) for job in jobs]

    def start_attempt(self, job_id: UUID, *, worker_id: str, lease_seconds: float) -> Written:
        return self._update(
            job_id,
            lambda job: job.start_attempt(
                worker_id=worker_id, lease_seconds=lease_seconds, now=self.clock.now()
            ),
        )

    def record_success(
        self,
        job_id: UUID,
        *,
        attempt: int,
        external_ref: str,
        receipt: dict[str, Any],
        actor: str,
        loaded: Job | None = None,
    ) -> Written:
        """`loaded`: see `_update`."""
        return self._update(
            job_id,
            lambda job: job.record_success(
                attempt=attempt,
                external_ref=external_ref,
                receipt=receipt,
                actor=actor,
                now=self.clock.now(),
            ),
            loaded,
        )

    def record_failure(
        self,
        job_id: UUID,
        *,
        attempt: int,
        failure: AttemptFailure,
        actor: str,
        loaded: Job | None = None,
    ) -> Written:
        """`loaded`: see `_update`."""
        return self._update(
            job_id,
            lambda job: job.record_failure(
                attempt=attempt,
                failure=failure,
                policy=self.retry_policy,
                actor=actor,
                now=self.clock.now(),
                rng=self.rng,
            ),
            loaded,
        )

    def expire_lease(self, job_id: UUID) -> Written:
        return self._update(
            job_id,
            lambda job: job.expire_lease(
                policy=self.retry_policy, now=self.clock.now(), rng=self.rng
            ),
        )

    def pace_many(self, holds: Mapping[UUID, tuple[datetime, str]], *, actor: str) -> list[Written]:
        """Hold scheduled jobs back, each until its time and with its reason (token-bucket
        pacing, SPEC section 4), in one store transaction; see `_update_many`."""
        return self._update_many(
            list(holds),
            lambda job: job.pace(
                run_at=holds[job.id][0], reason=holds[job.id][1], actor=actor, now=self.clock.now()
            ),
        )

    def cancel(self, job_id: UUID, *, actor: str, reason: str | None = None) -> Written:
        return self._update(
            job_id, lambda job: job.cancel(actor=actor, reason=reason, now=self.clock.now())
        )

    def requeue(self, job_id: UUID, *, actor: str, reason: str | None = None) -> Written:
        return self._update(
            job_id, lambda job: job.requeue(actor=actor, reason=reason, now=self.clock.now())
        )

    # -- reads --

    def get_job(self, job_id: UUID, *, as_of: datetime | None = None) -> Job:
        if as_of is None:
            job = self._find(job_id)
        else:
            job = None
            with store_errors():
                event: Any
                for event in self.events.get(job_id):
                    if event.timestamp > as_of:
                        break
                    job = event.mutate(job)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def job_events(self, job_id: UUID) -> list[Job.Event]:
        with store_errors():
            events = list(self.events.get(job_id))
        if not events:
            raise JobNotFound(job_id)
        return events  # type: ignore[return-value]

    def state_of(self, job_id: UUID) -> JobState:
        return self.get_job(job_id).state

    # -- audit (SPEC section 9) --

    def checkpoints(self) -> list[Checkpoint]:
        with store_errors():
            events: list[Any] = list(self.events.get(CHECKPOINT_LOG_ID))
        return [Checkpoint(e.position, e.count, e.digest, e.timestamp) for e in events]

    def write_checkpoint(self) -> Checkpoint | None:
        """Extend the log digest to the current end of the log and store it as a checkpoint.

        Returns None when there is nothing new, or another process wrote the same checkpoint
        first. Reads only what follows the last checkpoint.
        """
        with store_errors():
            last_events: list[Any] = list(self.events.get(CHECKPOINT_LOG_ID, desc=True, limit=1))
        last = last_events[0] if last_events else None
        position = last.position if last else 0
        count = last.count if last else 0
        digest = last.digest if last else DIGEST_START
        for notification_id, topic, event in self._read_log(after=position):
            if topic == CHECKPOINT_TOPIC or isinstance(event, Exception):
                continue
            digest = fold_digest(digest, notification_id, event.hash)
            position, count = notification_id, count + 1
        if last is not None and count == last.count:
            return None
        checkpoint = AuditCheckpoint(  # type: ignore[call-arg]
            originator_id=CHECKPOINT_LOG_ID,
            originator_version=(last.originator_version + 1) if last else 1,
            timestamp=self.clock.now(),
            position=position,
            count=count,
            digest=digest,
        )
        try:
            with store_errors():
                self.save(checkpoint)
        except IntegrityError:
            return None
        return Checkpoint(position, count, digest, checkpoint.timestamp)

    def verify(self, progress: Callable[[int], None] | None = None) -> AuditReport:
        """Recompute every hash chain and the log digest; report the first broken event."""
        verifier = ChainVerifier(self.checkpoints())
        for notification_id, topic, event in self._read_log(after=0):
            if topic == CHECKPOINT_TOPIC:
                continue
            if isinstance(event, _Undecodable):
                verifier.undecodable(
                    notification_id, event.originator_id, event.version, event.error
                )
            else:
                verifier.feed(notification_id, topic, event)
            if progress is not None:
                progress(notification_id)
            if verifier.report.first_break is not None:
                break
        return verifier.finish()

    # -- internals --

    def save(self, *objs: Any, **kwargs: Any) -> list[Any]:
        """`Application.save`, through `_save_collected`: the aggregates' pending events and
        any events given, without the library's check of each object against two
        runtime-checkable Protocols (9-15 us an object on Python 3.11; the fan-out's save of
        the deliveries a batch of job events calls for spent 5 % of its thread there)."""
        if kwargs:  # (a recorder's extra arguments: none of ours pass any)
            return super().save(*objs, **kwargs)
        events: list[Any] = []
        for obj in objs:
            if isinstance(obj, Aggregate):
                events.extend(obj.collect_events())
            elif obj is not None:
                events.append(obj)
        return self._save_collected(*events)

    def _save_collected(self, *events: Any) -> list[Any]:
        """`Application.save` for domain events already collected from their aggregates (group
        commit's batches), without its check of each one against a runtime-checkable Protocol:
        that `isinstance` takes 7.5 us per event, about 2 % of a create's CPU in the API
        process. (eventsourcing is pinned below 9.6, so these internals hold.)"""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.events.extend(events)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)  # (save() also calls the deprecated `notify`: a no-op here)
        return recordings

    def _notify(self, recordings: list[Any]) -> None:
        if recordings:
            position = max(r.notification.id for r in recordings)
            topics = frozenset(r.notification.topic for r in recordings)
            for listener in self.saved_listeners:
                listener(position, topics)

    def _read_log(self, *, after: int) -> Iterator[tuple[int, str, Any]]:
        start = after
        while True:
            with store_errors():
                batch = self.recorder.select_notifications(
                    start, LOG_BATCH, inclusive_of_start=False
                )
            for notification in batch:
                try:
                    event: Any = self.mapper.to_domain_event(notification)
                except Exception as error:
                    event = _Undecodable(
                        str(notification.originator_id),
                        notification.originator_version,
                        f"{type(error).__name__}: {error}",
                    )
                yield notification.id, notification.topic, event
            if len(batch) < LOG_BATCH:
                return
            start = batch[-1].id

    def _find(self, job_id: UUID) -> Job | None:
        try:
            with store_errors():
                job: Any = self.repository.get(job_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(job, Job):
            return None
        return job

    def _update(
        self, job_id: UUID, command: Callable[[Job], object], loaded: Job | None = None
    ) -> Written:
        """`command` applied to the job and saved; decided again on fresh state when another
        writer saved the job first. `loaded`: the job as the caller holds it, unchanged since
        it was saved (the worker's, from `start_attempts`), decided on first instead of being
        read again; it is changed in place. Stale, its save is refused like any concurrent
        write, and the job is read."""
        for _ in range(COMMAND_RETRIES):
            job = loaded if loaded is not None else self._find(job_id)
            loaded = None
            if job is None:
                raise JobNotFound(job_id)
            command(job)  # raises a LedgerError (and writes nothing) when refused
            try:
                with store_errors():
                    recordings = self._commit(job)
            except IntegrityError:
                continue  # someone else wrote this job first: decide again on fresh state
            return Written(job, tuple(r.notification.id for r in recordings))
        raise ConcurrentUpdate(
            f"Job {job_id} kept changing while this command was applied "
            f"({COMMAND_RETRIES} tries); nothing was written. Try again.",
            job_id=str(job_id),
        )


@dataclass(frozen=True)
class _Undecodable:
    originator_id: str
    version: int
    error: str
