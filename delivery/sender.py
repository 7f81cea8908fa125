"""The webhook sender: claims due deliveries, sends each attempt, records it in the ledger.

One `Sender` runs on one asyncio loop (`run`, in the delivery role's thread) with one shared
transport for every endpoint: aiohttp's connection pool behind the SSRF guard
(`delivery.aiohttp_transport`: httpx's own pool rescans its connections on every request,
encode/httpx#3215, which cost this loop most of its time at 64 in flight; the measured
comparison is in docs/performance.md). Attempts go straight through it (`delivery.http.post`),
not through an `httpx.AsyncClient`: the same request on the wire for about a fifth less CPU
per webhook. A client given to the constructor (tests) is used as it is. Limits:
- a global cap (`concurrency`) on requests in flight, and the client's connection pool is
  sized to it: a pool smaller than the concurrency would let a slow endpoint's connections
  starve every other endpoint's requests.
- a per-endpoint cap (the endpoint's `max_in_flight`, else `endpoint_concurrency`), applied
  when claiming: an endpoint at its cap is left out of the claim, so one slow or dead endpoint
  holds at most its own cap of slots and never delays deliveries to other endpoints. Until an
  endpoint has been loaded once, it gets one slot (its cap is not known yet).
- both count requests on the wire: a slot is free as soon as the answer is in, while the
  attempt is still being recorded (that does not load the receiver). Held until recorded,
  each slot spent most of its time waiting for the ledger, and the endpoint got far fewer
  requests at once than its cap allowed. Attempts that are answered but not yet recorded
  hold their leases (no one else sends them), at most `concurrency` of them
  (`RECORDING_BACKLOG`).

One attempt (`_attempt`):
1. the delivery is leased (`delivery.claims`), then loaded from the ledger: if it is no longer
   pending or not due (the queue view lags), nothing is sent. A claim pass loads all the
   deliveries it leased in the same thread hop, with one read of the store
   (`JobLedger.get_deliveries`; the throughput bench went from about 900 to 1,500 deliveries/s
   when that replaced one read per delivery); one the pass could not read loads on its own;
2. its endpoint is loaded (cached for `endpoint_cache_seconds`); a disabled or deleted endpoint
   holds the delivery (`endpoint_disabled` / `endpoint_deleted`) instead of sending it;
3. the body is the delivery's exact payload bytes (or their AES-256-GCM envelope when the
   endpoint has a payload key), signed with every current signing secret and a fresh
   `webhook-timestamp` (`delivery.signing`); the request goes through the SSRF guard
   (`delivery.aiohttp_transport`, with the checks of `delivery.targets`): a refused target is
   a failed attempt, `refused_target`;
4. the outcome is recorded with its receipt: success (2xx); `410 Gone` holds the delivery
   (`endpoint_gone`) and disables the endpoint; any other failure is retried after
   `RetrySchedule.next_delay` (the endpoint's schedule or the service's; `Retry-After` may
   lengthen it) or, when the schedule is spent, dead-lettered. Attempts finishing together
   are recorded together (`ledger.rounds`: one thread hop and one transaction per round,
   each attempt told its own result; at 64 in flight this took the throughput bench from
   about 600 to 1,000 deliveries/s); a round the store failed is recorded attempt by attempt;
5. after a failure, the automatic-disabling rule is checked (`delivery.disabling`).
A `WrongAttempt` / `InvalidTransition` on recording means another sender recorded this attempt
first (its lease had expired): the result is dropped (logged at debug), not an error.

Times come from the ledger's clock (tests inject a `ManualClock`); latency is measured with a
monotonic counter. Ledger and SQL calls are synchronous: they run in this sender's own thread
pool, sized to the database pool, never on the loop. This module must never import the web
layer, the projections package or `jobledger` (settings arrive as a `SenderConfig`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.cookiejar import CookieJar
from typing import Any, TypeVar
from uuid import UUID

import httpx

from delivery.aiohttp_transport import GuardedAiohttpTransport
from delivery.claims import DeliveryClaims, Due, Lease
from delivery.crypto import encrypt_payload
from delivery.disabling import disable_reason, read_streak
from delivery.http import Exchange, post, receipt
from delivery.retry import DEFAULT_SCHEDULE, RetrySchedule, parse_retry_after
from delivery.signing import webhook_headers
from delivery.targets import TargetPolicy
from ledger.application import JobLedger
from ledger.commands import Changed
from ledger.delivery import ORIGIN_TEST, Delivery, DeliveryState
from ledger.endpoint import Endpoint, EndpointState
from ledger.errors import (
    ConcurrentUpdate,
    EndpointNotFound,
    InvalidTransition,
    LedgerError,
    StoreUnavailable,
    WrongAttempt,
)
from ledger.rounds import Rounds
from ledger.webhooks import AttemptOutcome
from storage.sql import SqlStore

log = logging.getLogger("jobledger.delivery")

T = TypeVar("T")

HOLD_DISABLED = "endpoint_disabled"
HOLD_DELETED = "endpoint_deleted"
HOLD_GONE = "endpoint_gone"
GONE_REASON = "endpoint answered 410 Gone"
RECORD_TRIES = 5
ACTED_LIMIT = 10_000
ENDPOINT_CACHE_LIMIT = 10_000
PURGE_EVERY_SECONDS = 300.0
# Answered attempts waiting to be recorded, as a multiple of `concurrency`, beyond which no
# more are claimed (a store slower than the receivers must not grow them without bound).
RECORDING_BACKLOG = 1


@dataclass(frozen=True)
class SenderConfig:
    """What the sender needs from the settings (built by `jobledger.delivery_role`)."""

    owner: str  # this sender's name on leases and as the actor of what it records
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE.delays
    timeout_seconds: float = 5.0
    concurrency: int = 64
    endpoint_concurrency: int = 8
    allow_private_targets: bool = False
    disable_after_seconds: float = 5 * 24 * 3600.0
    disable_after_dead_letters: int = 0
    # A lease lasts the attempt's timeout plus this (loading, signing, recording).
    lease_margin_seconds: float = 5.0
    poll_seconds: float = 1.0  # fallback when no wake-up arrives
    drain_seconds: float | None = None  # on stop; None: timeout_seconds + lease_margin_seconds
    endpoint_cache_seconds: float = 1.0
    ledger_threads: int = 8  # threads for ledger and SQL calls: size them to the DB pool
    slow_floor_seconds: float = 30.0  # least wait after a timeout or a 429 (RetrySchedule)


@dataclass(frozen=True)
class SentRequest:
    """The request exactly as sent (headers lower-case, as httpx put them on the wire)."""

    method: str
    url: str
    headers: dict[str, str]
    body: str


@dataclass(frozen=True)
class SentResponse:
    """What came back: no status when there was no answer (see `SentAttempt.error`)."""

    status_code: int | None
    headers: dict[str, str]
    body: str  # at most 4096 characters
    latency_ms: float


@dataclass(frozen=True)
class SentAttempt:
    """One attempt of one delivery, and where it left the delivery."""

    delivery_id: UUID
    endpoint_id: str
    webhook_id: str
    attempt: int
    request: SentRequest
    response: SentResponse
    succeeded: bool
    error_class: str | None
    error: str | None
    receipt: dict[str, Any]
    recorded: bool  # False: another sender recorded this attempt number first
    state: str  # the delivery's state after the attempt
    next_attempt_at: datetime | None
    endpoint_disabled: bool = False  # this attempt disabled the endpoint (410 or the rules)


@dataclass
class _Ready:
    delivery: Delivery
    endpoint: Endpoint
    secrets: list[str]
    payload_key: str | None = field(repr=False, default=None)


class _NotSent(Exception):
    """Nothing was sent: the delivery is not (or no longer) due, or was held."""


# What a claim pass read for an attempt: ready to send, not to be sent, or None: not read yet.
_Prepared = _Ready | _NotSent | None


class NoCookies(CookieJar):
    """A cookie jar that never keeps one. The sender's one client serves every tenant's
    endpoints: a cookie that one endpoint's answer set would otherwise go back to every later
    request to that host, another tenant's endpoint included."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Any) -> None:
        return None


def make_transport(*, concurrency: int, allow_private_targets: bool) -> GuardedAiohttpTransport:
    """The sender's transport: SSRF-guarded aiohttp (`delivery.aiohttp_transport`; the
    comparison behind the choice is in docs/performance.md), pool sized to the concurrency."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return GuardedAiohttpTransport(TargetPolicy(allow_private=allow_private_targets), limits=limits)


def make_client(*, concurrency: int, allow_private_targets: bool) -> httpx.AsyncClient:
    """An httpx client over the sender's transport (`make_transport`): no redirects, no
    proxies from the environment, no cookies. The sender itself sends through the transport
    directly (`delivery.http.post`); this is the same thing behind httpx's API."""
    transport = make_transport(concurrency=concurrency, allow_private_targets=allow_private_targets)
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, cookies=NoCookies()
    )


class Sender:
    def __init__(
        self,
        ledger: JobLedger,
        store: SqlStore,
        config: SenderConfig,
        *,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.config = config
        self.claims = DeliveryClaims(store, owner=config.owner)
        self._client: httpx.AsyncClient | GuardedAiohttpTransport | None = client
        self._owns_client = client is None
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._executor = ThreadPoolExecutor(
            max_workers=config.ledger_threads, thread_name_prefix="delivery-ledger"
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # attempts whose answer is not in yet: the sum of `_inflight`, kept as a count (every
        # answer reads it)
        self._sending = 0
        self._finished: list[str] = []  # delivery ids whose leases the next pass releases
        self._inflight: Counter[str] = Counter()
        self._limits: dict[str, int] = {}
        self._endpoints: dict[str, tuple[float, Endpoint | None]] = {}
        self._schedules: dict[tuple[float, ...], RetrySchedule] = {}
        # delivery id -> queue-row version already acted on: the view may still show it due
        self._acted: OrderedDict[str, int] = OrderedDict()
        # The last pass left room, and rows it scanned were ones the view still shows due
        # though this sender has acted on them: the view catching up may uncover due rows
        # behind them, so its next batch wakes the sender whatever that batch holds.
        self._behind_lagging_rows = False
        self._records: Rounds[AttemptOutcome, Changed] = Rounds(self._record_round)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._last_purge = float("-inf")
        self._closed = False
        self._offered: list[Delivery] = []  # made by this process's fan-out: `offer`
        self.attempt_finished: list[Callable[[SentAttempt], None]] = []

    @property
    def client(self) -> httpx.AsyncClient | GuardedAiohttpTransport:
        """What attempts are sent with: the client given, else this sender's own transport
        (straight through it: no httpx request and response objects around each webhook)."""
        if self._client is None:
            self._client = make_transport(
                concurrency=self.config.concurrency,
                allow_private_targets=self.config.allow_private_targets,
            )
        return self._client

    def inflight(self) -> int:
        return len(self._tasks)

    def wake(self, position: int = 0) -> None:
        """Look for due work now. Thread-safe (the queue view's runner calls it)."""
        loop, event = self._loop, self._wake
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(event.set)

    def has_news(self, pending: Iterable[tuple[str, int]]) -> bool:
        """Whether a pass could find one of these (delivery id, version) rows, pending in
        the queue view: one this sender is not sending and has not acted on at that version.
        Thread-safe (the queue view's runner asks, before waking the sender).

        Any batch is news after a pass that found only rows the view had not caught up on
        (`_behind_lagging_rows`): without that wake-up, pending deliveries beyond them
        waited for the fallback poll (a second without a send, seen under load)."""
        if self._behind_lagging_rows:
            return True
        tasks, acted = self._tasks, self._acted
        return any(i not in tasks and acted.get(i, -1) < v for i, v in pending)

    def offer(self, deliveries: Sequence[Delivery]) -> None:
        """Deliveries just made by the fan-out in this process: the next pass leases the due
        ones with the room the queue's due rows leave, without waiting for the queue to show
        them (one view transaction and one read of the ledger fewer between a state change
        and its webhook). Those it does not take (no room, caps) are found in the queue as
        any other. Thread-safe (the fan-out's runner calls it)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._add_offered, list(deliveries))

    def _add_offered(self, deliveries: list[Delivery]) -> None:
        room = self.config.concurrency - len(self._offered)  # the rest: from the queue
        self._offered.extend(deliveries[: max(room, 0)])
        if self._wake is not None:
            self._wake.set()

    # -- the loop --

    async def run(self, stop: threading.Event) -> None:
        """Claim and send until `stop` is set; then drain and close the client."""
        self._bind()

        def wake_on_stop() -> None:
            stop.wait()
            self.wake()

        threading.Thread(target=wake_on_stop, name="delivery-stop", daemon=True).start()
        log.info(
            "delivery sender %s started (concurrency %d, %d per endpoint)",
            self.config.owner,
            self.config.concurrency,
            self.config.endpoint_concurrency,
        )
        try:
            while not stop.is_set():
                try:
                    wait = await self.tick()
                except StoreUnavailable:
                    log.warning("delivery pass: store unavailable; retrying")
                    wait = self.config.poll_seconds
                except Exception:
                    log.exception("delivery pass failed; retrying")
                    wait = self.config.poll_seconds
                if wait > 0 and not stop.is_set():
                    await self._sleep(wait)
        finally:
            left = await self.drain()
            await self.aclose()
            log.info("delivery sender %s stopped (%d sends cut short)", self.config.owner, left)

    async def tick(self) -> float:
        """One claim pass: lease due deliveries and start their attempts. Returns how long the
        loop may sleep before the next pass (0: go again at once); wake-ups cut it short."""
        self._bind()
        cfg = self.config
        free = min(
            cfg.concurrency - self._sending,
            (1 + RECORDING_BACKLOG) * cfg.concurrency - len(self._tasks),
        )
        offered, self._offered = self._offered, []
        if free <= 0 or self._stopping:
            self._behind_lagging_rows = False  # full: a finishing attempt wakes the loop
            await self._release_finished()
            return cfg.poll_seconds
        now = self.ledger.clock.now()
        if time.monotonic() - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            await self._call(self.claims.purge, now)
        inflight = dict(self._inflight)
        limits = {e: self._limit(e) for e in inflight}
        full = {e for e, n in inflight.items() if n >= limits[e]}
        taken: Counter[str] = Counter()
        acted, running = self._acted, self._tasks
        lagging = 0

        def accept(due: Due) -> bool:  # runs in the claim's thread: only reads
            nonlocal lagging
            if acted.get(due.delivery_id, -1) >= due.version or due.delivery_id in running:
                lagging += 1
                return False
            limit = limits.get(due.endpoint_id) or self._limit(due.endpoint_id)
            if inflight.get(due.endpoint_id, 0) + taken[due.endpoint_id] >= limit:
                return False
            taken[due.endpoint_id] += 1
            return True

        known = {
            str(d.id): d
            for d in offered
            if d.state == DeliveryState.PENDING
            and (d.next_attempt_at is None or d.next_attempt_at <= now)
        }
        # The leases of attempts finished since the last pass are dropped in the claim's own
        # transaction: one round trip per pass, not one per attempt.
        release, self._finished = self._finished, []
        try:
            leases, next_due = await self._call(
                self._claim_prepared,
                now,
                known,
                limit=free,
                lease_seconds=cfg.timeout_seconds + cfg.lease_margin_seconds,
                exclude_endpoints=full,
                accept=accept,
                scan=min(free * 4, 1000),
                release=release,
                offered=[Due(i, d.endpoint_id, d.attempts, d.version) for i, d in known.items()],
            )
        except BaseException:
            self._finished.extend(release)  # next pass (or they expire by themselves)
            raise
        for lease, ready in leases:
            self._launch(lease, ready)
        self._behind_lagging_rows = lagging > 0 and len(leases) < free
        if len(leases) >= free or next_due is None:
            return cfg.poll_seconds  # full (a finishing attempt wakes us) or nothing pending
        delay = (next_due - now).total_seconds()
        # Due but not claimable (endpoint at its cap, a lagging row, another sender's lease):
        # a finishing attempt or the view moving wakes the loop; else the fallback poll.
        return cfg.poll_seconds if delay <= 0 else min(delay, cfg.poll_seconds)

    async def drain(self, grace: float | None = None) -> int:
        """Stop claiming; let in-flight attempts finish for `grace` seconds, then cut the rest
        short (their leases are released: they are sent again, same webhook-id). Returns how
        many were cut short."""
        self._stopping = True
        if grace is None:
            grace = self.config.drain_seconds
        if grace is None:
            grace = self.config.timeout_seconds + self.config.lease_margin_seconds
        tasks = list(self._tasks.values())
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        await self._release_finished()
        return len(pending)

    async def aclose(self) -> None:
        """Close the client (if this sender made it) and the thread pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- one delivery, now --

    async def deliver_now(self, delivery_id: UUID) -> SentAttempt:
        """Send the delivery's next attempt now, record it, and return what happened.

        For `POST /v1/endpoints/{id}/test` (with a delivery from `create_test_delivery`) and
        for operators. Call it on the event loop that uses this sender's client (e.g. a
        `Sender` made in the API's lifespan; `delivery.claims.prepare_tables` must have run).
        The delivery must be `pending`; it is sent even when its `next_attempt_at` is still
        ahead. It is leased first, so the claim loop of any process does not send it at the
        same time.

        Returns `SentAttempt`: the exact request (`request`: method, URL, headers as sent,
        body text), the answer (`response`: status code or None, bounded headers, body
        excerpt of at most 4096 characters, latency in ms), `succeeded`, `error_class`
        (`http_status`, `rate_limited`, `timeout`, `connection`, `redirect`, `tls`,
        `refused_target`) and `error`, the `receipt` recorded, and the delivery's resulting
        `state` and `next_attempt_at`. `recorded` is False when another sender recorded
        this attempt number first (the request was still sent).

        Raises (all `ledger.errors.LedgerError`): `DeliveryNotFound`; `InvalidTransition`
        when the delivery is not pending, or when its endpoint is disabled or deleted (the
        delivery is then held); `ConcurrentUpdate` when another sender holds its lease right
        now (try again); `StoreUnavailable` when the store cannot be reached.
        """
        delivery = await self._call(self.ledger.get_delivery, delivery_id, tenant_id=None)
        if delivery.state != DeliveryState.PENDING:
            raise InvalidTransition("send", str(delivery.state), ("pending",), subject="a delivery")
        endpoint = await self._call(self._endpoint, delivery.endpoint_id)
        timeout = self._timeout(endpoint)
        lease = await self._call(
            self.claims.claim_one,
            str(delivery_id),
            delivery.endpoint_id,
            delivery.attempts + 1,
            self.ledger.clock.now(),
            timeout + self.config.lease_margin_seconds,
        )
        if lease is None:
            raise ConcurrentUpdate(
                f"Delivery {delivery_id} is being sent by another sender right now; "
                "try again in a few seconds.",
                delivery_id=str(delivery_id),
            )
        try:
            return await self._attempt(lease, force=True)
        finally:
            await self._call(self.claims.release, lease.delivery_id)

    # -- internals: running attempts --

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _limit(self, endpoint_id: str) -> int:
        return self._limits.get(endpoint_id, 1)  # unknown until loaded once: one at a time

    def _launch(self, lease: Lease, ready: _Prepared) -> None:
        self._inflight[lease.endpoint_id] += 1
        self._sending += 1
        self._tasks[lease.delivery_id] = asyncio.create_task(
            self._run_leased(lease, ready),
            name=f"delivery-{lease.delivery_id[:8]}-{lease.attempt}",
        )

    async def _run_leased(self, lease: Lease, ready: _Prepared) -> None:
        keep_lease = False
        sending = True

        def answered() -> None:
            """Free the attempt's slots (its endpoint's and the sender's) once, when the
            answer is in or the attempt ends without sending."""
            nonlocal sending
            if not sending:
                return
            sending = False
            # a pass now only when the sender or this endpoint was at its cap: any other
            # pass would find nothing the last one could not take (and at low rates it would
            # run just as the next delivery becomes due, delaying it by a pass)
            was_full = self._sending >= self.config.concurrency or self._inflight[
                lease.endpoint_id
            ] >= self._limit(lease.endpoint_id)
            self._sending -= 1
            self._inflight[lease.endpoint_id] -= 1
            if self._inflight[lease.endpoint_id] <= 0:
                del self._inflight[lease.endpoint_id]
            if was_full:
                self.wake()

        try:
            await self._attempt(lease, force=False, prepared=ready, answered=answered)
        except _NotSent as skipped:
            log.debug("delivery %s: not sent (%s)", lease.delivery_id, skipped)
        except StoreUnavailable:
            log.warning("delivery %s: store unavailable; tried again later", lease.delivery_id)
            keep_lease = True
        except Exception:
            # Kept: the delivery is tried again when the lease expires, not in a hot loop.
            log.exception("delivery %s: attempt failed; retried after its lease", lease.delivery_id)
            keep_lease = True
        finally:
            answered()
            self._tasks.pop(lease.delivery_id, None)
            if not keep_lease:
                self._finished.append(lease.delivery_id)  # released by the next pass
            self.wake()

    async def _release_finished(self) -> None:
        """Release the leases of finished attempts now (stopping, or no claim pass due)."""
        if not self._finished:
            return
        ids, self._finished = self._finished, []
        try:
            await self._call(self.claims.release, *ids)
        except Exception as error:  # they expire by themselves
            log.warning("%d delivery leases not released: %s", len(ids), error)

    def _mark_acted(self, lease: Lease) -> None:
        self._acted[lease.delivery_id] = lease.version
        self._acted.move_to_end(lease.delivery_id)
        while len(self._acted) > ACTED_LIMIT:
            self._acted.popitem(last=False)

    async def _attempt(
        self,
        lease: Lease,
        *,
        force: bool,
        prepared: _Prepared = None,
        answered: Callable[[], None] | None = None,
    ) -> SentAttempt:
        cfg = self.config
        delivery_id = lease.delivery_uuid
        try:
            if isinstance(prepared, _NotSent):
                raise prepared
            ready = (
                prepared
                if prepared is not None
                else await self._call(self._prepare, delivery_id, force)
            )
        except _NotSent:
            self._mark_acted(lease)
            raise
        delivery, endpoint = ready.delivery, ready.endpoint
        attempt = delivery.attempts + 1
        timeout = self._timeout(endpoint)
        if not force and timeout > cfg.timeout_seconds:
            until = self.ledger.clock.now() + timedelta(seconds=timeout + cfg.lease_margin_seconds)
            await self._call(self.claims.extend, lease, until)
        attempted_at = self.ledger.clock.now()
        timestamp = int(attempted_at.timestamp())
        body = delivery.payload.encode("utf-8")
        if ready.payload_key is not None:
            body = encrypt_payload(ready.payload_key, body)
        headers = webhook_headers(ready.secrets, delivery.webhook_id, timestamp, body)
        exchange = await post(
            self.client, endpoint.url, headers=headers, body=body, timeout=timeout
        )
        if answered is not None:
            answered()
        the_receipt = receipt(exchange, attempted_at=attempted_at, webhook_timestamp=timestamp)
        finished_at = self.ledger.clock.now()
        gone = exchange.status_code == 410 and delivery.origin != ORIGIN_TEST
        next_at = None
        if not exchange.succeeded and not gone:
            next_at = self._next_attempt_at(delivery, endpoint, exchange, finished_at)
        changed = await self._record_in_round(
            AttemptOutcome(
                delivery,
                attempt,
                exchange.succeeded,
                the_receipt,
                next_at,
                HOLD_GONE if gone else None,
                self.config.owner,
            )
        )
        self._mark_acted(lease)
        disabled = False
        if changed is None:  # another sender recorded this attempt first
            after: Delivery = await self._call(
                self.ledger.get_delivery, delivery_id, tenant_id=None
            )
        else:
            after = changed.aggregate
            if not exchange.succeeded and delivery.origin != ORIGIN_TEST:
                last_error = {
                    "at": the_receipt["attempted_at"],
                    "delivery_id": str(delivery_id),
                    "attempt": attempt,
                    "status_code": exchange.status_code,
                    "error_class": exchange.error_class,
                    "error": exchange.error,
                }
                disabled = await self._call(
                    self._after_failure,
                    endpoint,
                    GONE_REASON if gone else None,
                    changed.position,
                    attempted_at,
                    after.state == DeliveryState.DEAD_LETTERED,
                    last_error,
                )
        sent = SentAttempt(
            delivery_id=delivery_id,
            endpoint_id=str(endpoint.id),
            webhook_id=delivery.webhook_id,
            attempt=attempt,
            request=SentRequest(
                exchange.method,
                exchange.url,
                dict(exchange.request_headers),
                body.decode("utf-8", errors="replace"),
            ),
            response=SentResponse(
                exchange.status_code,
                dict(exchange.response_headers),
                exchange.response_body,
                exchange.latency_ms,
            ),
            succeeded=exchange.succeeded,
            error_class=exchange.error_class,
            error=exchange.error,
            receipt=the_receipt,
            recorded=changed is not None,
            state=str(after.state),
            next_attempt_at=after.next_attempt_at,
            endpoint_disabled=disabled,
        )
        for callback in self.attempt_finished:
            try:
                callback(sent)
            except Exception:
                log.exception("attempt_finished callback failed")
        return sent

    def _next_attempt_at(
        self, delivery: Delivery, endpoint: Endpoint, exchange: Exchange, now: datetime
    ) -> datetime | None:
        assert exchange.error_class is not None
        header = exchange.response_headers.get("retry-after")
        retry_after = parse_retry_after(header, now) if header else None
        delay = self._schedule(endpoint).next_delay(
            delivery.round_attempts + 1,
            failure=exchange.error_class,
            retry_after=retry_after,
            rng=self._rng,
        )
        return None if delay is None else now + timedelta(seconds=delay)

    def _schedule(self, endpoint: Endpoint) -> RetrySchedule:
        delays = tuple(endpoint.retry_schedule or self.config.retry_schedule)
        schedule = self._schedules.get(delays)
        if schedule is None:
            schedule = RetrySchedule(delays, slow_floor_seconds=self.config.slow_floor_seconds)
            self._schedules[delays] = schedule
        return schedule

    def _timeout(self, endpoint: Endpoint | None) -> float:
        if endpoint is not None and endpoint.timeout_seconds:
            return float(endpoint.timeout_seconds)
        return self.config.timeout_seconds

    # -- internals: ledger and SQL (in the thread pool) --

    def _claim_prepared(
        self, now: datetime, known: dict[str, Delivery], **claim: Any
    ) -> tuple[list[tuple[Lease, _Prepared]], datetime | None]:
        """One claim pass (`DeliveryClaims.claim_batch`), and what each leased attempt needs,
        read together in this same thread hop: one read of the store for the pass instead of
        one per delivery (none for those `known`, offered as just made). A delivery this read
        could not settle (the store failed, it is not in the log) is left to its attempt to
        load on its own (None), with the usual errors."""
        leases, next_due = self.claims.claim_batch(now, **claim)
        if not leases:
            return [], next_due
        unknown = [lease.delivery_uuid for lease in leases if lease.delivery_id not in known]
        try:
            found = {
                **(self.ledger.get_deliveries(unknown) if unknown else {}),
                **{d.id: d for d in known.values()},
            }
        except Exception as error:  # the leases are written: their attempts must still run
            log.debug("claim pass: deliveries not read together (%s)", error)
            return [(lease, None) for lease in leases], next_due
        prepared: list[tuple[Lease, _Prepared]] = []
        for lease in leases:
            delivery = found.get(lease.delivery_uuid)
            ready: _Prepared = None
            if delivery is not None:
                try:
                    ready = self._ready(delivery, force=False)
                except _NotSent as skipped:
                    ready = skipped
                except Exception:  # raised again, where it belongs, by its attempt's own load
                    ready = None
            prepared.append((lease, ready))
        return prepared, next_due

    def _prepare(self, delivery_id: UUID, force: bool) -> _Ready:
        """Load what one attempt needs; `_NotSent` (or, when forced, a `LedgerError`) when
        there is nothing to send."""
        return self._ready(self.ledger.get_delivery(delivery_id, tenant_id=None), force)

    def _ready(self, delivery: Delivery, force: bool) -> _Ready:
        delivery_id = delivery.id
        if delivery.state != DeliveryState.PENDING:
            if force:
                raise InvalidTransition(
                    "send", str(delivery.state), ("pending",), subject="a delivery"
                )
            raise _NotSent(f"it is {delivery.state}")
        if (
            not force
            and delivery.next_attempt_at is not None
            and delivery.next_attempt_at > self.ledger.clock.now()
        ):
            raise _NotSent("it is not due yet (the queue view lags)")
        endpoint = self._endpoint(delivery.endpoint_id)
        if endpoint is None or endpoint.state != EndpointState.ACTIVE:
            state = str(endpoint.state) if endpoint is not None else "deleted"
            reason = HOLD_DISABLED if state == EndpointState.DISABLED else HOLD_DELETED
            with contextlib.suppress(InvalidTransition):  # it changed meanwhile: not ours
                self.ledger.hold_delivery(delivery_id, reason=reason, actor=self.config.owner)
            if force:
                raise InvalidTransition(
                    "send a webhook to", state, ("active",), subject="an endpoint"
                )
            raise _NotSent(f"held: {reason}")
        return _Ready(
            delivery,
            endpoint,
            self.ledger.signing_secrets(endpoint),
            self.ledger.payload_key(endpoint),
        )

    def _endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint (None: deleted or unknown), cached for `endpoint_cache_seconds`."""
        cached = self._endpoints.get(endpoint_id)
        if cached is not None and time.monotonic() - cached[0] < self.config.endpoint_cache_seconds:
            return cached[1]
        endpoint: Endpoint | None
        try:
            endpoint = self.ledger.get_endpoint(UUID(endpoint_id), tenant_id=None)
        except EndpointNotFound:
            endpoint = None
        if len(self._endpoints) >= ENDPOINT_CACHE_LIMIT:
            self._endpoints.clear()
        self._endpoints[endpoint_id] = (time.monotonic(), endpoint)
        limit = (endpoint.max_in_flight if endpoint else None) or self.config.endpoint_concurrency
        if self._limits.get(endpoint_id) != limit:
            self._limits[endpoint_id] = limit
            self.wake()  # its cap is known now: more of its deliveries may be claimed
        return endpoint

    async def _record_in_round(self, outcome: AttemptOutcome) -> Changed | None:
        """Record the attempt together with the others finishing now (`ledger.rounds`: one
        thread hop and one transaction per round); None when another sender recorded it
        first. A round the store failed is recorded again on its own (`_record_again`)."""
        try:
            return await self._records.submit(outcome)
        except (WrongAttempt, InvalidTransition) as error:
            self._dropped(outcome, error)
            return None
        except (StoreUnavailable, ConcurrentUpdate) as error:
            self._not_yet(outcome, error)
        return await self._record_again(outcome)

    async def _record_round(
        self, outcomes: list[AttemptOutcome]
    ) -> Sequence[Changed | LedgerError]:
        results: list[Changed | LedgerError] = await self._call(
            self.ledger.record_delivery_attempts, outcomes
        )
        return results

    async def _record_again(self, outcome: AttemptOutcome) -> Changed | None:
        """Record the attempt of a failed round on its own, on a fresh read (the delivery as
        loaded took that round's decision); None when another sender recorded it first.
        Retries a store that is briefly unreachable, then gives up (the lease expires; sent
        again). It waits between tries on the loop, not in a worker thread: in an outage every
        attempt in flight comes here, and sleeping threads would hold the executor that the
        other sends need."""
        for tries in range(RECORD_TRIES):
            try:
                return await self._call(
                    self.ledger.record_delivery_attempt, outcome.loaded.id, **outcome.decision()
                )
            except (WrongAttempt, InvalidTransition) as error:
                self._dropped(outcome, error)
                return None
            except (StoreUnavailable, ConcurrentUpdate) as error:
                if tries == RECORD_TRIES - 1:
                    raise
                self._not_yet(outcome, error)
                await asyncio.sleep(min(2.0, 0.1 * 2**tries))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _dropped(outcome: AttemptOutcome, error: LedgerError) -> None:
        log.debug(
            "delivery %s attempt %d: dropped, recorded elsewhere (%s)",
            outcome.loaded.id,
            outcome.attempt,
            error.message,
        )

    @staticmethod
    def _not_yet(outcome: AttemptOutcome, error: LedgerError) -> None:
        log.warning(
            "delivery %s attempt %d: cannot record yet: %s",
            outcome.loaded.id,
            outcome.attempt,
            error,
        )

    def _after_failure(
        self,
        endpoint: Endpoint,
        reason: str | None,
        position: int,
        attempted_at: datetime,
        dead_lettered: bool,
        last_error: dict[str, Any],
    ) -> bool:
        """Disable the endpoint when `reason` (410) or the automatic rules say so; True when
        this call disabled it."""
        endpoint_id = str(endpoint.id)
        if reason is None:
            cfg = self.config
            try:
                streak = read_streak(self.store, endpoint_id)
            except Exception as error:  # the health view is missing or unreachable: next time
                log.warning("endpoint %s: health not readable: %s", endpoint_id, error)
                return False
            if streak is None or streak.endpoint_state != "active":
                return False
            streak = streak.including(
                position=position, attempted_at=attempted_at, dead_lettered=dead_lettered
            )
            reason = disable_reason(
                streak,
                self.ledger.clock.now(),
                after_seconds=cfg.disable_after_seconds,
                after_dead_letters=cfg.disable_after_dead_letters,
            )
            if reason is None:
                return False
        try:
            changed = self.ledger.disable_endpoint(
                endpoint.id,
                tenant_id=None,
                reason=reason,
                actor=self.config.owner,
                automatic=True,
                last_error=last_error,
            )
        except (EndpointNotFound, InvalidTransition):
            return False  # deleted meanwhile
        finally:
            self._endpoints.pop(endpoint_id, None)
        if changed.positions:
            log.warning("endpoint %s disabled automatically: %s", endpoint_id, reason)
            return True
        return False
