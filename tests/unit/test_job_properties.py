"""Property test: random command sequences against the Job aggregate, checked against an
independent model of SPEC section 2 (the table is written out again here on purpose, so a
mistake in `ledger.job.TRANSITIONS` cannot hide behind itself).

After every step: the state is one of the seven; an accepted command appended exactly the event
the spec documents and moved to its target state; a refused command raised a LedgerError and
appended nothing; the hash chain holds; replaying the events rebuilds the same job.
"""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ledger.audit import GENESIS, event_fields, hash_event
from ledger.clock import ManualClock
from ledger.errors import LedgerError
from ledger.job import AttemptFailure, Job
from ledger.retry import RetryPolicy
from tests.conftest import make_new_job

STATES = {
    "queued",
    "scheduled",
    "running",
    "published",
    "failed_retrying",
    "failed_terminal",
    "canceled",
}
# The spec's table: event -> (from states, to state)
SPEC = {
    "JobScheduled": ({"queued"}, "scheduled"),
    "AttemptStarted": ({"scheduled", "failed_retrying"}, "running"),
    "JobPublished": ({"running"}, "published"),
    "AttemptFailed": ({"running"}, "failed_retrying"),
    "JobFailedTerminally": ({"running"}, "failed_terminal"),
    "JobCanceled": ({"queued", "scheduled", "failed_retrying"}, "canceled"),
    "JobRequeued": ({"failed_terminal", "canceled"}, "queued"),
    "JobPaced": ({"scheduled"}, "scheduled"),
}
LEASE_SECONDS = 30.0
POLICY = RetryPolicy(max_attempts=3, base_seconds=1.0, cap_seconds=8.0)


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.rng = random.Random(0)
        new = make_new_job()
        self.job = Job.create(
            tenant_id="t",
            idempotency_key="k",
            request_fingerprint=new.fingerprint(),
            account_id=new.account_id,
            board_id=new.board_id,
            pin=new.pin.as_dict(),
            publish_at=None,
            mode="sandbox",
            simulate=None,
            metadata={},
            actor="key:test",
            now=self.clock.now(),
        )
        self.log = list(self.job.collect_events())
        # the model's own view of the job
        self.state = "queued"
        self.due_at = None
        self.lease_until = None
        self.attempts = 0
        self.cycle_attempts = 0

    # -- helpers --

    def _expect(self, command, expected_event: str | None) -> None:
        before_version = self.job.version
        before_state = str(self.job.state)
        try:
            command()
        except LedgerError:
            assert expected_event is None, f"refused, but the spec allows {expected_event}"
            assert self.job.version == before_version
            assert str(self.job.state) == before_state
            assert self.job.collect_events() == []
            return
        new_events = list(self.job.collect_events())
        assert expected_event is not None, (
            f"accepted {type(new_events[0]).__name__} from {before_state}"
        )
        assert [type(e).__name__ for e in new_events] == [expected_event]
        sources, target = SPEC[expected_event]
        assert before_state in sources
        assert str(self.job.state) == target
        assert new_events[0].originator_version == before_version + 1
        self.log.extend(new_events)
        self.state = target

    def _due(self) -> bool:
        return self.due_at is None or self.clock.now() >= self.due_at

    # -- rules --

    @rule(seconds=st.sampled_from([0.0, 0.5, 5.0, 31.0, 120.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def schedule(self) -> None:
        ok = self.state == "queued"
        self._expect(
            lambda: self.job.schedule(now=self.clock.now()), "JobScheduled" if ok else None
        )
        if ok:
            self.due_at = self.clock.now()

    @rule()
    def start_attempt(self) -> None:
        ok = self.state in ("scheduled", "failed_retrying") and self._due()
        self._expect(
            lambda: self.job.start_attempt(
                worker_id="worker:w", lease_seconds=LEASE_SECONDS, now=self.clock.now()
            ),
            "AttemptStarted" if ok else None,
        )
        if ok:
            self.attempts += 1
            self.cycle_attempts += 1
            self.lease_until = self.clock.now() + timedelta(seconds=LEASE_SECONDS)
            assert self.log[-1].attempt == self.attempts

    @rule(stale=st.booleans())
    def succeed(self, stale: bool) -> None:
        ok = self.state == "running" and not stale
        self._expect(
            lambda: self.job.record_success(
                attempt=self.attempts - 1 if stale else self.attempts,
                external_ref="pin-1",
                receipt={},
                actor="worker:w",
                now=self.clock.now(),
            ),
            "JobPublished" if ok else None,
        )

    @rule(retryable=st.booleans(), ambiguous=st.booleans())
    def fail(self, retryable: bool, ambiguous: bool) -> None:
        expected = None
        if self.state == "running":
            budget_left = self.cycle_attempts < POLICY.max_attempts
            expected = "AttemptFailed" if retryable and budget_left else "JobFailedTerminally"
        self._expect(
            lambda: self.job.record_failure(
                attempt=self.attempts,
                failure=AttemptFailure("e", "m", retryable=retryable, ambiguous=ambiguous),
                policy=POLICY,
                actor="worker:w",
                now=self.clock.now(),
                rng=self.rng,
            ),
            expected,
        )
        self._after_failure(expected)

    @rule()
    def expire_lease(self) -> None:
        expected = None
        if self.state == "running" and self.clock.now() >= self.lease_until:
            budget_left = self.cycle_attempts < POLICY.max_attempts
            expected = "AttemptFailed" if budget_left else "JobFailedTerminally"
        self._expect(
            lambda: self.job.expire_lease(policy=POLICY, now=self.clock.now(), rng=self.rng),
            expected,
        )
        if expected is not None:
            assert self.log[-1].error_code == "worker_lost"
            assert self.log[-1].ambiguous is True
        self._after_failure(expected)

    def _after_failure(self, expected: str | None) -> None:
        if expected == "AttemptFailed":
            event = self.log[-1]
            ceiling = min(POLICY.cap_seconds, POLICY.base_seconds * 2 ** (self.cycle_attempts - 1))
            assert 0 <= event.delay_seconds <= ceiling
            assert event.next_run_at == event.timestamp + timedelta(seconds=event.delay_seconds)
            self.due_at = event.next_run_at

    @rule(seconds=st.sampled_from([0.0, 1.0, 60.0]))
    def pace(self, seconds: float) -> None:
        ok = self.state == "scheduled"
        run_at = self.clock.now() + timedelta(seconds=seconds)
        self._expect(
            lambda: self.job.pace(
                run_at=run_at, reason="account bucket empty", actor="worker:w", now=self.clock.now()
            ),
            "JobPaced" if ok else None,
        )
        if ok:
            assert self.job.next_run_at == run_at
            self.due_at = run_at

    @rule()
    def cancel(self) -> None:
        ok = self.state in ("queued", "scheduled", "failed_retrying")
        self._expect(
            lambda: self.job.cancel(actor="key:human", now=self.clock.now(), reason="r"),
            "JobCanceled" if ok else None,
        )

    @rule(human=st.booleans())
    def requeue(self, human: bool) -> None:
        ok = self.state in ("failed_terminal", "canceled") and human
        self._expect(
            lambda: self.job.requeue(
                actor="key:human" if human else "system", now=self.clock.now(), reason="again"
            ),
            "JobRequeued" if ok else None,
        )
        if ok:
            self.cycle_attempts = 0
            self.due_at = None

    # -- invariants --

    @invariant()
    def state_is_legal(self) -> None:
        assert str(self.job.state) in STATES
        assert str(self.job.state) == self.state
        assert self.job.attempts == self.attempts

    @invariant()
    def chain_holds_and_replay_rebuilds(self) -> None:
        prev = GENESIS
        for version, event in enumerate(self.log, start=1):
            assert event.originator_version == version
            assert event.prev_hash == prev
            assert event.hash == hash_event(type(event).TOPIC, event_fields(event))
            prev = event.hash
        replayed = None
        for event in self.log:
            replayed = event.mutate(replayed)
        assert replayed is not None
        assert replayed.status() == self.job.status()
        assert replayed.last_hash == self.job.last_hash


JobMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestJobStateMachine = JobMachine.TestCase
