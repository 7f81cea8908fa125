"""The worker's claim loop: reap expired leases, schedule queued jobs, claim due jobs, run their
attempts through a publisher and record every outcome.

One attempt, in order:
1. (pacing) take the account and global tokens; if they are not there yet, a `scheduled` job is
   paced (`JobPaced`, its next run time visible in its status) and skipped;
2. `start_attempt` is saved (AttemptStarted with worker id and lease expiry). If another worker
   got there first the ledger refuses and this worker skips the job: this, not the claim query,
   is what makes "one attempt never runs twice" hold across processes and machines;
3. only then, in the attempt's own thread: reconcile first if an earlier attempt of the job was
   ambiguous, else publish;
4. record JobPublished / AttemptFailed / JobFailedTerminally with the attempt number from step
   2. A refusal here (WrongAttempt, InvalidTransition) means the lease was lost meanwhile (the
   attempt was reaped as `worker_lost`): it is logged, never retried.

Leases are not renewed: a publisher's timeouts must stay well under the lease. An expired lease
is turned into an ambiguous `worker_lost` failure by whichever worker's reaper sees it first
(`JobLedger.expire_lease`); the retry then reconciles before publishing again.

Shutdown (`drain`): stop claiming, let in-flight attempts finish within the grace period, and
release the rest as an ambiguous retryable `worker_stopped` failure, so no job waits for a
lease to expire. A SIGKILL skips all of that: leases expire and the reaper recovers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.application import JobLedger, Written
from ledger.errors import (
    ConcurrentUpdate,
    InvalidTransition,
    JobNotFound,
    LeaseNotExpired,
    LedgerError,
    StoreUnavailable,
    WrongAttempt,
)
from ledger.job import AttemptFailure, Job, JobState
from projections.runner import ProjectionRunner
from storage.config import MIGRATION_LOCK_KEY
from storage.sql import SqlStore
from worker.config import WorkerConfig
from worker.pacing import Decision, Pacer
from worker.publishers import Outcome, Published, Publishers
from worker.queue import Candidate, WorkQueue
from worker.scheduler import Scheduler

log = logging.getLogger("jobledger.worker")

REPORT_TRIES = 6
SEEN_LIMIT = 10_000
RESERVATION_RETENTION = timedelta(hours=1)


class Worker:
    def __init__(
        self,
        ledger: JobLedger,
        store: SqlStore,
        publishers: Publishers,
        config: WorkerConfig,
        *,
        pacer: Pacer | None = None,
        threaded: bool = True,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.publishers = publishers
        self.config = config
        self.pacer = pacer
        self.threaded = threaded  # False: attempts run inline in tick() (tests, simulations)
        self.queue = WorkQueue(store)
        self.scheduler = Scheduler(
            ledger, self.queue, actor=config.worker_id, batch_size=config.batch_size
        )
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[tuple[UUID, int], threading.Thread] = {}
        # (job id, row version) already acted on: the projection may still show the old row
        self._seen: OrderedDict[tuple[UUID, int], None] = OrderedDict()
        self._last_reap = float("-inf")
        self._stopping = False
        self.attempt_finished: list[Callable[[UUID, int, Outcome], None]] = []

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def wake(self, position: int = 0) -> None:
        self._wake.set()

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    # -- the loop --

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set, then drain (finish or release in-flight attempts)."""
        log.info("worker %s started (concurrency %d)", self.worker_id, self.config.concurrency)
        while not stop.is_set():
            try:
                progressed = self.tick()
            except StoreUnavailable:
                log.warning("worker pass: store unavailable; retrying")
                stop.wait(self.config.poll_seconds)
                continue
            except Exception:
                log.exception("worker pass failed; retrying")
                stop.wait(self.config.poll_seconds)
                continue
            if not progressed:
                self._wake.wait(self.config.poll_seconds)
            self._wake.clear()
        released = self.drain(self.config.shutdown_grace_seconds)
        log.info("worker %s stopped (%d in-flight attempts released)", self.worker_id, released)

    def tick(self) -> int:
        """One pass: reap (at most every poll interval), schedule, claim. Returns work done."""
        done = 0
        if not self.threaded or time.monotonic() - self._last_reap >= self.config.poll_seconds:
            self._last_reap = time.monotonic()
            done += self.reap()
        done += self.scheduler.run_once()
        done += self.claim()
        return done

    def reap(self) -> int:
        now = self.ledger.clock.now()
        reaped = 0
        with self.queue.claim("expired", now, self.config.batch_size) as expired:
            for candidate in expired:
                try:
                    written = self.ledger.expire_lease(candidate.job_id)
                except (LeaseNotExpired, InvalidTransition, JobNotFound, ConcurrentUpdate):
                    continue
                reaped += 1
                log.warning(
                    "job %s: lease of attempt %d expired (worker_lost) -> %s",
                    candidate.job_id,
                    written.job.attempts,
                    written.job.state,
                )
        if self.pacer is not None and reaped == 0:
            self.pacer.purge(now - RESERVATION_RETENTION)
        return reaped

    def claim(self) -> int:
        free = self.config.concurrency - self.inflight()
        if free <= 0 or self._stopping:
            return 0
        now = self.ledger.clock.now()
        extra = min(len(self._seen), 50)  # look past rows the projection has not updated yet
        marked: list[Candidate] = []
        paced: list[tuple[Candidate, Decision]] = []
        started: list[Written] = []
        # The claim's row locks stay held until its block ends, and the projection's updates of
        # those rows wait for them: everything inside is one transaction per kind of write
        # (pacing decisions, started attempts), never one per job.
        with self.queue.claim("due", now, free + extra) as due:
            try:
                fresh = [c for c in due if not self._seen_before(c)]
                chosen, paced = self._pace(fresh, now, free)
                for candidate in chosen + [c for c, _ in paced]:
                    self._mark_seen(candidate)
                    marked.append(candidate)
                if chosen:
                    # one store transaction for the batch; a job another worker took is skipped
                    started = self.ledger.start_attempts(
                        [c.job_id for c in chosen],
                        worker_id=self.worker_id,
                        lease_seconds=self.config.lease_seconds,
                    )
            except BaseException:  # the store went away mid-batch, say: nothing was started
                for candidate in marked:
                    self._unmark_seen(candidate)  # not acted on: the next pass tries again
                raise
            # started attempts run even if ending the claim's transaction fails below
            for written in started:
                self._launch(written.job)
        if paced:  # their reservations already hide them from every worker's due scan
            self._hold_back(paced, now)
        return len(started)

    # -- pacing --

    def _pace(
        self, candidates: list[Candidate], now: datetime, free: int
    ) -> tuple[list[Candidate], list[tuple[Candidate, Decision]]]:
        """(jobs that may start now, at most `free`; scheduled jobs to hold back, with why).

        A failed_retrying job told to wait is in neither: it keeps its state, and its
        reservation hides it until its token exists."""
        if self.pacer is None:
            return candidates[:free], []
        decisions = self.pacer.acquire_many(
            [(str(c.job_id), c.account_id) for c in candidates], now, go_limit=free
        )
        chosen: list[Candidate] = []
        paced: list[tuple[Candidate, Decision]] = []
        # (the decisions stop short of the candidates once `free` jobs may go)
        for candidate, decision in zip(candidates, decisions, strict=False):
            if decision.go:
                chosen.append(candidate)
            elif candidate.state == JobState.SCHEDULED:
                paced.append((candidate, decision))
        return chosen, paced

    def _hold_back(self, paced: list[tuple[Candidate, Decision]], now: datetime) -> None:
        """Save each paced job's JobPaced (its run time and why), all in one transaction."""
        holds = {
            c.job_id: (
                now + timedelta(seconds=d.wait_seconds),
                f"pacing: bucket {d.bucket} is empty",
            )
            for c, d in paced
        }
        try:
            self.ledger.pace_many(holds, actor=self.worker_id)
        except LedgerError as error:
            if isinstance(error, StoreUnavailable):
                for candidate, _ in paced:
                    self._unmark_seen(candidate)  # not acted on: the next pass tries again
            log.info("%d jobs not paced (%s)", len(holds), error.message)

    # -- attempts --

    def _launch(self, job: Job) -> None:
        if not self.threaded:
            self._execute(job)
            return
        key = (job.id, job.attempts)
        thread = threading.Thread(
            target=self._execute_tracked,
            args=(job,),
            name=f"attempt-{str(job.id)[:8]}-{job.attempts}",
            daemon=True,  # a hung publisher must not keep the process alive past the grace
        )
        with self._lock:
            self._inflight[key] = thread
        thread.start()

    def _execute_tracked(self, job: Job) -> None:
        try:
            self._execute(job)
        finally:
            with self._lock:
                self._inflight.pop((job.id, job.attempts), None)
            self.wake()

    def _execute(self, job: Job) -> None:
        attempt = job.attempts
        outcome: Outcome | None = None
        publisher = self.publishers.get(job.mode)
        try:
            if publisher is None:
                outcome = AttemptFailure(
                    "no_publisher",
                    f"this worker has no publisher for mode {job.mode!r}",
                    retryable=False,
                )
            else:
                since = self._ambiguous_since(job) if attempt > 1 else None
                if since is not None:
                    outcome = publisher.reconcile(job, since)
                    if isinstance(outcome, Published):
                        outcome = Published(
                            outcome.external_ref,
                            {**outcome.receipt, "reconciled": True, "attempt": attempt},
                        )
                if outcome is None:
                    outcome = publisher.publish(job, attempt)
        except Exception as error:  # a publisher bug: keep the job safe, and say so
            log.exception("job %s attempt %d: publisher raised", job.id, attempt)
            outcome = AttemptFailure(
                "worker_error",
                f"{type(error).__name__}: {error}",
                retryable=True,
                ambiguous=True,
            )
        self._report(job.id, attempt, outcome, job)

    def _ambiguous_since(self, job: Job) -> datetime | None:
        """When the earliest ambiguous attempt of this job started (None: nothing ambiguous).

        Reconciliation looks for a result created since then: a pin made late by an early
        ambiguous attempt is still found after later attempts failed."""
        starts: dict[int, datetime] = {}
        earliest: datetime | None = None
        event: Any
        for event in self.ledger.job_events(job.id):
            kind = type(event).__name__
            if kind == "AttemptStarted":
                starts[event.attempt] = event.timestamp
            elif kind in ("AttemptFailed", "JobFailedTerminally") and event.ambiguous:
                began = starts.get(event.attempt)
                if began is not None and (earliest is None or began < earliest):
                    earliest = began
        return earliest

    def _report(
        self, job_id: UUID, attempt: int, outcome: Outcome, started: Job | None = None
    ) -> None:
        """Record the attempt's outcome. `started`: the job as `start_attempts` saved it,
        recorded on without reading it again; only on the first try, since a try that failed
        may have changed it in place without saving it."""
        for tries in range(REPORT_TRIES):
            loaded, started = started, None
            try:
                if isinstance(outcome, Published):
                    self.ledger.record_success(
                        job_id,
                        attempt=attempt,
                        external_ref=outcome.external_ref,
                        receipt=outcome.receipt,
                        actor=self.worker_id,
                        loaded=loaded,
                    )
                else:
                    self.ledger.record_failure(
                        job_id,
                        attempt=attempt,
                        failure=outcome,
                        actor=self.worker_id,
                        loaded=loaded,
                    )
            except (WrongAttempt, InvalidTransition) as error:
                log.warning(
                    "job %s attempt %d: lease lost, outcome not recorded (%s): %s",
                    job_id,
                    attempt,
                    error.message,
                    outcome,
                )
                return
            except (StoreUnavailable, ConcurrentUpdate) as error:
                log.warning("job %s attempt %d: cannot record yet: %s", job_id, attempt, error)
                time.sleep(min(5.0, 0.2 * 2**tries))
                continue
            for callback in self.attempt_finished:
                callback(job_id, attempt, outcome)
            return
        log.error(
            "job %s attempt %d: outcome never recorded; the lease will expire", job_id, attempt
        )

    # -- shutdown --

    def drain(self, grace_seconds: float) -> int:
        """Stop claiming; wait up to `grace_seconds` for in-flight attempts; release the rest."""
        self._stopping = True
        deadline = time.monotonic() + grace_seconds
        with self._lock:
            threads = list(self._inflight.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._inflight)
        for job_id, attempt in left:
            failure = AttemptFailure(
                "worker_stopped",
                f"worker {self.worker_id} shut down before attempt {attempt} finished; "
                "the outcome upstream is unknown",
                retryable=True,
                ambiguous=True,
                receipt={"worker_id": self.worker_id},
            )
            with contextlib.suppress(LedgerError):  # the attempt may have just finished
                self.ledger.record_failure(
                    job_id, attempt=attempt, failure=failure, actor=self.worker_id
                )
        return len(left)

    # -- internals --

    def _seen_before(self, candidate: Candidate) -> bool:
        """True when this worker already acted on this row version (the projection lags)."""
        return (candidate.job_id, candidate.version) in self._seen

    def _mark_seen(self, candidate: Candidate) -> None:
        self._seen[(candidate.job_id, candidate.version)] = None
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)

    def _unmark_seen(self, candidate: Candidate) -> None:
        self._seen.pop((candidate.job_id, candidate.version), None)


def prepare_tables(store: SqlStore, runner: ProjectionRunner | None = None) -> None:
    """Create the worker's tables (and the projection's, if given) idempotently.

    On PostgreSQL under the migration advisory lock, because concurrent
    `CREATE TABLE IF NOT EXISTS` from several starting workers races there."""
    conn: Any = None
    if store.is_postgres:
        conn = store.database.connect()
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        if runner is not None:
            runner.setup()
        with store.transaction() as tx:
            Pacer.create_tables(tx)
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            conn.close()
