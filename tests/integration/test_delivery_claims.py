"""Leasing due deliveries from the delivery-queue view (`delivery.claims`) on both stores:
oldest due first, no delivery leased twice while its lease lives (also with senders claiming
at once from several threads), expired leases taken over, exclusions honoured."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from delivery.claims import TEST_DELIVERY_GRACE, DeliveryClaims, Due, Lease, prepare_tables
from projections.delivery_queue import COLUMNS, DeliveryQueueProjection
from storage.config import parse_database_url
from storage.sql import SqlStore, utc_text

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url):
    database = parse_database_url(database_url)
    if database.is_postgres:
        with database.connect() as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"')
    s = SqlStore(database, max_connections=8)
    with s.transaction() as tx:
        DeliveryQueueProjection(None).create_tables(tx)  # type: ignore[arg-type]
    prepare_tables(s)
    yield s
    s.close()


def add(store, *, endpoint="e1", due=NOW, state="pending", origin="event", created=NOW, n=1):
    ids = []
    rows = []
    for _ in range(n):
        delivery_id = str(uuid4())
        ids.append(delivery_id)
        values = {
            "delivery_id": delivery_id,
            "tenant_id": "t",
            "endpoint_id": endpoint,
            "event_type": "job.queued",
            "origin": origin,
            "job_id": None,
            "state": state,
            "attempts": 0,
            "next_attempt_at": utc_text(due),
            "created_at": utc_text(created),
            "updated_at": utc_text(created),
            "last_attempt_at": None,
            "last_status_code": None,
            "version": 1,
            "position": 1,
            "created_position": 1,
            "doc": "{}",
        }
        rows.append(tuple(values[c] for c in COLUMNS))
    with store.transaction() as tx:
        tx.executemany(
            f"INSERT INTO delivery_queue ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in COLUMNS)})",
            rows,
        )
    return ids


def test_oldest_due_first_only_due_pending_rows_and_exclusions(store):
    late = add(store, due=NOW - timedelta(seconds=1))
    early = add(store, due=NOW - timedelta(seconds=5))
    add(store, due=NOW + timedelta(seconds=5))  # not due
    add(store, state="succeeded", due=NOW - timedelta(seconds=9))
    other = add(store, endpoint="e2", due=NOW - timedelta(seconds=9))
    add(store, origin="test", due=NOW - timedelta(seconds=9), created=NOW)  # its request sends it
    old_test = add(store, origin="test", created=NOW - TEST_DELIVERY_GRACE - timedelta(seconds=1))
    claims = DeliveryClaims(store, owner="a")
    leases = claims.claim(NOW, limit=10, lease_seconds=30, exclude_endpoints={"e2"})
    assert [lease.delivery_id for lease in leases] == early + late + old_test
    assert all(lease.attempt == 1 and lease.owner == "a" for lease in leases)
    assert claims.claim(NOW, limit=10, lease_seconds=30, exclude_endpoints={"e2"}) == []
    others = DeliveryClaims(store, owner="b").claim(NOW, limit=10, lease_seconds=30)
    assert [lease.delivery_id for lease in others] == other


def test_a_live_lease_blocks_an_expired_one_is_taken_over_and_release_frees(store):
    (delivery_id,) = add(store)
    a, b = DeliveryClaims(store, owner="a"), DeliveryClaims(store, owner="b")
    assert [lease.delivery_id for lease in a.claim(NOW, limit=5, lease_seconds=10)] == [delivery_id]
    assert b.claim(NOW + timedelta(seconds=9), limit=5, lease_seconds=10) == []
    assert b.claim_one(delivery_id, "e1", 1, NOW + timedelta(seconds=9), 10) is None
    assert a.next_due(NOW) is None  # its only row is leased
    taken = b.claim(NOW + timedelta(seconds=10), limit=5, lease_seconds=10)
    assert [lease.owner for lease in taken] == ["b"]
    a.release(delivery_id)  # not a's lease any more: nothing happens
    assert a.claim(NOW + timedelta(seconds=11), limit=5, lease_seconds=10) == []
    b.release(delivery_id)
    assert a.next_due(NOW + timedelta(seconds=11)) == NOW
    assert len(a.claim(NOW + timedelta(seconds=11), limit=5, lease_seconds=10)) == 1
    assert a.purge(NOW + timedelta(hours=2)) == 1


def test_a_pass_writes_its_leases_together_and_skips_those_live_elsewhere(store):
    """The leases of one pass are written in one statement on PostgreSQL (one by one on
    SQLite) with the same rule as one lease: new ones and expired ones are written, a live
    lease of another sender is left as it is and its delivery is not handed out."""
    live, expired, new = add(store, n=3)
    b = DeliveryClaims(store, owner="b")
    assert b.claim_one(live, "e1", 1, NOW, 60) is not None
    assert b.claim_one(expired, "e1", 1, NOW - timedelta(seconds=61), 60) is not None
    a = DeliveryClaims(store, owner="a")
    until = NOW + timedelta(seconds=30)
    wanted = [Lease(i, "e1", 2, 1, "a", until) for i in (live, expired, new)]
    with store.transaction() as tx:
        written = a._write_leases(tx, wanted, utc_text(NOW))
        assert a._write_leases(tx, [], utc_text(NOW)) == []
    assert [lease.delivery_id for lease in written] == [expired, new]
    with store.transaction() as tx:
        rows = tx.execute(
            "SELECT delivery_id, owner, attempt, leased_until FROM delivery_leases"
        ).fetchall()
    assert sorted(tuple(r) for r in rows) == sorted(
        [
            (live, "b", 1, utc_text(NOW + timedelta(seconds=60))),
            (expired, "a", 2, utc_text(until)),
            (new, "a", 2, utc_text(until)),
        ]
    )


def test_accept_refuses_rows_and_scan_looks_past_them(store):
    first = add(store, endpoint="busy", due=NOW - timedelta(seconds=9), n=3)
    wanted = add(store, endpoint="free", due=NOW - timedelta(seconds=1), n=2)
    claims = DeliveryClaims(store, owner="a")
    leases = claims.claim(
        NOW, limit=2, lease_seconds=30, accept=lambda due: due.endpoint_id == "free", scan=10
    )
    assert [lease.delivery_id for lease in leases] == wanted
    assert {lease.delivery_id for lease in claims.claim(NOW, limit=5, lease_seconds=30)} == set(
        first
    )


def test_concurrent_claimers_never_lease_one_delivery_twice(store):
    ids = add(store, due=NOW - timedelta(seconds=1), n=120)
    leased: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        claims = DeliveryClaims(store, owner=name)
        try:
            for _ in range(60):  # bounded
                got = claims.claim(NOW, limit=7, lease_seconds=60)
                with lock:
                    leased.update(lease.delivery_id for lease in got)
                if not got:
                    return
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(f"s{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert set(leased) == set(ids)
    assert set(leased.values()) == {1}


def test_a_claim_batch_releases_finished_leases_and_says_when_the_next_is_due(store):
    first = add(store, n=3)
    later = NOW + timedelta(seconds=7)
    add(store, due=later)
    a = DeliveryClaims(store, owner="a")
    b = DeliveryClaims(store, owner="b")
    leases, next_due = a.claim_batch(NOW, limit=5, lease_seconds=60)
    assert sorted(lease.delivery_id for lease in leases) == sorted(first)
    assert next_due == later  # fewer than asked for: when the next one is due
    taken = b.claim(NOW, limit=5, lease_seconds=60)
    assert taken == []  # all three held by a
    # a finished two: another owner's release does nothing, a's own pass drops them
    b.release(*first[:2])
    assert b.claim(NOW, limit=5, lease_seconds=60) == []
    # released and leased again in the same transaction: nobody else can slip in between
    leases, next_due = a.claim_batch(NOW, limit=5, lease_seconds=60, release=first[:2])
    assert sorted(lease.delivery_id for lease in leases) == sorted(first[:2])
    assert next_due == later
    assert b.claim(NOW, limit=5, lease_seconds=60) == []
    a.release(*first)
    retaken, next_due = b.claim_batch(NOW, limit=3, lease_seconds=60)
    assert sorted(lease.delivery_id for lease in retaken) == sorted(first)
    assert next_due is None  # the batch is full: not asked


def test_offered_leases_fill_the_room_the_due_rows_leave(store):
    """Deliveries offered by id (just made, perhaps not in the view yet) are leased in the
    pass's transaction after the view's due rows (older due work goes first), asked of
    `accept` like a row, under the same rule as any lease."""
    queued = add(store, due=NOW - timedelta(seconds=5), n=2)
    held_elsewhere, fresh_a, fresh_b, fresh_c, refused = (str(uuid4()) for _ in range(5))
    b = DeliveryClaims(store, owner="b")
    assert b.claim_one(held_elsewhere, "e1", 1, NOW, 60) is not None
    a = DeliveryClaims(store, owner="a")

    def offer(*ids: str, endpoint: str = "e1") -> list[Due]:
        return [Due(i, endpoint, 0, 1) for i in ids]

    leases, next_due = a.claim_batch(
        NOW, limit=4, lease_seconds=30, offered=offer(held_elsewhere, fresh_a, fresh_b)
    )
    assert [lease.delivery_id for lease in leases] == [*queued, fresh_a]
    assert next_due is None  # nothing pending in the view without a live lease
    # a live lease of this owner is not written again either
    leases, _ = a.claim_batch(NOW, limit=5, lease_seconds=30, offered=offer(fresh_a, fresh_b))
    assert [lease.delivery_id for lease in leases] == [fresh_b]
    # with room for one, a due row of the view goes before a fresh delivery
    (older,) = add(store, due=NOW - timedelta(seconds=1))
    leases, _ = a.claim_batch(NOW, limit=1, lease_seconds=30, offered=offer(fresh_c))
    assert [lease.delivery_id for lease in leases] == [older]
    leases, _ = a.claim_batch(
        NOW,
        limit=5,
        lease_seconds=30,
        offered=offer(refused, endpoint="full") + offer(fresh_c),
        accept=lambda due: due.endpoint_id != "full",
    )
    assert [lease.delivery_id for lease in leases] == [fresh_c]
    # one both due in the view and offered (the view caught up first) is leased once
    (shown,) = add(store, due=NOW - timedelta(seconds=1))
    leases, _ = a.claim_batch(NOW, limit=5, lease_seconds=30, offered=offer(shown))
    assert [lease.delivery_id for lease in leases] == [shown]
