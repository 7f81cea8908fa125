"""The PostgreSQL event recorder, with the topics of each write in its NOTIFY.

eventsourcing's recorder sends a bare `NOTIFY <channel>` with every write, so a listener only
learns that something was written. Every projection runner in every process then woke and
read the log, although most writes concern few of them (a webhook attempt is nothing to the
job views): at 100 jobs/s that was most of a delivery process's CPU. Here the payload names
the topics written (space-separated, sorted), and `written_topics` reads it back; an empty or
oversized payload means "anything" (the bare NOTIFY of an older process included).

The NOTIFY is sent inside the writing transaction, after the table lock, as the library's is:
PostgreSQL delivers it at commit, and not at all on rollback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder

# PostgreSQL refuses payloads of 8000 bytes or more; past this, the payload says "anything".
MAX_PAYLOAD = 7000
NOTIFY_STATEMENT = "SELECT pg_notify(%s, %s)"


def topics_payload(topics: Iterable[str]) -> str:
    text = " ".join(sorted(set(topics)))
    return "" if len(text.encode()) > MAX_PAYLOAD else text


def written_topics(payload: str) -> frozenset[str] | None:
    """The topics a NOTIFY payload names; None: it does not say (wake for anything)."""
    return frozenset(payload.split(" ")) if payload else None


class TopicNotifyingRecorder(PostgresApplicationRecorder):
    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        curs.execute(
            NOTIFY_STATEMENT,
            (self.channel_name, topics_payload(e.topic for e in stored_events)),
            prepare=True,
        )
        # The aggregate recorder's insert: the application recorder's would NOTIFY again.
        PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)
