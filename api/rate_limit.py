"""`RateLimit`: a token-bucket request-rate limit per API key, and per client IP for requests
that bear no key (the console login among them), answering 429 `rate-limited`.

Each caller has a bucket of `burst` tokens that refills at `per_second` tokens a second; a
request takes one token, and a request that finds the bucket empty is refused before anything
else runs (no authentication, no body read, nothing written) with `Retry-After` (whole seconds
until a token is back) and the `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`
headers (draft-ietf-httpapi-ratelimit-headers).

Callers: a request with `Authorization: Bearer <token>` is counted against that token (by its
sha256: this module never keeps a key), whether the key turns out valid or not; any other
request against the client's IP address. The limiter runs before authentication, so it costs
no store call. Liveness, readiness and /metrics are not limited (probes and scrapers).

Unproven tokens: a token the API has not yet accepted in this process is also counted against
its client IP's bucket of unproven tokens (same rate and burst). Without that, a client that
sent a fresh random token with every request would get a fresh bucket every time, and could
guess keys or load the API without limit. A token becomes proven when a request bearing it gets
any answer but 401 (and unproven again on a 401); proven tokens skip the IP bucket, so many
real keys behind one address (an automation platform's shared egress, a NAT) are not limited
by each other.

Memory is bounded: at most `max_callers` buckets are kept; past that the least recently used
ones are dropped (a dropped caller starts again with a full bucket). The limit is per process:
N API processes allow N times the rate in total.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
DEFAULT_MAX_CALLERS = 10_000


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per caller: `take(caller)` is 0.0 when a token was taken, else the
    seconds until one is back."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        max_callers: int = DEFAULT_MAX_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be more than zero")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_second = per_second
        self.burst = burst
        self.max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: str) -> float:
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_second: float,
        burst: int,
        max_callers: int = DEFAULT_MAX_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_second, burst, max_callers=max_callers, clock=clock)
        self._proven: OrderedDict[str, None] = OrderedDict()  # callers a non-401 answer met

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        who = caller(scope)
        wait = self.buckets.take(who)
        if wait <= 0.0 and who.startswith("key:") and who not in self._proven:
            wait = self.buckets.take(f"unproven-from-{client_ip(scope)}")
        if wait <= 0.0:
            if not who.startswith("key:"):
                await self.app(scope, receive, send)
                return

            async def noting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self._note(who, accepted=message["status"] != 401)
                await send(message)

            await self.app(scope, receive, noting_send)
            return
        seconds = max(1, math.ceil(wait))
        problem = Problem(
            "rate-limited",
            f"Too many requests: this caller may send {self.buckets.per_second:g} requests a "
            f"second (bursts of {self.buckets.burst}); retry in {seconds} s. Nothing was done.",
            headers={
                "Retry-After": str(seconds),
                "RateLimit-Limit": str(self.buckets.burst),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(seconds),
            },
            extra={"retry_after_seconds": seconds},
        )
        await problem_response(problem)(scope, receive, send)

    def _note(self, who: str, *, accepted: bool) -> None:
        if not accepted:
            self._proven.pop(who, None)
            return
        self._proven[who] = None
        self._proven.move_to_end(who)
        while len(self._proven) > self.buckets.max_callers:
            self._proven.popitem(last=False)


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def caller(scope: Scope) -> str:
    """Who a request counts against: `key:<sha256 of the bearer token>` or `ip:<address>`."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                return "key:" + hashlib.sha256(token).hexdigest()
            break
    return f"ip:{client_ip(scope)}"
