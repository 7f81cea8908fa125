"""Audit integrity (SPEC section 9) on both stores: rows are edited with SQL behind the ledger's
back, and `verify` (and `ledger verify`) must name the first broken event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest

from ledger.application import JobLedger
from ledger.job import AttemptFailure
from storage.config import parse_database_url
from tests.conftest import make_new_job

ROOT = Path(__file__).resolve().parents[2]


class RawLog:
    """Direct SQL on the stored events, the way an intruder (or a bad migration) would."""

    def __init__(self, url: str) -> None:
        db = parse_database_url(url)
        self.pg = db.is_postgres
        self.conn = db.connect()
        self.table = f'"{db.schema}".ledger_events' if self.pg else "stored_events"
        self.pos = "notification_id" if self.pg else "rowid"
        self.p = "%s" if self.pg else "?"

    def _id(self, job_id: UUID) -> object:
        return job_id if self.pg else job_id.hex

    def run(self, sql: str, *params: object) -> list:
        cur = self.conn.execute(sql.replace("?", self.p), params)
        return cur.fetchall() if cur.description else []

    def state(self, job_id: UUID, version: int) -> bytes:
        (row,) = self.run(
            f"SELECT state FROM {self.table} WHERE originator_id = ? AND originator_version = ?",
            self._id(job_id),
            version,
        )
        return bytes(row[0])

    def set_state(self, job_id: UUID, version: int, state: bytes) -> None:
        self.run(
            f"UPDATE {self.table} SET state = ? WHERE originator_id = ? AND originator_version = ?",
            state,
            self._id(job_id),
            version,
        )

    def delete(self, job_id: UUID, version: int) -> None:
        self.run(
            f"DELETE FROM {self.table} WHERE originator_id = ? AND originator_version = ?",
            self._id(job_id),
            version,
        )

    def swap_positions(self, job_id: UUID, v1: int, v2: int) -> None:
        where = "WHERE originator_id = ? AND originator_version = ?"
        (p1,) = self.run(f"SELECT {self.pos} FROM {self.table} {where}", self._id(job_id), v1)[0]
        (p2,) = self.run(f"SELECT {self.pos} FROM {self.table} {where}", self._id(job_id), v2)[0]
        self.run(f"UPDATE {self.table} SET {self.pos} = ? {where}", -1, self._id(job_id), v1)
        self.run(f"UPDATE {self.table} SET {self.pos} = ? {where}", p1, self._id(job_id), v2)
        self.run(f"UPDATE {self.table} SET {self.pos} = ? {where}", p2, self._id(job_id), v1)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def history(ledger: JobLedger) -> dict[str, UUID]:
    """Three jobs with a few events each, then a checkpoint."""
    ids = {}
    for name in ("one", "two", "three"):
        ids[name] = ledger.create_job(
            make_new_job(), tenant_id="t", idempotency_key=name, actor="key:k"
        ).job.id
    ledger.schedule(ids["one"])
    attempt = ledger.start_attempt(ids["one"], worker_id="worker:w", lease_seconds=30).job.attempts
    ledger.record_failure(
        ids["one"],
        attempt=attempt,
        failure=AttemptFailure("rate_limited", "429", retryable=True),
        actor="worker:w",
    )
    ledger.cancel(ids["two"], actor="key:k", reason="duplicate")
    ledger.schedule(ids["three"])
    assert ledger.write_checkpoint() is not None
    return ids


@pytest.fixture
def raw(database_url: str):
    log = RawLog(database_url)
    yield log
    log.close()


def test_an_untouched_log_verifies(ledger, history) -> None:
    report = ledger.verify()
    assert report.ok, report.summary()
    assert (report.events, report.checkpoints) == (8, 1)
    assert "all 8 events verify" in report.summary()
    assert ledger.write_checkpoint() is None  # nothing new since


def test_altered_event_is_named(ledger, history, raw) -> None:
    state = raw.state(history["two"], 1)
    assert b"A cat" in state
    raw.set_state(history["two"], 1, state.replace(b"A cat", b"A dog"))
    report = ledger.verify()
    assert not report.ok
    brk = report.first_break
    assert (brk.aggregate_id, brk.version) == (str(history["two"]), 1)
    assert "altered" in brk.reason


def test_altered_receipt_in_a_later_event_is_named(ledger, history, raw) -> None:
    state = raw.state(history["one"], 4)
    raw.set_state(history["one"], 4, state.replace(b'"rate_limited"', b'"server_error"'))
    brk = ledger.verify().first_break
    assert (brk.aggregate_id, brk.version) == (str(history["one"]), 4)


def test_undecodable_event_is_named(ledger, history, raw) -> None:
    raw.set_state(history["three"], 2, b"{not json")
    brk = ledger.verify().first_break
    assert (brk.aggregate_id, brk.version) == (history["three"].hex, 2) or (
        brk.aggregate_id,
        brk.version,
    ) == (str(history["three"]), 2)
    assert "decoded" in brk.reason


def test_reordered_events_are_named(ledger, history, raw) -> None:
    raw.swap_positions(history["one"], 2, 3)
    brk = ledger.verify().first_break
    assert brk.aggregate_id == str(history["one"])
    assert brk.version == 3
    assert "expected version 2" in brk.reason


def test_swapped_contents_are_named(ledger, history, raw) -> None:
    job = history["one"]
    s2, s3 = raw.state(job, 2), raw.state(job, 3)
    raw.set_state(job, 2, s3)
    raw.set_state(job, 3, s2)
    brk = ledger.verify().first_break
    assert (brk.aggregate_id, brk.version) == (str(job), 2)


def test_removed_event_is_named(ledger, history, raw) -> None:
    raw.delete(history["one"], 2)
    brk = ledger.verify().first_break
    assert (brk.aggregate_id, brk.version) == (str(history["one"]), 3)
    assert "removed" in brk.reason


def test_truncated_log_is_caught_by_the_checkpoint(ledger, history, raw) -> None:
    # The last event of a job leaves no gap in its chain; only the log digest can tell.
    raw.delete(history["three"], 2)
    report = ledger.verify()
    assert not report.ok
    assert "checkpoint" in report.first_break.reason
    assert "truncated" in report.first_break.reason


def test_events_after_the_checkpoint_extend_it(ledger, history) -> None:
    ledger.cancel(history["three"], actor="key:k")
    checkpoint = ledger.write_checkpoint()
    assert checkpoint is not None and checkpoint.count == 9
    report = ledger.verify()
    assert report.ok and report.checkpoints == 2 and report.digest == checkpoint.digest


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "jobledger.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_ledger_verify_command(database_url, ledger, history, raw) -> None:
    ok = run_cli(database_url, "verify")
    assert ok.returncode == 0, ok.stderr
    assert "OK: all 8 events verify" in ok.stdout
    state = raw.state(history["one"], 3)
    raw.set_state(history["one"], 3, state.replace(b"worker:w", b"worker:x"))
    broken = run_cli(database_url, "verify")
    assert broken.returncode == 1
    assert str(history["one"]) in broken.stdout and "version 3" in broken.stdout
    as_json = run_cli(database_url, "verify", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["first_break"]["job_id"] == str(history["one"])
    assert report["first_break"]["version"] == 3
