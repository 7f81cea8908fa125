"""The event recorders: the library's, plus the topics of each write in PostgreSQL's NOTIFY,
a cheaper insert on PostgreSQL (one statement calling a function that `migrate` makes, with
plain arrays in binary), and one read of many aggregates' events (`select_events_of`).

eventsourcing's recorder sends a bare `NOTIFY <channel>` with every write, so a listener only
learns that something was written. Every projection runner in every process then woke and
read the log, although most writes concern few of them (a webhook attempt is nothing to the
job views): at 100 jobs/s that was most of a delivery process's CPU. Here the payload names
the topics written (space-separated, sorted), and `written_topics` reads it back; an empty or
oversized payload means "anything" (the bare NOTIFY of an older process included).

The NOTIFY is sent inside the writing transaction, after the table lock, as the library's is:
PostgreSQL delivers it at commit, and not at all on rollback.

Its channel is the ledger's schema's (`notify_channel`). The library names it after the events
table alone, and channels belong to the database: every ledger sharing one database in its own
schema (staging beside production, or a test run's) woke every other one's runners, which then
read their own log for nothing.

`select_events_of(ids)` reads the events of many aggregates in one statement, where the
library reads one aggregate per call: the sender loads every delivery of a claim pass with it
(one round trip and one thread hop per pass instead of one per delivery).

`select_after(start, limit, topics)` reads the log's head and the next notifications up to it
in one statement, where the library's `max_notification_id` and `select_notifications` take
two: every read of every projection runner makes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg.errors import UndefinedFunction
from psycopg.sql import SQL, Identifier

# PostgreSQL refuses payloads of 8000 bytes or more; past this, the payload says "anything".
MAX_PAYLOAD = 7000
NOTIFY_STATEMENT = "SELECT pg_notify(%s, %s)"

# The write of a batch of events in one statement: made by `migrate`, called by
# `TopicNotifyingRecorder.insert_events`. The EXCLUSIVE lock makes the commit order the order
# of the notification ids, as the library's own insert does (its `POSTGRES_ENABLE_DB_FUNCTIONS`
# function skips the lock, and a live reader then missed events for good: ../shared
# EVENTSOURCING.md); the lock and the NOTIFY last until the statement's transaction commits.
INSERT_FUNCTION_VERSION = "v1"
INSERT_FUNCTION_ARGUMENTS = "text, text, text, uuid[], int8[], text[], bytea[]"
INSERT_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}(
    lock_wait text, channel text, payload text,
    ids uuid[], versions int8[], topics text[], states bytea[]
) RETURNS SETOF int8 LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_wait, true);
    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;
    PERFORM pg_notify(channel, payload);
    RETURN QUERY
        INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id;
END
$$
"""


def notify_channel(events_table: str, schema: str) -> str:
    """The NOTIFY channel of the ledger in `schema`: the library's name (the events table's)
    in `public`, so processes of an earlier release there still hear and are heard; elsewhere
    the schema's name appended (a digest of it past PostgreSQL's 63-byte names)."""
    if schema == "public":
        return events_table
    channel = f"{events_table}_{schema}"
    if len(channel) > 63:
        channel = f"{events_table}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
    return channel


def topics_payload(topics: Iterable[str]) -> str:
    text = " ".join(sorted(set(topics)))
    return "" if len(text.encode()) > MAX_PAYLOAD else text


def written_topics(payload: str) -> frozenset[str] | None:
    """The topics a NOTIFY payload names; None: it does not say (wake for anything)."""
    return frozenset(payload.split(" ")) if payload else None


class TopicNotifyingRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel_name = notify_channel(self.channel_name, self.datastore.schema)
        # The library sends one array of a composite type, which psycopg dumps field by field
        # in Python (about 22 us per event at 100 a save); four arrays of plain types in
        # binary are dumped in C (about 5 us; 21 against 42 us at 10 a save). Same rows, same
        # order, same RETURNING.
        self.insert_columns_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::int8[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        self.select_events_of_statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        self.insert_function = Identifier(
            self.datastore.schema, f"{self.events_table_name}_insert_{INSERT_FUNCTION_VERSION}"
        )
        self.insert_function_statement = SQL(
            "SELECT * FROM {function}(%s, %s, %s, %b::uuid[], %b::int8[], %b::text[], %b::bytea[])"
            " AS inserted(notification_id)"
        ).format(function=self.insert_function)
        self._has_insert_function: bool | None = None  # looked up at the first write
        # The head and the rows after `start` up to it, in one snapshot: the outer row is there
        # even when no notification is (the head alone, or NULL in an empty log).
        after = (
            "SELECT h.head, e.notification_id, e.originator_id, e.originator_version, e.topic, "
            "e.state FROM (SELECT max(notification_id) AS head FROM {schema}.{table}) AS h "
            "LEFT JOIN LATERAL (SELECT notification_id, originator_id, originator_version, topic, "
            "state FROM {schema}.{table} WHERE notification_id > %s AND notification_id <= h.head"
            "{topics} ORDER BY notification_id LIMIT %s) AS e ON true"
        )
        self.select_after_statements = {
            filtered: SQL(
                after.replace("{topics}", " AND topic = ANY(%s)" if filtered else "")
            ).format(
                schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name)
            )
            for filtered in (True, False)
        }
        self.select_changed_after_statement = SQL(
            "SELECT h.head, e.notification_id, e.originator_id FROM (SELECT max(notification_id) "
            "AS head FROM {schema}.{table}) AS h LEFT JOIN LATERAL (SELECT notification_id, "
            "originator_id FROM {schema}.{table} WHERE notification_id > %s AND notification_id "
            "<= h.head AND topic = ANY(%s) ORDER BY notification_id LIMIT %s) AS e ON true"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(INSERT_FUNCTION).format(
                    function=self.insert_function,
                    schema=Identifier(self.datastore.schema),
                    table=Identifier(self.events_table_name),
                ),
                prepare=False,
            )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """One statement, in its own transaction: `INSERT_FUNCTION` takes the table lock,
        sends the NOTIFY and inserts, as the library's pipelined transaction does. The library's
        way (a pipeline of BEGIN, SET LOCAL, LOCK, NOTIFY, INSERT and COMMIT) cost 585 us of
        the writer's CPU per 16-event write, against 265 us (1.07 ms and 0.65 ms of wall time):
        psycopg's pipeline and transaction bookkeeping run in Python."""
        if (
            not stored_events
            or kwargs.get("tracking") is not None
            or self.datastore.originator_id_type != "uuid"
            or not self._insert_function_exists()
        ):
            ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return ids
        try:
            return self._insert_through_function(stored_events)
        except ProgrammingError as error:
            if not isinstance(error.__cause__, UndefinedFunction):
                raise
            # dropped since (a restore of an earlier release's dump): nothing was written
            self._has_insert_function = False
            return self.insert_events(stored_events, **kwargs)

    def _insert_through_function(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self.insert_function_statement,
                (
                    f"{self.datastore.lock_timeout}s",
                    self.channel_name,
                    topics_payload(e.topic for e in stored_events),
                    [e.originator_id for e in stored_events],
                    [e.originator_version for e in stored_events],
                    [e.topic for e in stored_events],
                    [e.state for e in stored_events],
                ),
                prepare=True,
            )
            return [row["notification_id"] for row in curs.fetchall()]

    def _insert_function_exists(self) -> bool:
        """Whether `migrate` made the insert function (a schema an earlier release migrated,
        before this process's own start-up migrated it, has none: the library's way then)."""
        if self._has_insert_function is None:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                name = f"{self.insert_function.as_string(conn)}({INSERT_FUNCTION_ARGUMENTS})"
                curs.execute("SELECT to_regprocedure(%s) IS NOT NULL AS found", (name,))
                row = curs.fetchone()
                self._has_insert_function = bool(row and row["found"])
        return self._has_insert_function

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        curs.execute(
            NOTIFY_STATEMENT,
            (self.channel_name, topics_payload(e.topic for e in stored_events)),
            prepare=True,
        )
        if self.datastore.originator_id_type != "uuid":  # (ours are; the library's path else)
            # The aggregate recorder's insert: the application recorder's would NOTIFY again.
            PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)
            return
        curs.execute(
            self.insert_columns_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_after(
        self, start: int, limit: int, topics: Sequence[str] = ()
    ) -> tuple[int, list[Notification]]:
        """(the log's head, up to `limit` notifications after `start` up to that head, of
        `topics` when any are given) from one statement, so one snapshot too."""
        params = (start, list(topics), limit) if topics else (start, limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_after_statements[bool(topics)], params, prepare=True)
            rows = curs.fetchall()
        head = rows[0]["head"] if rows else None
        return int(head or 0), [
            Notification(
                id=row["notification_id"],
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
            if row["notification_id"] is not None
        ]

    def select_changed_after(
        self, start: int, limit: int, topics: Sequence[str]
    ) -> tuple[int, list[tuple[int, UUID]]]:
        """`select_after` without the events themselves: (the log's head, the (notification id,
        aggregate id) of up to `limit` notifications of `topics` after `start`)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self.select_changed_after_statement, (start, list(topics), limit), prepare=True
            )
            rows = curs.fetchall()
        head = rows[0]["head"] if rows else None
        return int(head or 0), [
            (int(row["notification_id"]), row["originator_id"])
            for row in rows
            if row["notification_id"] is not None
        ]

    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of these aggregates, by aggregate then version."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_events_of_statement, (list(originator_ids),), prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]


class SQLiteRecorder(SQLiteApplicationRecorder):
    def select_after(
        self, start: int, limit: int, topics: Sequence[str] = ()
    ) -> tuple[int, list[Notification]]:
        """`TopicNotifyingRecorder.select_after`, from two statements (SQLite's are calls
        into the process, not round trips; one writer, so no id at or below the head can
        still appear)."""
        head = self.max_notification_id() or 0
        if head <= start:
            return head, []
        notes = self.select_notifications(
            start, limit, stop=head, topics=list(topics), inclusive_of_start=False
        )
        return head, list(notes)

    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every event of these aggregates, by aggregate then version."""
        found: list[StoredEvent] = []
        ids = [i.hex for i in originator_ids]
        with self.datastore.transaction(commit=False) as c:
            # SQLite caps the parameters of one statement (32766 since 3.32; 999 before)
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                c.execute(
                    "SELECT originator_id, originator_version, topic, state "
                    f"FROM {self.events_table_name} WHERE originator_id IN "
                    f"({', '.join('?' for _ in chunk)}) ORDER BY originator_id, originator_version",
                    chunk,
                )
                found.extend(
                    StoredEvent(
                        originator_id=self.convert_originator_id(row["originator_id"]),
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=row["state"],
                    )
                    for row in c.fetchall()
                )
        return found
