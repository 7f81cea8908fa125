"""Audit integrity: the per-aggregate hash chain and the log-wide running digest (SPEC section 9).

Pure functions only. Every chained event stores `prev_hash` (the `hash` of the previous event of
the same aggregate, or `GENESIS` for the first) and `hash`, the SHA-256 of the event's canonical
body: its topic, aggregate id, version, time and every other field except `hash` itself, as JSON
with sorted keys and no whitespace. Changing, reordering or removing a stored event therefore
breaks the chain at that event or the one after it.

The log digest folds every chained event, in notification-log order, into one running SHA-256:
    digest_n = sha256(digest_{n-1} | position_n | hash_n)
Checkpoints of (position, count, digest) are stored as events; re-computing the digest and
comparing it at each checkpoint also detects a log that was truncated at its end.

This module must never read a clock, a database or the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

GENESIS = "0" * 64
DIGEST_START = "0" * 64
HASH_FIELD = "hash"


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in an event; all event times are UTC-aware")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


# One encoder for every call: `json.dumps` with these arguments builds a new one each time,
# a sixth of the call for the bodies events carry. (orjson writes the same bytes for bodies
# without a float in a third of the time, but this package imports only the standard library
# and eventsourcing: STYLE.md.)
_CANONICAL = json.JSONEncoder(
    default=_jsonable, sort_keys=True, separators=(",", ":"), ensure_ascii=False
)


def canonical_json(body: Mapping[str, Any]) -> bytes:
    return _CANONICAL.encode(body).encode("utf-8")


def event_body(topic: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed body of an event: its topic plus all fields except the hash itself."""
    body = {k: v for k, v in fields.items() if k != HASH_FIELD}
    body["topic"] = topic
    return body


def hash_event(topic: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(event_body(topic, fields))).hexdigest()


def event_fields(event: Any) -> dict[str, Any]:
    """All dataclass fields of a decoded domain event, by name."""
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def fold_digest(digest: str, position: int, event_hash: str) -> str:
    return hashlib.sha256(f"{digest}|{position}|{event_hash}".encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Break:
    """The first place where the stored log stops verifying."""

    position: int | None
    aggregate_id: str | None
    version: int | None
    reason: str

    def describe(self) -> str:
        where = []
        if self.position is not None:
            where.append(f"log position {self.position}")
        if self.aggregate_id is not None:
            where.append(f"job {self.aggregate_id}")
        if self.version is not None:
            where.append(f"version {self.version}")
        return f"{', '.join(where) or 'log'}: {self.reason}"


@dataclass(frozen=True)
class Checkpoint:
    position: int
    count: int
    digest: str
    created_at: datetime | None = None


@dataclass
class AuditReport:
    events: int = 0
    checkpoints: int = 0
    first_break: Break | None = None
    digest: str = DIGEST_START
    position: int = 0

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON data (`ledger verify --json`, `GET /v1/audit/verify`)."""
        brk = self.first_break
        return {
            "ok": self.ok,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "digest": self.digest,
            "position": self.position,
            "first_break": None
            if brk is None
            else {
                "position": brk.position,
                "job_id": brk.aggregate_id,
                "version": brk.version,
                "reason": brk.reason,
            },
        }

    def summary(self) -> str:
        if self.first_break is None:
            return (
                f"OK: all {self.events} events verify "
                f"({self.checkpoints} checkpoints matched; "
                f"digest {self.digest} at position {self.position})."
            )
        return f"BROKEN at {self.first_break.describe()}"


class ChainVerifier:
    """Feeds on the log in order; remembers the first break. Holds one (version, hash) per chain."""

    def __init__(self, checkpoints: list[Checkpoint]) -> None:
        self.report = AuditReport()
        self._tips: dict[str, tuple[int, str]] = {}
        self._pending = sorted(checkpoints, key=lambda c: c.position)

    def _break(self, position: int | None, agg: str | None, version: int | None, why: str) -> None:
        if self.report.first_break is None:
            self.report.first_break = Break(position, agg, version, why)

    def undecodable(self, position: int, aggregate_id: str, version: int, error: str) -> None:
        self._check_checkpoints_before(position)
        self._break(position, aggregate_id, version, f"stored event cannot be decoded ({error})")

    def feed(self, position: int, topic: str, event: Any) -> None:
        self._check_checkpoints_before(position)
        if self.report.first_break is not None:
            return
        agg = str(event.originator_id)
        version = int(event.originator_version)
        stored_hash = getattr(event, HASH_FIELD, None)
        if stored_hash is None:
            self._break(position, agg, version, f"event {topic} carries no hash")
            return
        tip_version, tip_hash = self._tips.get(agg, (0, GENESIS))
        if version != tip_version + 1:
            why = (
                f"expected version {tip_version + 1} next, found {version}"
                " (an event was removed or the log was reordered)"
            )
            self._break(position, agg, version, why)
            return
        if event.prev_hash != tip_hash:
            self._break(
                position, agg, version, "prev_hash does not match the previous event's hash"
            )
            return
        if hash_event(topic, event_fields(event)) != stored_hash:
            self._break(position, agg, version, "content does not match its hash (altered)")
            return
        self._tips[agg] = (version, stored_hash)
        self.report.events += 1
        self.report.position = position
        self.report.digest = fold_digest(self.report.digest, position, stored_hash)

    def _check_checkpoints_before(self, position: int) -> None:
        # A checkpoint at P is settled once the stream passes P.
        while self._pending and self._pending[0].position < position:
            self._settle(self._pending.pop(0))

    def _settle(self, checkpoint: Checkpoint) -> None:
        if self.report.first_break is not None:
            return
        r = self.report
        if r.position != checkpoint.position or r.events != checkpoint.count:
            self._break(
                checkpoint.position,
                None,
                None,
                f"checkpoint covers {checkpoint.count} events up to position "
                f"{checkpoint.position}, "
                f"but the log has {r.events} events up to position {r.position} "
                "(events were removed or the log was truncated)",
            )
        elif r.digest != checkpoint.digest:
            self._break(checkpoint.position, None, None, "log digest differs from the checkpoint's")
        else:
            r.checkpoints += 1

    def finish(self) -> AuditReport:
        while self._pending:
            self._settle(self._pending.pop(0))
        return self.report
