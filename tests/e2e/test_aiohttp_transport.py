"""The sender's transport (`delivery.aiohttp_transport`) against real servers on 127.0.0.1: it
reaches targets only through addresses the policy has just checked, and every outcome of a
webhook POST is classified as with httpx's own transport."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from delivery.aiohttp_transport import GuardedAiohttpTransport
from delivery.http import RESPONSE_BODY_LIMIT, Exchange, post
from delivery.outcome import classify
from delivery.sender import make_client
from delivery.targets import RefusedTarget, TargetPolicy
from tests.fakes.receiver import Receiver, Reply, redirect, running_receiver, slow

HEADERS = {"webhook-id": "msg_1", "content-type": "application/json"}
BODY = b'{"type":"job.queued"}'


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


def _policy(answers: dict[str, list[str]], *, allow_private: bool) -> TargetPolicy:
    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    return TargetPolicy(allow_private=allow_private, resolver=resolver)


# Every test here that sends with `_send` runs both ways: through an httpx client over the
# transport, and straight through the transport as the sender does (`delivery.http.post`).
DIRECT = False


@pytest.fixture(autouse=True, params=["httpx client", "direct"])
def _path(request: pytest.FixtureRequest) -> Iterator[None]:
    global DIRECT
    DIRECT = request.param == "direct"
    yield
    DIRECT = False


def _send(url: str, *, policy: TargetPolicy | None = None, timeout: float = 5) -> Exchange:
    async def run() -> Exchange:
        transport = GuardedAiohttpTransport(policy or TargetPolicy(allow_private=True))
        if DIRECT:
            try:
                return await post(transport, url, headers=HEADERS, body=BODY, timeout=timeout)
            finally:
                await transport.aclose()
        async with httpx.AsyncClient(transport=transport) as client:
            return await post(client, url, headers=HEADERS, body=BODY, timeout=timeout)

    return asyncio.run(run())


def test_both_ways_send_the_same_request_and_say_the_same(receiver: Receiver) -> None:
    answer = Reply(500, {"x-answer": "one"}, body=b"boom" * 2000)
    receiver.script("/same", answer, answer)
    global DIRECT
    exchanges, received = [], []
    for direct in (False, True):
        DIRECT = direct
        exchanges.append(_send(receiver.url("/same")))
        received.append(receiver.wait_for(len(received) + 1, path="/same")[-1])
    through_httpx, direct_exchange = ({**vars(e), "latency_ms": None} for e in exchanges)
    assert direct_exchange == through_httpx
    assert len(through_httpx["response_body"]) == RESPONSE_BODY_LIMIT
    assert received[0].headers == received[1].headers
    assert received[0].body == received[1].body == BODY


def _port(receiver: Receiver) -> str:
    return receiver.base_url.rsplit(":", 1)[1]


def test_connects_to_the_checked_address_keeping_the_host_name(receiver: Receiver) -> None:
    policy = _policy({"hooks.test": ["127.0.0.1"]}, allow_private=True)

    exchange = _send(f"http://hooks.test:{_port(receiver)}/in", policy=policy)

    assert (exchange.status_code, exchange.error_class) == (200, None)
    (got,) = receiver.wait_for(1)
    assert got.headers["host"] == f"hooks.test:{_port(receiver)}"  # no real DNS knows it
    assert got.body == BODY
    assert got.headers["webhook-id"] == "msg_1"
    assert got.headers["accept-encoding"] == "identity"
    # what the receipt says was sent is what arrived
    assert exchange.request_headers["webhook-id"] == "msg_1"


@pytest.mark.parametrize(
    ("answers", "allow_private"),
    [
        (["127.0.0.1"], False),  # rebinding to loopback
        (["93.184.216.34", "127.0.0.1"], False),  # any forbidden answer refuses
        (["169.254.169.254"], True),  # metadata, even in dev mode
        (["::ffff:10.0.0.1"], False),  # IPv4 inside IPv6
    ],
)
def test_refuses_at_connect_time_before_any_byte_is_sent(
    receiver: Receiver, answers: list[str], allow_private: bool
) -> None:
    policy = _policy({"hooks.test": answers}, allow_private=allow_private)

    async def run() -> None:
        transport = GuardedAiohttpTransport(policy)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.post(f"https://hooks.test:{_port(receiver)}/in", content=b"{}")

    with pytest.raises(RefusedTarget) as caught:
        asyncio.run(run())

    assert classify(None, caught.value) == "refused_target"
    assert receiver.requests == []


def test_every_new_connection_is_resolved_and_checked_again(receiver: Receiver) -> None:
    answers = {"hooks.test": ["127.0.0.1"]}
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[host]

    policy = TargetPolicy(allow_private=True, resolver=resolver)
    url = f"http://hooks.test:{_port(receiver)}/in"

    async def run() -> tuple[Exchange, Exchange]:
        transport = GuardedAiohttpTransport(policy, limits=httpx.Limits(keepalive_expiry=0.01))
        async with httpx.AsyncClient(transport=transport) as client:
            first = await post(client, url, headers=HEADERS, body=BODY, timeout=5)
            await asyncio.sleep(0.2)  # the kept-alive connection expires
            answers["hooks.test"] = ["169.254.169.254"]  # the name now points at metadata
            second = await post(client, url, headers=HEADERS, body=BODY, timeout=5)
            return first, second

    first, second = asyncio.run(run())
    assert first.error_class is None
    assert second.error_class == "refused_target"
    assert "metadata" in (second.error or "")
    assert len(receiver.wait_for(1)) == 1
    assert calls == ["hooks.test", "hooks.test"]


def test_url_checks_come_first() -> None:
    exchange = _send("http://169.254.169.254/latest/meta-data/")
    assert exchange.error_class == "refused_target"
    assert exchange.error == "target refused: 169.254.169.254 is a cloud metadata address"
    strict = _send("http://127.0.0.1:9/x", policy=TargetPolicy(allow_private=False))
    assert strict.error == "target refused: plain http is not allowed; use https"


@pytest.mark.parametrize(
    ("reply", "error_class", "status"),
    [
        (Reply(204), None, 204),
        (Reply(500, body=b"boom"), "http_status", 500),
        (Reply(429, {"retry-after": "3"}), "rate_limited", 429),
        (redirect("https://elsewhere.example/", 302), "redirect", 302),
        (slow(2.0), "timeout", None),
    ],
)
def test_outcomes_are_classified(
    receiver: Receiver, reply: Reply, error_class: str | None, status: int | None
) -> None:
    receiver.script("/a", reply)

    exchange = _send(receiver.url("/a"), timeout=0.5)

    assert (exchange.error_class, exchange.status_code) == (error_class, status)
    if status == 429:
        assert exchange.response_headers["retry-after"] == "3"
    if status == 500:
        assert exchange.response_body == "boom"
        assert exchange.error == "the endpoint answered 500 Internal Server Error"
    if status == 302:
        assert exchange.error == (
            "the endpoint answered 302 Found to https://elsewhere.example/ "
            "(redirects are not followed)"
        )
    assert len(receiver.wait_for(1, path="/a")) == 1  # never followed, never retried


def test_a_refused_connection_is_a_connection_failure() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exchange = _send(f"http://127.0.0.1:{port}/x")
    assert (exchange.error_class, exchange.status_code) == ("connection", None)
    assert exchange.error is not None and exchange.error.startswith("ConnectError")


def test_a_peer_closing_without_an_answer_is_a_connection_failure() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def accept_and_close() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        exchange = _send(f"http://127.0.0.1:{port}/x")
    finally:
        thread.join(timeout=5)
        server.close()
    assert (exchange.error_class, exchange.status_code) == ("connection", None)


def test_a_failed_handshake_is_a_tls_failure() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def speak_plain_text() -> None:  # not TLS at all: the handshake fails
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=speak_plain_text, daemon=True)
    thread.start()
    try:
        exchange = _send(f"https://127.0.0.1:{port}/x", timeout=2)
    finally:
        thread.join(timeout=5)
        server.close()
    assert (exchange.error_class, exchange.status_code) == ("tls", None)


def test_a_long_answer_is_cut_at_the_limit(receiver: Receiver) -> None:
    receiver.script("/big", Reply(200, body=b"x" * (RESPONSE_BODY_LIMIT * 50)), then=Reply(201))

    async def run() -> tuple[Exchange, Exchange]:
        transport = GuardedAiohttpTransport(TargetPolicy(allow_private=True))
        async with httpx.AsyncClient(transport=transport) as client:
            big = await post(client, receiver.url("/big"), headers=HEADERS, body=BODY, timeout=5)
            after = await post(client, receiver.url("/big"), headers=HEADERS, body=BODY, timeout=5)
            return big, after

    big, after = asyncio.run(run())
    assert big.error_class is None
    assert len(big.response_body) == RESPONSE_BODY_LIMIT
    assert after.status_code == 201  # the cut connection was not reused half-read


def test_the_senders_client_uses_this_transport_and_sizes_its_pool() -> None:
    client = make_client(concurrency=7, allow_private_targets=False)
    transport = client._transport
    assert isinstance(transport, GuardedAiohttpTransport)
    assert transport.policy.allow_private is False
    assert transport._limits.max_connections == 7
    assert client.follow_redirects is False
    asyncio.run(client.aclose())


def test_the_senders_client_never_sends_back_a_cookie_an_endpoint_set(receiver: Receiver) -> None:
    """One client serves every tenant: a cookie set by one endpoint's answer must not reach a
    later request to the same host (another tenant's endpoint at /b)."""
    receiver.script("/a", Reply(200, headers={"set-cookie": "session=tenant-one; Path=/"}))

    # Both ways: the httpx client over the transport, and the transport itself as the sender
    # uses it, there with a host name (aiohttp's own jar would ignore a cookie from an IP).
    base = f"http://hooks.test:{_port(receiver)}" if DIRECT else receiver.base_url

    async def run() -> None:
        client = (
            GuardedAiohttpTransport(_policy({"hooks.test": ["127.0.0.1"]}, allow_private=True))
            if DIRECT
            else make_client(concurrency=2, allow_private_targets=True)
        )
        try:
            for path in ("/a", "/a", "/b"):
                exchange = await post(client, base + path, headers=HEADERS, body=BODY, timeout=5)
                assert exchange.error_class is None
            if isinstance(client, httpx.AsyncClient):
                assert not list(client.cookies.jar)
        finally:
            await client.aclose()

    asyncio.run(run())
    received = receiver.wait_for(3)
    assert [r.headers.get("cookie") for r in received] == [None, None, None]
