"""A circuit breaker in front of PostgreSQL: while the store is down, fail in about a second.

Without it a store call during an outage waits for eventsourcing's recorder, which retries each
operation 10 times and waits up to `POSTGRES_CONNECT_TIMEOUT` for a pooled connection on every
try (12 s with a 1 s timeout, 50 s with the default 5 s), and every caller queued behind it.

One `StoreBreaker` per database per process, shared by the ledger's connection pool
(`guard_ledger`) and every `SqlStore`. Its two waits, `ACQUIRE_WAIT_SECONDS` and
`PROBE_INTERVAL_SECONDS`, are both `LEDGER_DB_FAIL_FAST_SECONDS` (1 s) in the service.

- closed (normal): calls go through. A call that waits `ACQUIRE_WAIT_SECONDS` for a pooled
  connection, or whose connection fails at the connection level (refused, reset, terminated by
  the server, server starting or shutting down), makes the breaker *probe* the store: one fresh
  connection and `SELECT 1` in a thread, one probe at a time, its answer reused for
  `PROBE_REUSE_SECONDS`. The caller waits for the answer at most `PROBE_PATIENCE_SECONDS` (3 s:
  a store that takes longer to accept a connection counts as down; a busy one does not). Probe
  fine (one connection was killed, the pool was busy): nothing changes and the call retries or
  keeps waiting as before; probe failed or late: the breaker opens.
- open: every call raises `StoreUnavailable` at once (the API answers 503 + Retry-After; the
  loops back off), so eventsourcing's retries end on their next try instead of after ten.
- half-open: `PROBE_INTERVAL_SECONDS` after opening (or after the last failed probe), the next
  call starts a probe and waits for it (others still fail at once); success closes the breaker,
  gives the ledger a fresh connection pool (the old one may be in its reconnect back-off for as
  long as the outage lasted) and lets the call through; failure keeps it open another interval.
  A late probe that succeeds closes the breaker when it answers.

Errors that are not outages (lock timeouts, cancelled statements, constraint violations) never
count. Nothing here retries a write: a refused call wrote nothing, and callers' own retries
(idempotency keys, expected versions) decide what to do next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ledger.errors import StoreUnavailable
from storage.config import PING_AFTER_IDLE_SECONDS

log = logging.getLogger("storage.breaker")

# Both default to `LEDGER_DB_FAIL_FAST_SECONDS` (1 s) when the service builds the breaker:
ACQUIRE_WAIT_SECONDS = 1.0  # wait this long for a pooled connection before probing the store
PROBE_INTERVAL_SECONDS = 1.0  # while open, probe again this often (the half-open state)
PROBE_CONNECT_TIMEOUT = 2  # seconds (libpq's minimum) for the probe's fresh connection
PROBE_REUSE_SECONDS = 0.5  # a probe's result answers every suspicion within this window
# From closed, a probe counts as failed only when it is this late (or fails): on a saturated
# machine a fresh connection can take over a second, and that is load, not an outage.
PROBE_PATIENCE_SECONDS = PROBE_CONNECT_TIMEOUT + 1.0

# SQLSTATE classes and codes that mean the connection or the server went away.
_OUTAGE_CLASSES = ("08",)  # connection exception
_OUTAGE_CODES = ("57P01", "57P02", "57P03", "53300")  # terminated, crashed, starting, too many


def is_outage(error: BaseException) -> bool:
    """Whether a psycopg error means the store (or this connection to it) is gone."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = getattr(error, "sqlstate", None)
    if state is None:  # raised by the client: refused, reset, closed, broken connection
        return True
    return state.startswith(_OUTAGE_CLASSES) or state in _OUTAGE_CODES


def is_unreachable(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from (eventsourcing wraps psycopg's), means
    the store cannot be reached: what a process starting up waits out instead of exiting."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable) or is_outage(current):
            return True
        current = current.__cause__ or current.__context__
    return False


class StoreBreaker:
    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        label: str = "store",
        probe_interval: float = PROBE_INTERVAL_SECONDS,
        acquire_wait: float = ACQUIRE_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.label = label
        self.probe_interval = probe_interval
        self.acquire_wait = acquire_wait
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._opened_at = 0.0
        self._last_probe: tuple[float, bool] | None = None
        self._probe_done: threading.Event | None = None  # the probe under way, if any
        self.on_recovered: list[Callable[[], None]] = []
        self.opened_count = 0

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def admit(self) -> None:
        """Before a store call: raise `StoreUnavailable` while open; when it is time, probe
        (half-open) and let this call through if the store answers within `acquire_wait`."""
        with self._lock:
            until = self._open_until
        if until is None:
            return
        if self._clock() < until:
            raise StoreUnavailable()
        done, mine = self._start_probe()
        if not mine:  # another caller is probing: do not queue behind it
            raise StoreUnavailable()
        if not done.wait(self.acquire_wait):
            self._open(f"no answer within {self.acquire_wait:g} s")
            raise StoreUnavailable()
        if self.is_open:
            raise StoreUnavailable()

    def suspect(self) -> bool:
        """After a connection-level failure: probe (or reuse a fresh probe's answer); True if
        the store answers within `acquire_wait`. Opens the breaker when it does not."""
        last = self._last_probe
        if last is not None and self._clock() - last[0] < PROBE_REUSE_SECONDS:
            return last[1]
        if self.is_open:
            return False
        done, _ = self._start_probe()
        patience = max(self.acquire_wait, PROBE_PATIENCE_SECONDS)
        if not done.wait(patience):  # a store this slow to connect counts as down
            self._open(f"no answer within {patience:g} s")
            return False
        return not self.is_open

    def _start_probe(self) -> tuple[threading.Event, bool]:
        """The probe under way, or a new one in a thread; True when this call started it."""
        with self._lock:
            if self._probe_done is not None and not self._probe_done.is_set():
                return self._probe_done, False
            done = threading.Event()
            self._probe_done = done
        threading.Thread(target=self._probe, args=(done,), name="store-probe", daemon=True).start()
        return done, True

    def _probe(self, done: threading.Event) -> None:
        """One fresh connection and `SELECT 1`; moves the state by its answer."""
        try:
            conn = self._connect()
            try:
                conn.execute("SELECT 1")
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        except Exception as error:
            self._open(str(error))
        else:
            self._close()
        finally:
            done.set()

    def _open(self, reason: str) -> None:
        now = self._clock()
        with self._lock:
            self._last_probe = (now, False)
            was_open = self._open_until is not None
            self._open_until = now + self.probe_interval
            if not was_open:
                self._opened_at = now
                self.opened_count += 1
        if not was_open:
            log.warning("%s unreachable (%s): breaker open, failing fast", self.label, reason)
        else:
            log.info("%s still unreachable: %s", self.label, reason)

    def _close(self) -> None:
        now = self._clock()
        with self._lock:
            self._last_probe = (now, True)
            was_open = self._open_until is not None
            self._open_until = None
        if not was_open:
            return
        log.warning("%s is back after %.1f s: breaker closed", self.label, now - self._opened_at)
        for callback in list(self.on_recovered):
            try:
                callback()
            except Exception:
                log.exception("%s: a recovery callback failed", self.label)


_BREAKERS: dict[tuple[str, int, str], StoreBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(host: str, port: int, dbname: str, user: str, password: str = "") -> StoreBreaker:
    """The process's one breaker for this PostgreSQL database."""
    key = (host, int(port), dbname)
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(key)
        if breaker is None:

            def connect() -> Any:
                return psycopg.connect(
                    host=host,
                    port=int(port),
                    dbname=dbname,
                    user=user,
                    password=password or None,
                    connect_timeout=PROBE_CONNECT_TIMEOUT,
                    autocommit=True,
                    application_name="job-ledger-probe",
                )

            breaker = StoreBreaker(connect, label=f"PostgreSQL {host}:{port}/{dbname}")
            _BREAKERS[key] = breaker
        return breaker


def guard_ledger(ledger: Any, *, fail_fast_seconds: float | None = None) -> StoreBreaker | None:
    """Put the breaker in front of an eventsourcing application's PostgreSQL pool (no-op on
    SQLite). Returns the breaker, or None when the application has no PostgreSQL datastore.
    `fail_fast_seconds` sets the breaker's acquire wait and probe interval."""
    datastore: Any = getattr(ledger.recorder, "datastore", None)
    pool = getattr(datastore, "pool", None)
    if not isinstance(pool, ConnectionPool) or not isinstance(pool.kwargs, dict):
        return None
    kwargs = pool.kwargs
    breaker = breaker_for(
        str(kwargs["host"]),
        int(kwargs["port"]),
        str(kwargs["dbname"]),
        str(kwargs["user"]),
        str(kwargs.get("password") or ""),
    )
    if fail_fast_seconds is not None:
        breaker.acquire_wait = breaker.probe_interval = fail_fast_seconds
    _guard_pool(pool, breaker)

    def fresh_pool() -> None:
        old = datastore.pool
        new = _clone_pool(old)
        _guard_pool(new, breaker)
        datastore.pool = new
        threading.Thread(
            target=_close_quietly, args=(old,), name="old-pool-close", daemon=True
        ).start()

    breaker.on_recovered.append(fresh_pool)
    return breaker


def _guard_pool(pool: ConnectionPool[Any], breaker: StoreBreaker) -> None:
    """Shadow `pool.connection` (what eventsourcing's datastore calls) with a guarded one, and
    make the pool's pre-ping check only connections idle for `PING_AFTER_IDLE_SECONDS`: a ping
    on every checkout was a round trip per command (a third of the worker's time in a profile);
    a connection used within the last second that has died since fails its call, which the
    recorder retries on another connection after the breaker's probe."""
    returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def check_if_idle(conn: Any) -> None:
        if time.monotonic() - returned_at.get(conn, 0.0) >= PING_AFTER_IDLE_SECONDS:
            ConnectionPool.check_connection(conn)

    if pool._check is not None:
        pool._check = check_if_idle

    @contextmanager
    def connection(timeout: float | None = None) -> Iterator[Any]:
        conn = _getconn(pool, breaker, pool.timeout if timeout is None else timeout)
        try:
            with conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            if is_outage(error):
                breaker.suspect()
            raise
        finally:
            returned_at[conn] = time.monotonic()
            pool.putconn(conn)

    pool.connection = connection  # type: ignore[method-assign]


def _getconn(pool: ConnectionPool[Any], breaker: StoreBreaker, timeout: float) -> Any:
    breaker.admit()
    deadline = time.monotonic() + timeout
    wait = breaker.acquire_wait
    while True:
        left = deadline - time.monotonic()
        try:
            return pool.getconn(timeout=max(0.01, min(wait, left)))
        except PoolTimeout as error:
            if not breaker.suspect():
                raise StoreUnavailable() from error
            if time.monotonic() >= deadline:
                raise
        wait = PROBE_REUSE_SECONDS  # the store answers: the pool is busy; keep checking


def _clone_pool(old: ConnectionPool[Any]) -> ConnectionPool[Any]:
    """A new pool configured like `old` (eventsourcing's subclass and settings)."""
    extra: dict[str, Any] = {}
    if hasattr(old, "get_password_func"):
        extra["get_password_func"] = old.get_password_func
    return type(old)(
        old.conninfo,
        connection_class=old.connection_class,
        kwargs=old.kwargs,
        min_size=old.min_size,
        max_size=old.max_size,
        open=False,
        configure=old._configure,
        check=old._check,
        reset=old._reset,
        timeout=old.timeout,
        max_waiting=old.max_waiting,
        max_lifetime=old.max_lifetime,
        max_idle=old.max_idle,
        reconnect_timeout=old.reconnect_timeout,
        num_workers=old.num_workers,
        **extra,
    )


def _close_quietly(pool: ConnectionPool[Any]) -> None:
    with contextlib.suppress(Exception):
        pool.close(timeout=5.0)
