"""The recording webhook receiver answers as scripted, over real HTTP; and the guarded transport
reaches it only through checked addresses."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from delivery import signing
from delivery.outcome import classify
from delivery.targets import GuardedTransport, RefusedTarget, TargetPolicy
from tests.fakes.receiver import (
    RESET,
    Receiver,
    Reply,
    redirect,
    running_receiver,
    slow,
)
from tests.fakes.receiver import webhook_receiver as webhook_receiver  # the fixture


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


@pytest.fixture
def client(receiver: Receiver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=receiver.base_url, timeout=5) as http:
        yield http


def test_records_every_request_with_headers_and_body(
    receiver: Receiver, client: httpx.Client
) -> None:
    body = b'{"type":"webhook.test"}'
    headers = signing.webhook_headers([signing.new_secret()], "msg_1", int(time.time()), body)
    answer = client.post("/hooks/a?x=1", content=body, headers=headers)

    assert answer.status_code == 200
    (got,) = receiver.wait_for(1)
    assert (got.method, got.path, got.query, got.body) == ("POST", "/hooks/a", "x=1", body)
    assert got.headers["webhook-id"] == "msg_1"
    assert got.headers["user-agent"] == signing.USER_AGENT
    assert got.json() == {"type": "webhook.test"}
    assert receiver.requests_for("/hooks/b") == []


def test_scripts_answer_in_order_per_path_then_the_default(
    receiver: Receiver, client: httpx.Client
) -> None:
    receiver.script(
        "/a", Reply(500, body=b"boom"), Reply(429, {"retry-after": "7"}), then=Reply(204)
    )
    receiver.script("/b", Reply(410))

    statuses = [client.post("/a").status_code for _ in range(4)]
    assert statuses == [500, 429, 204, 204]
    assert [client.post("/b").status_code for _ in range(2)] == [410, 200]
    assert len(receiver.requests_for("/a")) == 4
    assert len(receiver.wait_for(6)) == 6


def test_a_scripted_answer_carries_headers_and_body(
    receiver: Receiver, client: httpx.Client
) -> None:
    receiver.script("/a", Reply(429, {"retry-after": "7"}, b"slow down"))
    answer = client.post("/a")
    assert (answer.status_code, answer.headers["retry-after"], answer.content) == (
        429,
        "7",
        b"slow down",
    )


def test_redirects_are_answered_not_followed(receiver: Receiver, client: httpx.Client) -> None:
    receiver.script("/a", redirect("https://elsewhere.example/x"))
    answer = client.post("/a")
    assert answer.status_code == 307
    assert answer.headers["location"] == "https://elsewhere.example/x"
    assert classify(answer.status_code, None) == "redirect"
    assert len(receiver.requests) == 1


def test_a_slow_answer_times_the_client_out_and_stop_does_not_wait_for_it() -> None:
    receiver = Receiver().start()
    try:
        receiver.script("/a", slow(30))
        http = httpx.Client(base_url=receiver.base_url, timeout=0.3)
        with http, pytest.raises(httpx.ReadTimeout) as caught:
            http.post("/a")
        assert classify(None, caught.value) == "timeout"
        assert len(receiver.requests_for("/a")) == 1  # recorded on arrival, before the delay
    finally:
        began = time.monotonic()
        receiver.stop()
    assert time.monotonic() - began < 5


def test_stop_closes_a_connection_whose_request_is_still_in_flight() -> None:
    """A request whose body never finishes keeps its connection busy through uvicorn's
    shutdown, which (with `force_exit`) does not wait for it: the receiver closes it before its
    loop ends, instead of leaving the socket to the garbage collector."""
    receiver = Receiver().start()
    assert receiver._server is not None
    host, port = receiver.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as client:
        client.sendall(b"POST /half HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n0123")
        deadline = time.monotonic() + 5
        while not any(
            getattr(c, "cycle", None) is not None for c in receiver._server.server_state.connections
        ):
            assert time.monotonic() < deadline, "the request did not reach the receiver"
            time.sleep(0.01)
        receiver.stop()
        try:  # closed (a FIN, or an RST), not left open until a collection
            answer = client.recv(1)
        except ConnectionResetError:
            answer = b""
        assert answer == b""


def test_reset_aborts_the_connection_without_an_answer(
    receiver: Receiver, client: httpx.Client
) -> None:
    receiver.script("/a", RESET)
    with pytest.raises(httpx.TransportError) as caught:
        client.post("/a", content=b"{}")
    assert classify(None, caught.value) == "connection"
    assert client.post("/a").status_code == 200  # the next connection is served normally
    assert len(receiver.wait_for(2, path="/a")) == 2


def test_wait_for_wakes_when_requests_arrive_from_another_thread(receiver: Receiver) -> None:
    def send() -> None:
        with httpx.Client(base_url=receiver.base_url, timeout=5) as http:
            for _ in range(3):
                http.post("/late")

    sender = threading.Thread(target=send)
    sender.start()
    got = receiver.wait_for(3, timeout=10, path="/late")
    sender.join()
    assert [r.path for r in got] == ["/late"] * 3


def test_wait_for_fails_with_what_arrived(receiver: Receiver, client: httpx.Client) -> None:
    client.post("/only-one")
    with pytest.raises(AssertionError, match=r"expected 2 requests within 0.2 s, got 1"):
        receiver.wait_for(2, timeout=0.2)


def test_the_fixture_factory_starts_receivers(
    webhook_receiver: Callable[..., Receiver],
) -> None:
    first = webhook_receiver(default=Reply(202))
    second = webhook_receiver()
    assert first.base_url != second.base_url
    assert httpx.post(first.url("/x"), timeout=5).status_code == 202
    assert httpx.post(second.url("/x"), timeout=5).status_code == 200


# -- the guarded transport against a real server --


def _policy(answers: dict[str, list[str]], *, allow_private: bool) -> TargetPolicy:
    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    return TargetPolicy(allow_private=allow_private, resolver=resolver)


async def _post(transport: GuardedTransport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        return await http.post(url, content=b"{}")


def test_guarded_transport_connects_to_the_checked_address_keeping_the_host_name(
    receiver: Receiver,
) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    policy = _policy({"hooks.test": ["127.0.0.1"]}, allow_private=True)

    answer = asyncio.run(_post(GuardedTransport(policy), f"http://hooks.test:{port}/in"))

    assert answer.status_code == 200
    (got,) = receiver.wait_for(1)
    assert got.headers["host"] == f"hooks.test:{port}"  # no real DNS knows hooks.test


@pytest.mark.parametrize(
    ("answers", "allow_private"),
    [
        (["127.0.0.1"], False),  # rebinding to loopback
        (["93.184.216.34", "127.0.0.1"], False),  # any forbidden answer refuses
        (["169.254.169.254"], True),  # metadata, even in dev mode
    ],
)
def test_guarded_transport_refuses_before_connecting(
    receiver: Receiver, answers: list[str], allow_private: bool
) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    policy = _policy({"hooks.test": answers}, allow_private=allow_private)

    with pytest.raises(RefusedTarget) as caught:
        asyncio.run(_post(GuardedTransport(policy), f"https://hooks.test:{port}/in"))

    assert classify(None, caught.value) == "refused_target"
    assert receiver.requests == []
