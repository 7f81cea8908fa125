"""The delivery projector (fan-out), the delivery queue and endpoint health, on both stores.

The expected deliveries are computed independently from the raw log (which endpoints of the
job's tenant existed, were active and subscribed at each event's position), then compared with
what the projector made. Replays make no second delivery; the views equal a rebuild.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import orjson
import pytest

from jobledger.bootstrap import build
from jobledger.settings import Settings
from ledger.delivery import Delivery, DeliveryState, delivery_id_for
from ledger.endpoint import Endpoint, EndpointSettings
from ledger.errors import InvalidTransition, WrongAttempt
from ledger.webhooks import JOB_EVENT_WEBHOOK_TYPES, AttemptOutcome
from projections.delivery_fanout import DeliveryFanout
from projections.delivery_queue import DeliveryQueueProjection, delivery_counts, list_deliveries
from projections.endpoint_health import EndpointHealthProjection, health_report, health_row
from projections.runner import ProjectionRunner, rebuild
from tests.conftest import make_new_job
from tests.integration.test_job_status_projection import random_workload, rows


def make_runners(ledger, store, *, fanout: int, queue: int, health: int):
    made = {
        "fanout": ProjectionRunner(ledger, store, DeliveryFanout(ledger), batch_size=fanout),
        "queue": ProjectionRunner(ledger, store, DeliveryQueueProjection(ledger), batch_size=queue),
        "health": ProjectionRunner(ledger, store, EndpointHealthProjection(), batch_size=health),
    }
    for runner in made.values():
        runner.setup()
    return made


@pytest.fixture
def runners(ledger, store):
    return make_runners(ledger, store, fanout=9, queue=13, health=5)


def catch_up(runners) -> None:
    for name in ("fanout", "queue", "health"):
        runners[name].catch_up()


def register(ledger, tenant: str, *types: str, url: str = "https://hooks.example.com/x"):
    settings = EndpointSettings(url=url, event_types=types)
    return ledger.register_endpoint(tenant, settings, actor="key:test").endpoint


def all_deliveries(ledger) -> dict[UUID, Delivery]:
    found = {}
    for note in ledger.recorder.select_notifications(0, 1_000_000):
        if note.topic == Delivery.DeliveryCreated.TOPIC:
            found[note.originator_id] = ledger.get_delivery(note.originator_id, tenant_id=None)
    return found


def expected_deliveries(ledger) -> set[tuple[str, str, str, str]]:
    """(endpoint, source event id, webhook type, state) from the raw log, independently."""
    endpoints: dict[str, dict] = {}
    job_tenant: dict[str, str] = {}
    expected = set()
    for note in ledger.recorder.select_notifications(0, 1_000_000):
        event = ledger.mapper.to_domain_event(note)
        name = type(event).__name__
        if isinstance(event, Endpoint.EndpointRegistered):
            endpoints[str(event.originator_id)] = {
                "tenant": event.tenant_id,
                "types": set(event.event_types),
                "state": "active",
            }
        elif isinstance(event, Endpoint.EndpointDisabled):
            endpoints[str(event.originator_id)]["state"] = "disabled"
            tenant = endpoints[str(event.originator_id)]["tenant"]
            for eid, e in endpoints.items():
                if (
                    eid != str(event.originator_id)
                    and e["tenant"] == tenant
                    and e["types"] & {"*", "endpoint.disabled"}
                    and e["state"] != "deleted"
                ):
                    state = "held" if e["state"] == "disabled" else "pending"
                    expected.add((eid, str(event.event_id), "endpoint.disabled", state))
        elif isinstance(event, Endpoint.EndpointEnabled):
            endpoints[str(event.originator_id)]["state"] = "active"
        elif isinstance(event, Endpoint.EndpointDeleted):
            endpoints[str(event.originator_id)]["state"] = "deleted"
        elif name in JOB_EVENT_WEBHOOK_TYPES or name == "JobPaced":
            if name == "JobCreated":
                job_tenant[str(event.originator_id)] = event.tenant_id
            if name == "JobPaced":
                continue
            webhook_type = JOB_EVENT_WEBHOOK_TYPES[name]
            tenant = job_tenant[str(event.originator_id)]
            for eid, e in endpoints.items():
                if (
                    e["tenant"] == tenant
                    and e["state"] != "deleted"
                    and e["types"] & {"*", webhook_type}
                ):
                    state = "held" if e["state"] == "disabled" else "pending"
                    expected.add((eid, str(event.event_id), webhook_type, state))
    return expected


def made_deliveries(ledger) -> set[tuple[str, str, str, str]]:
    return {
        (d.endpoint_id, str(d.source_event_id), d.event_type, str(d.state))
        for d in all_deliveries(ledger).values()
    }


def test_fanout_makes_exactly_the_deliveries_the_log_calls_for(ledger, runners, clock) -> None:
    everything = register(ledger, "t1", "*")
    outcomes = register(ledger, "t1", "job.published", "job.failed", "endpoint.disabled")
    other_tenant = register(ledger, "t2", "*")
    random_workload(ledger, clock, seed=21, jobs=12)
    catch_up(runners)
    late = register(ledger, "t1", "job.canceled")
    ledger.disable_endpoint(everything.id, tenant_id="t1", reason="maintenance", actor="key:t")
    random_workload(ledger, clock, seed=22, jobs=8)
    ledger.delete_endpoint(other_tenant.id, tenant_id="t2", actor="key:t")
    random_workload(ledger, clock, seed=23, jobs=5)
    catch_up(runners)

    expected = expected_deliveries(ledger)
    made = made_deliveries(ledger)
    assert made == expected
    endpoints = {e for e, *_ in made}
    assert endpoints == {str(x.id) for x in (everything, outcomes, other_tenant, late)}
    # the disabled endpoint's deliveries after it was disabled are held, none dropped
    assert any(e == str(everything.id) and s == "held" for e, _, _, s in made)
    # endpoint.disabled went to the tenant's other subscribed endpoint only
    disabled_notes = [m for m in made if m[2] == "endpoint.disabled"]
    assert [m[0] for m in disabled_notes] == [str(outcomes.id)]
    # endpoints and deliveries are hash-chained like jobs
    report = ledger.verify()
    assert report.ok, report.summary()
    assert report.events > len(made)


def test_fanout_in_large_batches_makes_the_same_deliveries(ledger, store, clock) -> None:
    """Batches of hundreds of events: the fan-out's and the queue's upserts of 16 rows or
    more take the bulk path (one statement over arrays on PostgreSQL)."""
    register(ledger, "t1", "*")
    register(ledger, "t2", "job.published", "job.failed")
    random_workload(ledger, clock, seed=31, jobs=90)
    big = make_runners(ledger, store, fanout=500, queue=500, health=500)
    catch_up(big)
    random_workload(ledger, clock, seed=32, jobs=70)
    catch_up(big)
    made = made_deliveries(ledger)
    assert len(made) > 200
    assert made == expected_deliveries(ledger)
    with store.transaction() as tx:
        (tracked,) = tx.execute("SELECT count(*) FROM delivery_fanout_jobs").fetchone()
    assert tracked == 160


def test_payload_is_the_documented_body(ledger, runners, clock, new_job) -> None:
    endpoint = register(ledger, "t1", "*")
    created = ledger.create_job(new_job(), tenant_id="t1", idempotency_key="k1", actor="key:x")
    job_id = created.job.id
    ledger.schedule(job_id)
    clock.advance(1)
    attempt = ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=30)
    ledger.record_success(
        job_id,
        attempt=attempt.job.attempts,
        external_ref="pin-42",
        receipt={},
        actor="worker:w",
    )
    catch_up(runners)
    events = ledger.job_events(job_id)
    published = events[-1]
    delivery = ledger.get_delivery(delivery_id_for(endpoint.id, published.event_id), tenant_id="t1")
    body = orjson.loads(delivery.payload)
    assert body == {
        "type": "job.published",
        "timestamp": published.timestamp.isoformat().replace("+00:00", "Z"),
        "data": {
            "job_id": str(job_id),
            "tenant_id": "t1",
            "idempotency_key": "k1",
            "account_id": created.job.account_id,
            "board_id": created.job.board_id,
            "state": "published",
            "previous_state": "running",
            "attempt": 1,
            "external_ref": "pin-42",
            "error": None,
            "occurred_at": published.timestamp.isoformat().replace("+00:00", "Z"),
            "version": published.originator_version,
        },
    }
    assert [orjson.loads(d.payload)["type"] for d in all_deliveries(ledger).values()] == [
        "job.queued",
        "job.scheduled",
        "job.running",
        "job.published",
    ]


def test_a_replay_makes_no_second_delivery(ledger, store, runners, clock) -> None:
    register(ledger, "t1", "*")
    register(ledger, "t2", "job.published")
    random_workload(ledger, clock, seed=5, jobs=10)
    catch_up(runners)
    before = all_deliveries(ledger)
    assert before
    head = ledger.recorder.max_notification_id()

    # the same projector from scratch (lost tables and position: the worst replay)
    replay = ProjectionRunner(ledger, store, DeliveryFanout(ledger, name="fanout_replay"))
    replay.setup()
    replay.catch_up()
    assert all_deliveries(ledger).keys() == before.keys()
    assert ledger.recorder.max_notification_id() == head  # not one event written


def test_queue_and_health_follow_attempts_and_equal_a_rebuild(ledger, store, runners, clock):
    endpoint = register(ledger, "t1", "*")
    random_workload(ledger, clock, seed=8, jobs=6)
    catch_up(runners)
    deliveries = sorted(all_deliveries(ledger).values(), key=lambda d: d.source_position)
    first, second, third = deliveries[:3]

    receipt = {"attempted_at": "2026-01-01T00:00:00Z", "status_code": 500, "latency_ms": 12.5}
    clock.advance(10)
    ledger.record_delivery_attempt(
        first.id,
        attempt=1,
        succeeded=False,
        receipt={**receipt, "error_class": "http_status", "error": "HTTP 500"},
        next_attempt_at=clock.now() + timedelta(seconds=5),
        actor="delivery:test",
    )
    # another sender recorded attempt 1 first; also when this one passes the delivery as it
    # loaded it before attempt 1 was recorded (that save is refused, and it is read again)
    for loaded in (None, first):
        with pytest.raises(WrongAttempt):
            ledger.record_delivery_attempt(
                first.id,
                attempt=1,
                succeeded=True,
                receipt=receipt,
                next_attempt_at=None,
                actor="delivery:other",
                loaded=loaded,
            )
    assert len(ledger.delivery_attempts(first.id)) == 1
    ledger.record_delivery_attempt(
        second.id,
        attempt=1,
        succeeded=False,
        receipt={**receipt, "error_class": "timeout", "error": "timed out"},
        next_attempt_at=None,
        actor="delivery:test",
    )
    catch_up(runners)
    with store.transaction() as tx:
        row = health_row(tx, str(endpoint.id))
        dead = list_deliveries(tx, endpoint_id=str(endpoint.id), states=["dead_lettered"])
        due = list_deliveries(tx, endpoint_id=str(endpoint.id), states=["pending"], limit=1000)
    assert row is not None
    assert (row["consecutive_failures"], row["consecutive_dead_letters"]) == (2, 1)
    assert row["failing_since"] is not None
    assert [orjson.loads(d)["id"] for d in dead.docs] == [str(second.id)]
    assert str(second.id) not in [orjson.loads(d)["id"] for d in due.docs]
    assert str(first.id) in [orjson.loads(d)["id"] for d in due.docs]

    ledger.retry_delivery(second.id, tenant_id="t1", actor="key:t")
    ledger.record_delivery_attempt(
        third.id,
        attempt=1,
        succeeded=True,
        receipt={**receipt, "status_code": 204, "latency_ms": 3.0},
        next_attempt_at=None,
        actor="delivery:test",
    )
    catch_up(runners)
    with store.transaction() as tx:
        report = health_report(tx, str(endpoint.id), now=clock.now())
    assert report is not None
    assert report["consecutive_failures"] == 0
    assert report["failing_since"] is None
    assert report["attempts"] == 3 and report["succeeded"] == 1
    assert report["latency_ms"] == {"p50": 12.5, "p95": 12.5}
    assert report["state"] == "degraded"
    assert ledger.get_delivery(second.id, tenant_id=None).state == DeliveryState.PENDING

    # disabled endpoints refuse retries; the health view says disabled
    ledger.disable_endpoint(endpoint.id, tenant_id="t1", reason="paused", actor="key:t")
    with pytest.raises(InvalidTransition):
        ledger.retry_delivery(second.id, tenant_id="t1", actor="key:t")
    catch_up(runners)
    with store.transaction() as tx:
        assert health_report(tx, str(endpoint.id), now=clock.now())["state"] == "disabled"

    def counted(tx) -> list[tuple[str, str, int]]:
        grouped = tx.execute(
            "SELECT endpoint_id, state, COUNT(*) FROM delivery_queue GROUP BY endpoint_id, state"
        ).fetchall()
        return sorted((str(e), str(s), int(n)) for e, s, n in grouped)

    with store.transaction() as tx:  # the running counts are the rows' counts
        expected = counted(tx)
        assert {s for _, s, _ in expected} >= {"pending", "succeeded"}
        assert delivery_counts(tx) == expected
        # a view made before the counts existed counts its rows once, when it is set up
        tx.execute("DROP TABLE delivery_queue_counts")
        DeliveryQueueProjection(ledger).create_tables(tx)
        assert delivery_counts(tx) == expected

    for name, live, shadow in (
        ("queue", DeliveryQueueProjection(ledger), DeliveryQueueProjection(ledger, table="dq_rb")),
        ("health", EndpointHealthProjection(), EndpointHealthProjection(table="eh_rb")),
    ):
        before = {t: rows(store, t) for t in getattr(live, "tables", (live.table,))}
        rebuild(ledger, store, live, shadow)
        after = {t: rows(store, t) for t in getattr(live, "tables", (live.table,))}
        assert after == before, name
        assert all(after.values())


def test_attempts_recorded_together_each_answered_alone(ledger, store, runners, clock):
    register(ledger, "t1", "*")
    random_workload(ledger, clock, seed=9, jobs=4)
    catch_up(runners)
    deliveries = sorted(all_deliveries(ledger).values(), key=lambda d: d.source_position)
    first, second, third = (ledger.get_delivery(d.id, tenant_id=None) for d in deliveries[:3])
    receipt = {"attempted_at": "2026-01-01T00:00:00Z", "status_code": 200, "latency_ms": 3.0}

    def outcome(delivery: Delivery, attempt: int = 1) -> AttemptOutcome:
        return AttemptOutcome(delivery, attempt, True, receipt, None, None, "delivery:test")

    head = ledger.recorder.max_notification_id()
    done, wrong, also = ledger.record_delivery_attempts(
        [outcome(first), outcome(second, attempt=2), outcome(third)]
    )
    assert isinstance(wrong, WrongAttempt)  # told to that attempt alone
    assert done.aggregate.state == also.aggregate.state == DeliveryState.SUCCEEDED
    # the two were written in one transaction, nothing for the refused one
    assert sorted([*done.positions, *also.positions]) == [head + 1, head + 2]
    assert [len(ledger.delivery_attempts(d.id)) for d in (first, second, third)] == [1, 0, 1]

    # a delivery that changed after it was loaded: the store refuses the round, and each
    # attempt is decided again on a fresh read (nothing recorded twice)
    stale = ledger.get_delivery(second.id, tenant_id=None)
    fourth = ledger.get_delivery(deliveries[3].id, tenant_id=None)
    ledger.record_delivery_attempt(
        second.id, attempt=1, succeeded=True, receipt=receipt, next_attempt_at=None, actor="x"
    )
    late, fine = ledger.record_delivery_attempts([outcome(stale), outcome(fourth)])
    assert isinstance(late, InvalidTransition)  # as the single command says: it succeeded
    assert fine.aggregate.state == DeliveryState.SUCCEEDED and fine.positions
    assert [len(ledger.delivery_attempts(d.id)) for d in (second, fourth)] == [1, 1]


def test_endpoints_read_together_are_those_get_endpoint_finds_in_the_order_asked(ledger) -> None:
    mine = [register(ledger, "t1", "*") for _ in range(3)]
    theirs = register(ledger, "t2", "*")
    ledger.delete_endpoint(mine[1].id, tenant_id="t1", actor="key:test")
    job = ledger.create_job(make_new_job(), tenant_id="t1", idempotency_key="k", actor="k").job
    asked = [mine[2].id, theirs.id, mine[1].id, UUID(int=7), job.id, mine[0].id]
    found = ledger.get_endpoints(asked, tenant_id="t1")
    assert [e.id for e in found] == [mine[2].id, mine[0].id]
    assert [e.id for e in ledger.get_endpoints(asked, tenant_id=None)] == [
        mine[2].id,
        theirs.id,
        mine[0].id,
    ]
    assert found[0].describe() == ledger.get_endpoint(mine[2].id, tenant_id="t1").describe()


def test_an_endpoint_recovery_retries_its_dead_letters_together(
    ledger, database_url, runners, clock
) -> None:
    endpoint, other_endpoint = register(ledger, "t1", "*"), register(ledger, "t1", "*")
    for i in range(5):
        ledger.create_job(make_new_job(), tenant_id="t1", idempotency_key=f"r{i}", actor="k")
    catch_up(runners)
    mine = sorted(
        (d for d in all_deliveries(ledger).values() if d.endpoint_id == str(endpoint.id)),
        key=lambda d: d.source_position,
    )
    theirs = next(d for d in all_deliveries(ledger).values() if d.endpoint_id != str(endpoint.id))
    dead, raced, sent = mine[:3], mine[3], mine[4]
    for delivery in [*dead, raced, theirs]:
        ledger.record_delivery_attempt(
            delivery.id, attempt=1, succeeded=False, receipt={}, next_attempt_at=None, actor="s"
        )
    ledger.record_delivery_attempt(
        sent.id, attempt=1, succeeded=True, receipt={}, next_attempt_at=None, actor="s"
    )
    asked = [UUID(int=5), sent.id, theirs.id, *(d.id for d in reversed(dead))]
    states = ("dead_lettered", "held")

    retried = ledger.retry_deliveries(
        asked, endpoint_id=endpoint.id, states=states, actor="key:k", reason="recover"
    )
    assert [c.aggregate.id for c in retried] == [d.id for d in reversed(dead)]
    assert all(len(c.positions) == 1 for c in retried)
    assert {ledger.get_delivery(d.id, tenant_id=None).state for d in dead} == {
        DeliveryState.PENDING
    }
    assert ledger.get_delivery(sent.id, tenant_id=None).state == DeliveryState.SUCCEEDED
    assert ledger.get_delivery(theirs.id, tenant_id=None).state == DeliveryState.DEAD_LETTERED

    # retried by someone else after the batch read it: the batch is refused and each is
    # retried alone, on a fresh read (the raced one was retried once, by the other)
    for delivery in dead:
        ledger.record_delivery_attempt(
            delivery.id, attempt=2, succeeded=False, receipt={}, next_attempt_at=None, actor="s"
        )
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)
    load_many = ledger._load_many

    def load_then_race(ids, kind):
        found = load_many(ids, kind)
        other.ledger.retry_delivery(raced.id, tenant_id=None, actor="key:other")
        return found

    ledger._load_many = load_then_race
    try:
        retried = ledger.retry_deliveries(
            [raced.id, *(d.id for d in dead)],
            endpoint_id=endpoint.id,
            states=states,
            actor="key:k",
            reason="recover",
        )
    finally:
        del ledger._load_many
        other.close()
    assert [c.aggregate.id for c in retried] == [d.id for d in dead]
    retries = [type(e).__name__ for e in ledger.events.get(raced.id) if "Retry" in type(e).__name__]
    assert retries == ["DeliveryRetryRequested"]

    ledger.disable_endpoint(other_endpoint.id, tenant_id="t1", reason="paused", actor="key:t")
    with pytest.raises(InvalidTransition):
        ledger.retry_deliveries(
            [theirs.id], endpoint_id=other_endpoint.id, states=states, actor="k", reason="r"
        )
    assert ledger.get_delivery(theirs.id, tenant_id=None).state == DeliveryState.DEAD_LETTERED
