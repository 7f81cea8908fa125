"""Projection runners wake for their own topics only, in this process and (PostgreSQL) in
others, and still move over everyone else's writes soon after; one thread runs a process's
runners (`RunnerGroup`), each still owning its projection alone."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from ledger.application import JobLedger
from ledger.job import Job
from ledger.tenancy import ApiKey, Tenant
from projections.attempt_outcomes import AttemptOutcomesProjection
from projections.job_status import JobStatusProjection, get_doc
from projections.runner import (
    TRACKING_TABLE,
    LogListener,
    ProjectionRunner,
    RunnerGroup,
    _read_log,
)
from projections.state_history import JobStateHistoryProjection
from storage.recorder import MAX_PAYLOAD, notify_channel, topics_payload, written_topics
from storage.sql import SqlStore
from tests.conftest import make_new_job

SLOW = 60.0  # a wait no test here may rely on


@pytest.fixture
def runner(ledger, store) -> ProjectionRunner:
    r = ProjectionRunner(ledger, store, JobStatusProjection(ledger), poll_seconds=SLOW)
    r.setup()
    return r


@pytest.fixture
def running(runner) -> Iterator[Callable[[], None]]:
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,), kwargs={"listen": False})

    def start() -> None:
        runner.catch_up()
        thread.start()

    yield start
    stop.set()
    runner.notify()
    if thread.is_alive():
        thread.join(timeout=10)


@contextmanager
def group_thread(
    group: RunnerGroup, *, release: Callable[[], None] = lambda: None
) -> Iterator[threading.Thread]:
    """A thread to run `group` in (the caller starts it); on leaving, the group is stopped,
    `release` lets go whatever the test holds it on, and the thread is joined."""
    stop = threading.Event()
    thread = threading.Thread(target=group.run, args=(stop,), kwargs={"listen": False})
    try:
        yield thread
    finally:
        stop.set()
        group.notify()
        release()
        if thread.ident is not None:
            thread.join(timeout=10)


def listening_group(
    ledger: JobLedger, store: SqlStore, projections: list
) -> tuple[list[ProjectionRunner], RunnerGroup]:
    """A runner per projection (set up, slow polls: only wake-ups move them) in one group
    that the ledger's saves wake."""
    runners = [ProjectionRunner(ledger, store, p, poll_seconds=SLOW) for p in projections]
    for runner in runners:
        runner.setup()
    group = RunnerGroup(runners)
    ledger.saved_listeners.append(group.notify)
    return runners, group


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_payload_round_trip() -> None:
    topics = {"job-ledger:JobCreated:v1", "job-ledger:DeliveryCreated:v1"}
    assert written_topics(topics_payload(topics)) == frozenset(topics)
    assert topics_payload(["a", "b", "a"]) == "a b"
    # an empty or oversized payload says nothing: wake for anything
    assert written_topics("") is None
    assert topics_payload(f"topic-{i:05d}" for i in range(MAX_PAYLOAD // 8)) == ""


def test_each_schema_has_its_own_channel() -> None:
    assert notify_channel("ledger_events", "public") == "ledger_events"  # earlier releases'
    assert notify_channel("ledger_events", "staging") == "ledger_events_staging"
    longest = [notify_channel("ledger_events", c * 63) for c in "ab"]
    assert all(len(name) <= 63 and name.startswith("ledger_events_") for name in longest)
    assert longest[0] != longest[1]


def test_own_topics_wake_at_once(ledger: JobLedger, store, runner, running) -> None:
    runner.pass_over_seconds = SLOW  # only the wake-up can make this pass in time
    ledger.saved_listeners.append(runner.notify)
    running()
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="a").job.id

    def projected() -> bool:
        with store.transaction() as tx:
            return get_doc(tx, "t", job_id) is not None

    wait_for(projected, "the job view did not wake for a job's event")


def test_notify_wakes_only_for_its_topics(runner) -> None:
    wake = runner._wake
    runner.notify(0, frozenset({"job-ledger:EndpointRegistered:v1"}))
    assert not wake.is_set(), "woken at once for a topic it does not follow"
    runner.notify(0, frozenset({Job.JobCreated.TOPIC, "job-ledger:EndpointRegistered:v1"}))
    assert wake.is_set()
    wake.clear()
    runner.notify(0, None)  # a write that does not say what it wrote
    assert wake.is_set()


def test_others_topics_are_passed_over_soon(ledger: JobLedger, runner, running) -> None:
    runner.pass_over_seconds = 0.05
    ledger.saved_listeners.append(runner.notify)
    running()
    # A new tenant is nothing to the job view, but its position still moves over it (its lag
    # behind the head stays small) though none of its own topics were written and its fallback
    # poll is a minute away.
    head = ledger.create_tenant("acme", actor="admin:test").position
    wait_for(lambda: runner.position() >= head, "the job view did not move over the write")


@pytest.mark.postgres
def test_notify_names_the_topics_written(postgres_url: str) -> None:
    from jobledger.bootstrap import build
    from jobledger.settings import Settings

    service = build(Settings(database_url=postgres_url))
    try:
        recorder = service.ledger.recorder
        base = postgres_url.partition("?schema=")[0]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"LISTEN {recorder.channel_name}")
            service.ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="a")
            heard = []
            for notify in conn.notifies(timeout=5):
                heard.append(written_topics(notify.payload))
                break
        assert heard == [frozenset({Job.JobCreated.TOPIC})], heard
    finally:
        service.close()


@pytest.mark.postgres
def test_the_listener_hears_the_topics_another_connection_wrote(postgres_url: str) -> None:
    from jobledger.bootstrap import build
    from jobledger.settings import Settings

    service = build(Settings(database_url=postgres_url))
    store = SqlStore(service.database)
    expected = {Tenant.TenantCreated.TOPIC, Tenant.KeyIssued.TOPIC, ApiKey.KeyCreated.TOPIC}
    heard: list[frozenset[str] | None] = []
    got = threading.Event()
    stop = threading.Event()

    def wake(topics: frozenset[str] | None) -> None:
        heard.append(topics)
        if topics == expected:
            got.set()

    listener = LogListener(store, service.ledger.recorder.channel_name, wake, stop)
    listener.start()
    try:
        time.sleep(0.5)  # LISTEN is issued
        writer = build(Settings(database_url=postgres_url), run_migrations=False)
        try:
            writer.ledger.create_tenant("acme", actor="admin:test")
        finally:
            writer.close()
        assert got.wait(10), f"the write's NOTIFY was not heard with its topics: {heard}"
        assert heard == [expected]  # and nothing else: no other schema's writes
    finally:
        stop.set()
        listener.join(timeout=5)
        store.close()
        service.close()


@pytest.mark.postgres
def test_a_listener_hears_nothing_of_another_schemas_ledger(
    postgres_database, postgres_url: str
) -> None:
    from jobledger.bootstrap import build
    from jobledger.settings import Settings
    from tests.conftest import drop_schema, fresh_postgres_url

    other_url = fresh_postgres_url(postgres_database)
    service = build(Settings(database_url=postgres_url))
    other = build(Settings(database_url=other_url))
    store = SqlStore(service.database)
    heard: list[frozenset[str] | None] = []
    got = threading.Event()
    stop = threading.Event()

    def wake(topics: frozenset[str] | None) -> None:
        heard.append(topics)
        got.set()

    channel = service.ledger.recorder.channel_name
    assert channel != other.ledger.recorder.channel_name
    listener = LogListener(store, channel, wake, stop)
    listener.start()
    try:
        time.sleep(0.5)  # LISTEN is issued
        other.ledger.create_tenant("elsewhere", actor="admin:test")
        # the other schema's write commits and is delivered (if it were) before this one's
        service.ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="a")
        assert got.wait(10), "this schema's write was not heard"
        time.sleep(0.3)  # anything else on the channel arrives meanwhile
        assert heard == [frozenset({Job.JobCreated.TOPIC})], heard
    finally:
        stop.set()
        listener.join(timeout=5)
        store.close()
        other.close()
        service.close()
        drop_schema(other_url)


class Exploding:
    """A projection of job events whose every batch fails."""

    name = "exploding"
    topics = frozenset({Job.JobCreated.TOPIC})

    def __init__(self) -> None:
        self.tries = 0

    def create_tables(self, tx) -> None:
        pass

    def drop_tables(self, tx) -> None:
        pass

    def apply(self, tx, events) -> None:
        self.tries += 1
        raise RuntimeError("this projection always fails")

    def forget(self) -> None:
        pass


def test_one_thread_follows_every_runner_of_its_group_and_one_failing_stops_none(
    ledger: JobLedger, store
) -> None:
    status = ProjectionRunner(ledger, store, JobStatusProjection(ledger), poll_seconds=SLOW)
    history = ProjectionRunner(ledger, store, JobStateHistoryProjection(), poll_seconds=SLOW)
    exploding = Exploding()
    broken = ProjectionRunner(ledger, store, exploding, poll_seconds=0.05)
    for runner in (broken, status, history):
        runner.setup()
    group = RunnerGroup([broken, status, history])
    ledger.saved_listeners.append(group.notify)
    threads_used = set()
    for runner in (status, history):
        runner.position_changed.append(lambda _: threads_used.add(threading.current_thread()))
    with group_thread(group) as thread:
        thread.start()
        head = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="a")
        wait_for(
            lambda: status.position() >= head.position and history.position() >= head.position,
            "the group did not run both views",
        )
        wait_for(lambda: exploding.tries >= 2, "the failing projection was not retried")
        assert broken.position() == 0  # nothing it failed to apply is counted as applied
        assert threads_used == {thread}  # no thread per view
    assert not thread.is_alive()


def test_a_runner_passed_over_reads_once_a_period_however_often_its_group_wakes(
    ledger: JobLedger, store
) -> None:
    status = ProjectionRunner(ledger, store, JobStatusProjection(ledger), poll_seconds=SLOW)
    outcomes = ProjectionRunner(
        ledger, store, AttemptOutcomesProjection(), poll_seconds=SLOW, pass_over_seconds=SLOW
    )
    for runner in (status, outcomes):
        runner.setup()
    first = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k0", actor="a")
    group = RunnerGroup([status, outcomes])
    ledger.saved_listeners.append(group.notify)
    with group_thread(group) as thread:
        thread.start()
        wait_for(lambda: outcomes.position() >= first.position, "no first read")
        for i in range(1, 4):
            head = ledger.create_job(
                make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a"
            )
            wait_for(lambda at=head.position: status.position() >= at, "the job view lags")
        # Each job woke the group for the job view. None of them concerns the outcomes view
        # (it counts attempts): it moves over them once its period is out, not with every
        # round (a read and a transaction each, most of a quiet delivery process's work).
        assert outcomes.position() == first.position


def test_a_runner_waiting_to_retry_is_not_read_for_others_writes_before_then(
    ledger: JobLedger, store
) -> None:
    runner = ProjectionRunner(ledger, store, AttemptOutcomesProjection(), poll_seconds=SLOW)
    group = RunnerGroup([runner])
    now = time.monotonic()
    runner._reading(now - 1.0)  # its last read: a second ago, its pass-over period is out
    runner.notify(0, frozenset({Job.JobCreated.TOPIC}))  # others' topics: passed over
    assert runner._due(now)
    # but its last batch failed and it retries in 0.5 s: the group sleeps until then (a wait
    # of 0 would spin the group's thread until the retry)
    wait = group._wait_seconds([runner], {id(runner): now + 0.5})
    assert 0.3 < wait <= 0.5


@pytest.mark.postgres
def test_a_second_group_stands_by_and_takes_over_when_the_owner_stops(postgres_url: str) -> None:
    from jobledger.bootstrap import build
    from jobledger.settings import Settings

    service = build(Settings(database_url=postgres_url))
    stores = [SqlStore(service.database), SqlStore(service.database)]
    ledger = service.ledger
    runners = [
        ProjectionRunner(ledger, s, JobStatusProjection(ledger), poll_seconds=0.05) for s in stores
    ]
    runners[0].setup()
    groups = [RunnerGroup([r]) for r in runners]
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=g.run, args=(s,), kwargs={"listen": False})
        for g, s in zip(groups, stops, strict=True)
    ]
    applied: list[list[int]] = [[], []]
    for runner, seen in zip(runners, applied, strict=True):
        runner.position_changed.append(seen.append)
    try:
        threads[0].start()
        first = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="1", actor="a")
        wait_for(lambda: runners[0].position() >= first.position, "the owner did not follow")
        threads[1].start()
        time.sleep(RunnerGroup.OWNERSHIP_CHECK_SECONDS + 0.5)  # it tried to take the lock
        for i in range(10):  # both poll every 50 ms: a second owner would win some of these
            last = ledger.create_job(
                make_new_job(), tenant_id="t", idempotency_key=f"more-{i}", actor="a"
            )
            time.sleep(0.1)
        wait_for(lambda: runners[0].position() >= last.position, "the owner did not follow")
        assert applied[1] == [], "the standby applied batches while the owner ran"
        stops[0].set()
        groups[0].notify()
        threads[0].join(timeout=10)
        second = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="2", actor="a")
        wait_for(
            lambda: bool(applied[1]) and applied[1][-1] >= second.position,
            "the standby did not take over",
        )
    finally:
        for stop, group in zip(stops, groups, strict=True):
            stop.set()
            group.notify()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=10)
        for s in stores:
            s.close()
        service.close()


class Recording:
    """A projection that keeps the events it is given."""

    def __init__(self, name: str, topics: frozenset[str]) -> None:
        self.name = name
        self.topics = topics
        self.seen: list[tuple[int, object]] = []

    def create_tables(self, tx) -> None:
        pass

    def drop_tables(self, tx) -> None:
        pass

    def apply(self, tx, events) -> None:
        self.seen.extend(events)

    def forget(self) -> None:
        pass


def test_one_read_serves_runners_of_different_topics(ledger: JobLedger, store) -> None:
    tenants = Recording("tenants", frozenset({Tenant.TenantCreated.TOPIC}))
    jobs = Recording("jobs", frozenset({Job.JobCreated.TOPIC}))
    runners = [ProjectionRunner(ledger, store, p, batch_size=3) for p in (tenants, jobs)]
    ledger.create_tenant("one", actor="admin:test")
    for i in range(3):
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a")
    ledger.create_tenant("two", actor="admin:test")
    head = ledger.recorder.max_notification_id()
    read = _read_log(ledger, 0, runners)
    # three events of either topic were read (the smallest batch): the batches end at the
    # third, and each runner has only its own topics' events up to there
    first, second = (read[id(r)] for r in runners)
    assert first.end == second.end < head
    assert [type(e).__name__ for _, e in first.events] == ["TenantCreated"]
    assert [type(e).__name__ for _, e in second.events] == ["JobCreated", "JobCreated"]
    rest = _read_log(ledger, first.end, runners)
    assert rest[id(runners[0])].end == head  # fewer than a batch left: up to the head
    assert [type(e).__name__ for _, e in rest[id(runners[0])].events] == ["TenantCreated"]
    assert [type(e).__name__ for _, e in rest[id(runners[1])].events] == ["JobCreated"]


def test_runners_at_the_same_position_share_one_read(ledger: JobLedger, store) -> None:
    views, group = listening_group(
        ledger, store, [JobStatusProjection(ledger), JobStateHistoryProjection()]
    )
    reads = []
    select = ledger.recorder.select_after

    def counted(start, limit, topics=()):
        reads.append(topics)
        return select(start, limit, topics)

    ledger.recorder.select_after = counted  # type: ignore[method-assign]
    with group_thread(group) as thread:
        thread.start()
        first = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="1", actor="a")
        wait_for(lambda: all(r.position() >= first.position for r in views), "no catch-up")
        reads.clear()
        second = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="2", actor="a")
        wait_for(lambda: all(r.position() >= second.position for r in views), "not followed")
        assert len(reads) == 1, reads  # one read for both views


class MakesEvents(Recording):
    makes_events = True  # read alone and first, as the webhook fan-out is


def test_events_the_fan_out_read_are_not_decoded_again_for_the_views(
    ledger: JobLedger, store
) -> None:
    """A follower that makes events reads alone, then the views read the same events in the
    same round: each is decoded once, and both get the same (immutable) event object."""
    topics = frozenset({Job.JobCreated.TOPIC})
    fanout, view_a, view_b = (
        MakesEvents("fanout", topics),
        Recording("a", topics),
        Recording("b", topics),
    )
    runners, group = listening_group(ledger, store, [fanout, view_a, view_b])
    decoded = []
    decode = ledger.mapper.to_domain_event

    def counted(stored):
        decoded.append(stored.originator_id)
        return decode(stored)

    ledger.mapper.to_domain_event = counted  # type: ignore[method-assign]
    with group_thread(group) as thread:
        for i in range(3):
            ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a")
        thread.start()
        head = ledger.recorder.max_notification_id()
        wait_for(lambda: all(r.position() >= head for r in runners), "the group did not finish")
    assert len(fanout.seen) == len(view_a.seen) == len(view_b.seen) == 3
    assert len(decoded) == 3, decoded  # not 6: the views' read took the fan-out's events
    assert all(
        x is y is z
        for (_, x), (_, y), (_, z) in zip(fanout.seen, view_a.seen, view_b.seen, strict=True)
    )


class Gated(Recording):
    """A `Recording` whose every batch waits, once it has started, until the test lets it
    go on: the test writes while the group is inside this view's batch (in `prepare`, before
    the view's transaction, which on SQLite would hold the ledger's writes)."""

    def __init__(self, name: str, topics: frozenset[str], order: list[str]) -> None:
        super().__init__(name, topics)
        self.order = order
        self.entered: queue.Queue[None] = queue.Queue()
        self.proceed: queue.Queue[None] = queue.Queue()
        self.holding = True

    def prepare(self, store, events) -> None:
        self.order.append(self.name)
        if self.holding:
            self.entered.put(None)
            self.proceed.get(timeout=SLOW)


class Ordered(Recording):
    def __init__(self, name: str, topics: frozenset[str], order: list[str]) -> None:
        super().__init__(name, topics)
        self.order = order

    def apply(self, tx, events) -> None:
        self.order.append(self.name)
        super().apply(tx, events)


class GatedMakesEvents(Gated):
    makes_events = True  # runs alone and ahead of the views, as the webhook fan-out does


def test_views_read_together_are_applied_in_one_transaction(ledger: JobLedger, store) -> None:
    """The views of a round share one read and one transaction: their tracking rows are moved
    by one transaction (PostgreSQL: one `xmin`), and they apply in their group's order."""
    topics = frozenset({Job.JobCreated.TOPIC})
    order: list[str] = []
    views, group = listening_group(
        ledger, store, [Ordered(name, topics, order) for name in ("one", "two", "three")]
    )
    transactions = []
    begin = store.transaction

    @contextmanager
    def counted():
        transactions.append(threading.current_thread().name)
        with begin() as tx:
            yield tx

    with group_thread(group) as thread:
        thread.start()
        first = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="1", actor="a")
        wait_for(lambda: all(r.position() >= first.position for r in views), "no catch-up")
        order.clear()  # (each read its first batch alone: it did not know its position yet)
        store.transaction = counted  # type: ignore[method-assign]
        created = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="2", actor="a")
        wait_for(lambda: all(r.position() >= created.position for r in views), "not followed")
    assert order == ["one", "two", "three"]
    assert transactions.count(thread.name) == 1, transactions
    if store.is_postgres:
        with begin() as tx:
            moved = tx.execute(
                f"SELECT count(DISTINCT xmin::text) FROM {TRACKING_TABLE} WHERE name = ANY(?)",
                ([v.name for v in views],),
            ).fetchone()
        assert moved[0] == 1


def test_a_view_that_fails_in_the_shared_transaction_holds_back_only_itself(
    ledger: JobLedger, store
) -> None:
    """When the shared transaction fails, each view of it is applied on its own: the others
    move on, and only the failing one waits to retry."""
    topics = frozenset({Job.JobCreated.TOPIC})
    order: list[str] = []

    class Failing(Ordered):
        def apply(self, tx, events) -> None:
            raise RuntimeError("this view is broken")

    first, broken, last = (
        Ordered("first", topics, order),
        Failing("broken", topics, order),
        Ordered("last", topics, order),
    )
    runners, group = listening_group(ledger, store, [first, broken, last])
    for runner in runners:  # (a runner that knows its position reads with the others)
        runner.catch_up()
    with group_thread(group) as thread:
        thread.start()
        created = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="1", actor="a")
        wait_for(
            lambda: (
                runners[0].position() >= created.position
                and runners[2].position() >= created.position
            ),
            "the views beside the broken one stopped",
        )
    assert runners[1].position() < created.position
    # the shared attempt (rolled back when `broken` raised), then each view alone
    assert order[:3] == ["first", "first", "last"], order


def test_a_runner_ahead_woken_during_its_batch_goes_again_and_the_rest_give_way_once(
    ledger: JobLedger, store
) -> None:
    """Group order [front, middle, last]: `front` runs alone (it makes events, as the fan-out
    does); the views behind it are read and applied together. A job written while the group
    is inside `front`'s batch wakes `front` again: it goes again before the views, which give
    way once; written again inside its next batch, it does not make them give way twice."""
    topics = frozenset({Job.JobCreated.TOPIC})
    order: list[str] = []
    front = GatedMakesEvents("front", topics, order)
    middle, last = Ordered("middle", topics, order), Ordered("last", topics, order)
    runners, group = listening_group(ledger, store, [front, middle, last])
    with group_thread(group, release=lambda: front.proceed.put(None)) as thread:
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="a", actor="a")
        thread.start()
        for key in ("b", "c"):
            front.entered.get(timeout=SLOW)  # the group is inside front's batch
            ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=key, actor="a")
            front.proceed.put(None)
        front.entered.get(timeout=SLOW)
        front.holding = False
        front.proceed.put(None)
        head = ledger.recorder.max_notification_id()
        wait_for(lambda: all(r.position() >= head for r in runners), "the group did not finish")
    # round 1: front (b is written) | front again, the views gave way (c is written) | the
    # views, which gave way once already | front for c
    assert order[:5] == ["front", "front", "middle", "last", "front"], order
    assert len(last.seen) == len(middle.seen) == len(front.seen) == 3  # each job once


def test_a_batch_read_before_giving_way_is_not_read_again_and_the_runner_reads_on(
    ledger: JobLedger, store
) -> None:
    """[front, middle, last] stand at the same position; `front` makes events and reads
    alone, `middle` and `last` share a read. A job written right after that read wakes
    `front`, so `last` gives way: `middle` applies its batch, and `last` applies the one read
    for it in the next round (the log is not read from there again), then reads on to the
    job written meanwhile, with no further write or poll to wake it."""
    topics = frozenset({Job.JobCreated.TOPIC})
    order: list[str] = []
    front = MakesEvents("front", topics | {"front-only"})
    middle, last = Ordered("middle", topics, order), Ordered("last", topics, order)
    runners = [ProjectionRunner(ledger, store, p, poll_seconds=SLOW) for p in (front, middle, last)]
    ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="0", actor="a")
    for runner in runners:
        runner.setup()
        runner.catch_up()
    start = ledger.recorder.max_notification_id()
    order.clear()
    views_read_from: list[int] = []
    select = ledger.recorder.select_after

    def counted(after, limit, topics=()):
        found = select(after, limit, topics)
        if "front-only" not in topics:
            views_read_from.append(after)
            if len(views_read_from) == 1:  # right after the views' first read
                ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="b", actor="a")
        return found

    ledger.recorder.select_after = counted  # type: ignore[method-assign]
    group = RunnerGroup(runners)
    ledger.saved_listeners.append(group.notify)
    with group_thread(group) as thread:
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="a", actor="a")
        thread.start()
        wait_for(lambda: len(views_read_from) >= 1, "the views did not read")
        head = ledger.recorder.max_notification_id()
        wait_for(lambda: all(r.position() >= head for r in runners), "a runner stopped short")
    assert order[:4] == ["middle", "middle", "last", "last"], order
    assert views_read_from.count(start) == 1, views_read_from  # one read from there
    assert len(last.seen) == len(middle.seen) == len(front.seen) == 3
