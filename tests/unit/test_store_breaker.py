"""The store breaker's states (closed, open, half-open) with a scripted probe and a manual clock,
and which psycopg errors count as an outage."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import OperationalError as PersistenceOperationalError
from psycopg_pool import PoolTimeout

from jobledger.settings import Settings, SettingsError
from ledger.errors import StoreUnavailable
from storage.breaker import StoreBreaker, is_outage, is_unreachable


class FakeStore:
    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    def connect(self) -> Any:
        self.probes += 1
        if not self.up:
            raise psycopg.OperationalError("connection refused")
        return self

    def execute(self, sql: str) -> None:
        assert sql == "SELECT 1"

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[StoreBreaker, FakeStore, Clock]:
    store, clock = FakeStore(), Clock()
    return StoreBreaker(store.connect, probe_interval=1.0, clock=clock), store, clock


def test_a_failure_with_the_store_up_keeps_the_breaker_closed() -> None:
    breaker, store, _ = make()
    breaker.admit()
    assert breaker.suspect() is True
    assert not breaker.is_open
    assert store.probes == 1
    breaker.admit()  # no probe on the way in while closed
    assert store.probes == 1


def test_open_fails_fast_then_half_open_probes_and_recovers() -> None:
    breaker, store, clock = make()
    recovered: list[bool] = []
    breaker.on_recovered.append(lambda: recovered.append(True))
    store.up = False
    assert breaker.suspect() is False
    assert breaker.is_open and breaker.opened_count == 1
    for _ in range(5):  # within the interval: refused at once, no probe
        with pytest.raises(StoreUnavailable):
            breaker.admit()
    assert store.probes == 1

    clock.now += 1.0  # half-open: the next call probes; still down
    with pytest.raises(StoreUnavailable):
        breaker.admit()
    assert store.probes == 2 and breaker.is_open
    with pytest.raises(StoreUnavailable):
        breaker.admit()
    assert store.probes == 2

    store.up = True
    clock.now += 1.0
    breaker.admit()  # the probe succeeds: closed, and this call goes through
    assert not breaker.is_open
    assert recovered == [True]
    assert breaker.opened_count == 1


def test_a_recent_probe_answers_every_suspicion() -> None:
    breaker, store, clock = make()
    assert breaker.suspect() is True
    store.up = False
    assert breaker.suspect() is True  # within 0.5 s the answer is reused
    assert store.probes == 1
    clock.now += 0.6
    assert breaker.suspect() is False
    assert store.probes == 2 and breaker.is_open
    clock.now += 0.6
    assert breaker.suspect() is False  # open: only the half-open call probes
    assert store.probes == 2


def test_a_store_too_slow_to_answer_counts_as_down() -> None:
    release = threading.Event()
    probes: list[int] = []

    def hanging_connect() -> Any:
        probes.append(1)
        release.wait(10)
        return FakeStore()

    breaker = StoreBreaker(hanging_connect, probe_interval=0.01, acquire_wait=0.05)
    assert breaker.suspect() is False  # no answer within acquire_wait: open, at once
    assert breaker.is_open
    time.sleep(0.02)
    with pytest.raises(StoreUnavailable):  # the probe is still under way: no second one
        breaker.admit()
    assert len(probes) == 1
    release.set()  # the store answers after all: the breaker closes by itself
    deadline = time.monotonic() + 5
    while breaker.is_open:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    breaker.admit()


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown(), True),  # 57P01: pg_terminate_backend, shutdown
        (psycopg.errors.CannotConnectNow(), True),  # 57P03: starting up
        (PoolTimeout("no connection in 1 s"), True),
        (psycopg.errors.LockNotAvailable(), False),  # 55P03: lock_timeout, not an outage
        (psycopg.errors.QueryCanceled(), False),
        (psycopg.errors.UniqueViolation(), False),
    ],
)
def test_which_errors_are_outages(error: Exception, outage: bool) -> None:
    assert is_outage(error) is outage


def test_the_fail_fast_setting() -> None:
    assert Settings.from_env({}).db_fail_fast_seconds == 1.0
    assert Settings.from_env({"LEDGER_DB_FAIL_FAST_SECONDS": "2.5"}).db_fail_fast_seconds == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SettingsError, match="LEDGER_DB_FAIL_FAST_SECONDS"):
            Settings.from_env({"LEDGER_DB_FAIL_FAST_SECONDS": bad})


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (StoreUnavailable(), True),
        (psycopg.OperationalError("connection refused"), True),
        # eventsourcing wraps the driver's error in its own
        (
            _raised_from(PersistenceOperationalError("wrapped"), psycopg.errors.AdminShutdown()),
            True,
        ),
        (_raised_from(RuntimeError("setup failed"), StoreUnavailable()), True),
        (psycopg.errors.UndefinedTable(), False),
        (ValueError("a bad setting"), False),
    ],
)
def test_what_start_up_waits_out(error: BaseException, unreachable: bool) -> None:
    assert is_unreachable(error) is unreachable


def test_the_start_up_wait_setting() -> None:
    assert Settings.from_env({}).startup_wait_seconds == 60.0
    assert Settings.from_env({"LEDGER_STARTUP_WAIT_SECONDS": "0"}).startup_wait_seconds == 0.0
    with pytest.raises(SettingsError, match="LEDGER_STARTUP_WAIT_SECONDS"):
        Settings.from_env({"LEDGER_STARTUP_WAIT_SECONDS": "-1"})
