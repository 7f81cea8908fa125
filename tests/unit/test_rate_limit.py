"""`api.rate_limit.RateLimit` with a manual clock: a client cannot buy fresh buckets with fresh
random tokens, and real keys that share one address do not limit each other."""

from __future__ import annotations

import asyncio
import secrets

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from api.rate_limit import RateLimit

GOOD = {f"good-{n}" for n in range(5)}


class Client:
    """Requests to an ASGI app, all from one client address."""

    def __init__(self, app: ASGIApp) -> None:
        self.transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))

    def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                return await c.get(path, headers=headers)

        return asyncio.run(send())


def _app(now: list[float]) -> Client:
    async def endpoint(request: Request) -> PlainTextResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return PlainTextResponse("ok" if token in GOOD else "no", 200 if token in GOOD else 401)

    app = RateLimit(
        Starlette(routes=[Route("/v1/jobs", endpoint)]),
        per_second=1.0,
        burst=3,
        clock=lambda: now[0],
    )
    return Client(app)


def _get(client: Client, token: str) -> int:
    return client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code


def test_fresh_random_tokens_share_their_addresss_bucket() -> None:
    now = [0.0]
    client = _app(now)
    statuses = [_get(client, secrets.token_hex(16)) for _ in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    refused = client.get("/v1/jobs", headers={"Authorization": "Bearer another"})
    assert refused.headers["Retry-After"] == "1"
    now[0] += 1.0  # one token back: one more guess, not a fresh burst
    assert [_get(client, secrets.token_hex(16)) for _ in range(2)] == [401, 429]


def test_accepted_keys_are_not_limited_by_each_other_or_by_guesses() -> None:
    now = [0.0]
    client = _app(now)
    assert [_get(client, f"good-{n}") for n in range(3)] == [200, 200, 200]  # 3 first uses
    assert _get(client, "good-3") == 429  # a 4th unproven token from this address: too many
    now[0] += 1.0
    assert _get(client, "good-3") == 200
    # proven keys now skip the address's bucket, whatever guesses come from it
    now[0] += 1.0
    assert [_get(client, secrets.token_hex(16)) for _ in range(3)] == [401, 429, 429]
    for n in range(4):
        assert [_get(client, f"good-{n}") for _ in range(2)] == [200, 200]


def test_a_key_answered_401_is_unproven_again() -> None:
    now = [0.0]
    client = _app(now)
    assert _get(client, "good-0") == 200
    GOOD.discard("good-0")  # the key was revoked
    try:
        assert [_get(client, "good-0") for _ in range(2)] == [401, 401]
        now[0] += 10.0  # buckets full again: the revoked key counts against the address
        assert [_get(client, "good-0") for _ in range(3)] == [401, 401, 401]
        assert _get(client, "good-1") == 429  # the address's unproven bucket is spent
    finally:
        GOOD.add("good-0")
