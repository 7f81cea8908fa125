"""Claiming due webhook deliveries from the `delivery_queue` view without double-sending.

What this module is for: a sender asks for up to N deliveries that are due (`state = 'pending'
AND next_attempt_at <= now`, oldest due first, served by the view's (state, next_attempt_at)
index) and gets them *leased* to it: one row per delivery in `delivery_leases` (owner, the
attempt it is for, `leased_until`), written in the same transaction as the select. A delivery
with a live lease is not handed to anyone else; on PostgreSQL the select also takes
`FOR UPDATE SKIP LOCKED`, so concurrent senders (other processes, other machines) take disjoint
rows in one instant, and the lease upsert only overwrites an *expired* lease, which closes the
window between two senders' snapshots. SQLite (one machine) serialises claims with its write
lock.

A lease is released (deleted) when its attempt is recorded. A sender that crashes leaves its
leases behind; they expire at `leased_until` and the deliveries are sent again with the same
`webhook-id` (at least once). The view lags the ledger, so a row may still say `pending` for an
attempt already recorded; the lease covers most of that window and the ledger's attempt-number
check (`WrongAttempt`) is the final guard. `webhook.test` deliveries are left to the request
that made them (`Sender.deliver_now`) for `TEST_DELIVERY_GRACE`.

This module only finds and leases rows: it never sends, never writes to the ledger, and never
imports the web layer or the projections package (it reads their tables with plain SQL).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.delivery import ORIGIN_TEST
from storage.config import migration_lock
from storage.sql import SqlStore, Tx, parse_utc_text, utc_text

LEASES_TABLE = "delivery_leases"
QUEUE_TABLE = "delivery_queue"
# Leases that expired this long ago belong to deliveries finished or re-leased since: purge.
STALE_LEASE_AGE = timedelta(hours=1)
# A `webhook.test` delivery is sent by the request that made it (`Sender.deliver_now`); the
# claim loop leaves it alone this long, and sends it only if that request died meanwhile.
TEST_DELIVERY_GRACE = timedelta(seconds=30)
RELEASE_CHUNK = 500  # lease ids per DELETE (SQLite allows 32766 parameters, PostgreSQL 65535)


@dataclass(frozen=True)
class Due:
    """A due row of the delivery-queue view, as the view says it (it may lag the ledger)."""

    delivery_id: str
    endpoint_id: str
    attempts: int  # attempts made so far
    version: int  # the delivery's version in this row: tells a lagging row from a fresh one


@dataclass(frozen=True)
class Lease:
    """A delivery leased to `owner` for attempt `attempt` until `leased_until`."""

    delivery_id: str
    endpoint_id: str
    attempt: int
    version: int
    owner: str
    leased_until: datetime

    @property
    def delivery_uuid(self) -> UUID:
        return UUID(self.delivery_id)


def create_tables(tx: Tx) -> None:
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {LEASES_TABLE} ("
        "delivery_id TEXT PRIMARY KEY, owner TEXT NOT NULL, attempt INTEGER NOT NULL, "
        "leased_until TEXT NOT NULL)"
    )


def prepare_tables(store: SqlStore) -> None:
    """Create the lease table idempotently, under the migration lock (PostgreSQL races on
    concurrent `CREATE TABLE IF NOT EXISTS` from several starting processes)."""
    with migration_lock(store.database), store.transaction() as tx:
        create_tables(tx)


class DeliveryClaims:
    def __init__(
        self,
        store: SqlStore,
        *,
        owner: str,
        queue_table: str = QUEUE_TABLE,
        leases_table: str = LEASES_TABLE,
    ) -> None:
        self.store = store
        self.owner = owner
        self.queue = queue_table
        self.leases = leases_table
        # A lease is written when there is none, or over an expired one (parameter: now).
        self._take_over_expired = (
            "ON CONFLICT (delivery_id) DO UPDATE SET owner = excluded.owner, "
            "attempt = excluded.attempt, leased_until = excluded.leased_until "
            f"WHERE {leases_table}.leased_until <= ?"
        )

    def claim(
        self,
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
        exclude_endpoints: Collection[str] = (),
        accept: Callable[[Due], bool] | None = None,
        scan: int | None = None,
    ) -> list[Lease]:
        """Lease up to `limit` due deliveries, oldest due first; returns the leases written.

        `exclude_endpoints`: endpoints at their in-flight limit (left out in SQL, so a backlog
        for one endpoint cannot fill the window). `accept` is asked about each row in order
        (within the claiming transaction; it must not do I/O) and may refuse it (an endpoint
        whose remaining room this batch has used up, a row this sender already acted on);
        `scan` rows (default `limit`) are read to find `limit` acceptable ones.
        """
        if limit <= 0:
            return []
        with self.store.transaction() as tx:
            return self._claim(
                tx, now, limit, lease_seconds, exclude_endpoints, accept, scan or limit
            )

    def claim_batch(
        self,
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
        exclude_endpoints: Collection[str] = (),
        accept: Callable[[Due], bool] | None = None,
        scan: int | None = None,
        release: Collection[str] = (),
        offered: Sequence[Due] = (),
    ) -> tuple[list[Lease], datetime | None]:
        """The sender's pass, in ONE transaction: drop this owner's leases on `release` (the
        deliveries whose attempts it finished since its last pass), `claim` as above, then
        fill the room left with the `offered` deliveries (known to be due, which the view
        may not show yet; each asked of `accept` like a row, and written only where no
        live lease is: older due work goes first), and, when fewer than `limit` were leased,
        say when the earliest pending delivery without a live lease is due (`next_due`;
        None: nothing pending, or the batch is full)."""
        with self.store.transaction() as tx:
            self._release(tx, release)
            leases = (
                self._claim(
                    tx,
                    now,
                    limit,
                    lease_seconds,
                    exclude_endpoints,
                    accept,
                    scan or limit,
                    offered,
                )
                if limit > 0
                else []
            )
            due = self._next_due(tx, now) if len(leases) < limit else None
        return leases, due

    def _claim(
        self,
        tx: Tx,
        now: datetime,
        limit: int,
        lease_seconds: float,
        exclude_endpoints: Collection[str],
        accept: Callable[[Due], bool] | None,
        scan: int,
        offered: Sequence[Due] = (),
    ) -> list[Lease]:
        stamp = utc_text(now)
        until = now + timedelta(seconds=lease_seconds)
        params: list[Any] = [stamp, ORIGIN_TEST, utc_text(now - TEST_DELIVERY_GRACE), stamp]
        where = (
            "q.state = 'pending' AND q.next_attempt_at <= ? "
            "AND NOT (q.origin = ? AND q.created_at > ?) AND NOT EXISTS ("
            f"SELECT 1 FROM {self.leases} l WHERE l.delivery_id = q.delivery_id "
            "AND l.leased_until > ?)"
        )
        excluded = sorted(exclude_endpoints)
        if excluded:
            where += f" AND q.endpoint_id NOT IN ({', '.join('?' for _ in excluded)})"
            params.extend(excluded)
        sql = (
            f"SELECT q.delivery_id, q.endpoint_id, q.attempts, q.version FROM {self.queue} q "
            f"WHERE {where} ORDER BY q.next_attempt_at LIMIT ?"
        )
        params.append(max(scan, limit))
        if self.store.is_postgres:
            sql += " FOR UPDATE OF q SKIP LOCKED"
        found = tx.execute(sql, params).fetchall()
        rows = (Due(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in found)
        wanted: list[Lease] = []
        chosen: set[str] = set()
        for due in itertools.chain(rows, offered):  # the view's due rows first
            if len(wanted) >= limit:
                break
            if due.delivery_id in chosen or (accept is not None and not accept(due)):
                continue
            chosen.add(due.delivery_id)
            wanted.append(
                Lease(
                    due.delivery_id,
                    due.endpoint_id,
                    due.attempts + 1,
                    due.version,
                    self.owner,
                    until,
                )
            )
        return self._write_leases(tx, wanted, stamp)

    def _write_leases(self, tx: Tx, leases: list[Lease], now_text: str | None) -> list[Lease]:
        """`_write_lease` for each; returns those written. On PostgreSQL in one statement: a
        round trip per lease was half of a claim pass's time, and the passes, one after the
        other, were what held the throughput bench at about 1,300 deliveries/s."""
        if not leases:
            return []
        if not tx.is_postgres:
            return [lease for lease in leases if self._write_lease(tx, lease, now_text)]
        written = {
            str(row[0])
            for row in tx.execute(
                f"INSERT INTO {self.leases} (delivery_id, owner, attempt, leased_until) "
                "SELECT * FROM unnest(?::text[], ?::text[], ?::integer[], ?::text[]) "
                f"{self._take_over_expired} RETURNING delivery_id",
                (
                    [lease.delivery_id for lease in leases],
                    [lease.owner for lease in leases],
                    [lease.attempt for lease in leases],
                    [utc_text(lease.leased_until) for lease in leases],
                    now_text,
                ),
            ).fetchall()
        }
        return [lease for lease in leases if lease.delivery_id in written]

    def claim_one(
        self, delivery_id: str, endpoint_id: str, attempt: int, now: datetime, lease_seconds: float
    ) -> Lease | None:
        """Lease one delivery by id whatever the view says (`deliver_now`); None when another
        sender holds a live lease on it."""
        lease = Lease(
            delivery_id,
            endpoint_id,
            attempt,
            0,
            self.owner,
            now + timedelta(seconds=lease_seconds),
        )
        with self.store.transaction() as tx:
            return lease if self._write_lease(tx, lease, utc_text(now)) else None

    def _write_lease(self, tx: Tx, lease: Lease, now_text: str | None) -> bool:
        """Insert the lease, or take over an expired one; False when a live lease exists."""
        written = tx.execute(
            f"INSERT INTO {self.leases} (delivery_id, owner, attempt, leased_until) "
            f"VALUES (?, ?, ?, ?) {self._take_over_expired}",
            (lease.delivery_id, lease.owner, lease.attempt, utc_text(lease.leased_until), now_text),
        )
        return written.rowcount == 1

    def extend(self, lease: Lease, until: datetime) -> None:
        """Hold the lease longer (an endpoint whose timeout is above the default)."""
        with self.store.transaction() as tx:
            tx.execute(
                f"UPDATE {self.leases} SET leased_until = ? WHERE delivery_id = ? AND owner = ?",
                (utc_text(until), lease.delivery_id, self.owner),
            )

    def release(self, *delivery_ids: str) -> None:
        """Drop this owner's leases on the deliveries (their attempts are recorded or
        abandoned)."""
        with self.store.transaction() as tx:
            self._release(tx, delivery_ids)

    def _release(self, tx: Tx, delivery_ids: Collection[str]) -> None:
        ids = sorted(set(delivery_ids))
        for start in range(0, len(ids), RELEASE_CHUNK):
            chunk = ids[start : start + RELEASE_CHUNK]
            tx.execute(
                f"DELETE FROM {self.leases} WHERE owner = ? "
                f"AND delivery_id IN ({', '.join('?' for _ in chunk)})",
                (self.owner, *chunk),
            )

    def purge(self, now: datetime) -> int:
        """Delete leases that expired long ago (left by crashed senders); returns how many."""
        with self.store.transaction() as tx:
            gone = tx.execute(
                f"DELETE FROM {self.leases} WHERE leased_until < ?",
                (utc_text(now - STALE_LEASE_AGE),),
            )
        return max(gone.rowcount, 0)

    def next_due(self, now: datetime) -> datetime | None:
        """When the earliest pending delivery without a live lease is due (None: nothing
        pending). The caller only uses it to decide how long it may sleep."""
        with self.store.transaction() as tx:
            return self._next_due(tx, now)

    def _next_due(self, tx: Tx, now: datetime) -> datetime | None:
        row = tx.execute(
            f"SELECT q.next_attempt_at FROM {self.queue} q WHERE q.state = 'pending' "
            "AND q.next_attempt_at IS NOT NULL AND NOT EXISTS ("
            f"SELECT 1 FROM {self.leases} l WHERE l.delivery_id = q.delivery_id "
            "AND l.leased_until > ?) ORDER BY q.next_attempt_at LIMIT 1",
            (utc_text(now),),
        ).fetchone()
        return parse_utc_text(str(row[0])) if row else None
