"""The SSRF guard: which webhook URLs and addresses are refused, with which reason.

No real DNS: resolution goes through an injected resolver (only `localhost`, answered by the
hosts file, uses the system resolver), and the guarded transport through a fake network backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx
import pytest

from delivery.outcome import classify
from delivery.targets import (
    GuardedTransport,
    ParsedTarget,
    RefusedTarget,
    TargetPolicy,
    address_problem,
)

STRICT = TargetPolicy(allow_private=False)
DEV = TargetPolicy(allow_private=True)

# (url, refused in production because..., refused in dev mode because...); None: allowed
URL_TABLE: list[tuple[str, str | None, str | None]] = [
    ("https://example.com/hooks", None, None),
    ("https://Hooks.Example.COM:8443/in?x=1", None, None),
    ("https://93.184.216.34/in", None, None),
    ("https://[2606:4700::1111]/in", None, None),
    ("https://[::ffff:93.184.216.34]/in", None, None),  # mapped public address
    ("https://[64:ff9b::5db8:d822]/in", None, None),  # NAT64 of a public address
    ("https://münchen.example/in", None, None),  # IDNA
    ("http://example.com/hooks", "plain http is not allowed", None),
    ("http://10.0.0.1/", "plain http", None),
    ("https://10.0.0.1/", "10.0.0.1 is a private address", None),
    ("https://172.16.5.4/", "a private address", None),
    ("https://192.168.1.1/", "a private address", None),
    ("https://[fd12:3456::1]/", "a private address", None),
    ("https://100.64.0.1/", "shared (carrier-grade NAT)", None),
    ("https://127.0.0.1:8080/", "127.0.0.1 is a loopback address", None),
    ("https://[::1]/", "::1 is a loopback address", None),
    ("http://[::1]/", "plain http", None),
    ("https://localhost/", "localhost is a loopback name", None),
    ("https://api.localhost./", "a loopback name", None),
    ("http://localhost:9000/", "plain http", None),
    ("https://169.254.10.10/", "a link-local address", None),
    ("https://[fe80::1%25eth0]/", "a link-local address", None),
    ("https://[::ffff:127.0.0.1]/", "carries 127.0.0.1, a loopback address", None),
    ("https://[::ffff:10.1.1.1]/", "carries 10.1.1.1, a private address", None),
    ("https://[64:ff9b::7f00:1]/", "carries 127.0.0.1, a loopback address", None),
    ("https://[2002:7f00:1::]/", "carries 127.0.0.1, a loopback address", None),
    ("https://192.0.2.10/", "a private address", None),  # documentation range
    # Refused in dev mode too:
    ("http://169.254.169.254/latest/meta-data/", "plain http", "a cloud metadata address"),
    ("https://169.254.169.254/latest", "a cloud metadata address", "a cloud metadata address"),
    ("https://169.254.170.2/v2/credentials", "cloud metadata", "cloud metadata"),
    ("https://100.100.100.200/", "cloud metadata", "cloud metadata"),
    ("https://[fd00:ec2::254]/", "cloud metadata", "cloud metadata"),
    ("https://[::ffff:169.254.169.254]/", "carries 169.254.169.254, a cloud metadata", "metadata"),
    ("http://metadata.google.internal/", "plain http", "a cloud metadata service"),
    ("https://metadata.google.internal./x", "cloud metadata service", "cloud metadata service"),
    ("http://0.0.0.0/", "plain http", "the unspecified address"),
    ("https://0.0.0.0/", "the unspecified address", "the unspecified address"),
    ("https://[::]/", "the unspecified address", "the unspecified address"),
    ("https://0.1.2.3/", "a 'this network' address", "a 'this network' address"),
    ("https://224.0.0.1/", "a multicast address", "a multicast address"),
    ("https://[ff02::1]/", "a multicast address", "a multicast address"),
    ("https://240.0.0.1/", "a reserved address", "a reserved address"),
    ("https://255.255.255.255/", "a reserved address", "a reserved address"),
    ("https://[::127.0.0.1]/", "a reserved address", "a reserved address"),  # IPv4-compatible
    ("ftp://x/", "the scheme 'ftp' is not allowed", "the scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed", "scheme 'file' is not allowed"),
    ("gopher://x:70/", "scheme 'gopher'", "scheme 'gopher'"),
    ("example.com/hooks", "no scheme", "no scheme"),
    ("https://user:pw@host.example/", "user name or password", "user name or password"),
    ("https://user@host.example/", "user name or password", "user name or password"),
    ("https:///path", "no host", "no host"),
    ("https://host.example:0/", "port 0 is out of range", "port 0 is out of range"),
    ("https://host.example:99999/", "port 99999", "port 99999"),
    ("https://2130706433/", "four decimal numbers", "four decimal numbers"),  # 127.0.0.1
    ("https://0x7f.1/", "four decimal numbers", "four decimal numbers"),
    ("https://127.1/", "four decimal numbers", "four decimal numbers"),
    ("https://1.2.3.4.5/", "four decimal numbers", "four decimal numbers"),
    ("https://exa mple.com/", "not a valid host name", "not a valid host name"),
    ("https://evil.com\\@good.com/", "user name or password", "user name or password"),
    ("https://evil.com%5C.good.com/", "not a valid host name", "not a valid host name"),
    ("https://[::1/", "not a valid URL", "not a valid URL"),
    ("https://example.com/" + "a" * 2048, "longer than 2048", "longer than 2048"),
]


@pytest.mark.parametrize(("url", "strict", "dev"), URL_TABLE)
def test_check_url(url: str, strict: str | None, dev: str | None) -> None:
    for policy, reason in ((STRICT, strict), (DEV, dev)):
        if reason is None:
            assert isinstance(policy.check_url(url), ParsedTarget)
        else:
            with pytest.raises(RefusedTarget, match=re.escape(reason)):
                policy.check_url(url)


def test_check_url_returns_the_normalised_parts() -> None:
    target = STRICT.check_url("https://Hooks.Example.COM/in?x=1")
    assert target == ParsedTarget(
        url="https://hooks.example.com/in?x=1",
        scheme="https",
        host="hooks.example.com",
        port=443,
        address=None,
    )
    literal = DEV.check_url("http://[::1]:8080/")
    assert (literal.host, literal.port, str(literal.address)) == ("::1", 8080, "::1")
    assert STRICT.check_url("https://münchen.example/").host == "xn--mnchen-3ya.example"


def test_a_remembered_answer_is_the_policy_s_own_and_refusals_are_not_remembered() -> None:
    """`check_url` keeps accepted URLs' answers: each policy gets its own, in either order,
    and a refused URL is refused on every call."""
    url = "http://127.0.0.1:8080/hooks"
    assert DEV.check_url(url).address == ipaddress.ip_address("127.0.0.1")
    for _ in range(2):
        with pytest.raises(RefusedTarget, match="plain http"):
            STRICT.check_url(url)
    assert DEV.check_url(url) == DEV.check_url(url)
    other = "http://10.1.2.3/x"
    with pytest.raises(RefusedTarget):
        STRICT.check_url(other)
    assert DEV.check_url(other).host == "10.1.2.3"
    with pytest.raises(RefusedTarget):
        STRICT.check_url(other)


def test_refused_target_has_a_reason_and_a_default_message() -> None:
    assert RefusedTarget("nope").reason == "nope"
    assert str(RefusedTarget()) == "This webhook target is not allowed."


@pytest.mark.parametrize(
    ("address", "allow_private", "problem"),
    [
        ("8.8.8.8", False, None),
        ("10.0.0.1", True, None),
        ("127.0.0.1", True, None),
        ("::1", True, None),
        ("169.254.1.1", True, None),
        ("169.254.169.254", True, "a cloud metadata address"),
        ("fd00:ec2::254", True, "a cloud metadata address"),
        ("0.0.0.0", True, "the unspecified address"),
        ("::ffff:169.254.169.254", True, "it carries 169.254.169.254, a cloud metadata address"),
        ("::ffff:8.8.8.8", False, None),
    ],
)
def test_address_problem(address: str, allow_private: bool, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address), allow_private=allow_private) == problem


def test_check_address_names_the_address() -> None:
    with pytest.raises(RefusedTarget, match=r"^10\.9\.8\.7 is a private address$"):
        STRICT.check_address("10.9.8.7")
    with pytest.raises(RefusedTarget, match="not an IP address"):
        STRICT.check_address("example.com")
    assert str(DEV.check_address("10.9.8.7")) == "10.9.8.7"


# -- resolving --


def fake_dns(answers: dict[str, Sequence[str]], *, allow_private: bool = False) -> TargetPolicy:
    async def resolver(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return TargetPolicy(allow_private=allow_private, resolver=resolver)


@pytest.mark.parametrize(
    ("answers", "allow_private", "reason"),
    [
        (["93.184.216.34"], False, None),
        (["93.184.216.34", "2606:2800:220:1::1"], False, None),
        (["10.0.0.1"], True, None),
        (["10.0.0.1"], False, "hooks.example.com resolves to 10.0.0.1, a private address"),
        (["93.184.216.34", "127.0.0.1"], False, "resolves to 127.0.0.1, a loopback address"),
        (["::ffff:127.0.0.1"], False, "carries 127.0.0.1, a loopback address"),
        (["169.254.169.254"], True, "resolves to 169.254.169.254, a cloud metadata address"),
        (["93.184.216.34", "fd00:ec2::254"], True, "a cloud metadata address"),
        (["not-an-address"], True, "not an address"),
    ],
)
def test_resolve_and_check_refuses_if_any_answer_is_forbidden(
    answers: list[str], allow_private: bool, reason: str | None
) -> None:
    policy = fake_dns({"hooks.example.com": answers}, allow_private=allow_private)
    resolving = policy.resolve_and_check("hooks.example.com", 443)
    if reason is None:
        assert asyncio.run(resolving) == answers
    else:
        with pytest.raises(RefusedTarget, match=reason):
            asyncio.run(resolving)


def test_resolve_and_check_takes_ip_literals_without_dns() -> None:
    policy = fake_dns({})
    assert asyncio.run(policy.resolve_and_check("93.184.216.34", 443)) == ["93.184.216.34"]
    with pytest.raises(RefusedTarget, match="loopback"):
        asyncio.run(policy.resolve_and_check("::1", 443))
    with pytest.raises(RefusedTarget, match="metadata"):
        asyncio.run(fake_dns({}, allow_private=True).resolve_and_check("169.254.169.254", 80))
    with pytest.raises(RefusedTarget, match="four decimal numbers"):
        asyncio.run(policy.resolve_and_check("2130706433", 443))


def test_a_name_that_does_not_resolve_is_an_os_error_not_a_refusal() -> None:
    with pytest.raises(socket.gaierror):
        asyncio.run(fake_dns({}).resolve_and_check("nowhere.example", 443))
    with pytest.raises(OSError, match="did not resolve to any address"):
        asyncio.run(fake_dns({"empty.example": []}).resolve_and_check("empty.example", 443))


def test_localhost_resolves_to_loopback_with_the_system_resolver() -> None:
    addresses = asyncio.run(DEV.resolve_and_check("localhost", 80))
    assert addresses
    assert all(a in ("127.0.0.1", "::1") for a in addresses)
    with pytest.raises(RefusedTarget, match="loopback"):
        asyncio.run(STRICT.resolve_and_check("localhost", 443))


# -- the guarded transport, over a fake network --


class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.written = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        chunk, self.answer = self.answer[:max_bytes], self.answer[max_bytes:]
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written += buffer

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return None


class FakeNetwork(httpcore.AsyncNetworkBackend):
    """Answers 204 on every connection, except to addresses listed in `unreachable`."""

    def __init__(self, unreachable: Iterable[str] = ()) -> None:
        self.unreachable = set(unreachable)
        self.connects: list[tuple[str, int]] = []
        self.streams: list[FakeStream] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host in self.unreachable:
            raise httpcore.ConnectError(f"{host} is unreachable")
        stream = FakeStream(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.streams.append(stream)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def post(policy: TargetPolicy, network: FakeNetwork, url: str) -> httpx.Response:
    transport = GuardedTransport(policy, network_backend=network)
    async with httpx.AsyncClient(transport=transport, timeout=2) as http:
        return await http.post(url, content=b"{}")


def test_transport_connects_to_the_checked_address_and_keeps_the_host_name() -> None:
    network = FakeNetwork()
    policy = fake_dns({"hooks.test": ["10.1.2.3"]}, allow_private=True)

    answer = asyncio.run(post(policy, network, "http://hooks.test:8080/in"))

    assert answer.status_code == 204
    assert network.connects == [("10.1.2.3", 8080)]
    assert b"Host: hooks.test:8080\r\n" in network.streams[0].written


def test_transport_tries_the_next_checked_address_when_one_is_unreachable() -> None:
    network = FakeNetwork(unreachable={"10.1.2.3"})
    policy = fake_dns({"hooks.test": ["10.1.2.3", "10.1.2.4"]}, allow_private=True)

    answer = asyncio.run(post(policy, network, "http://hooks.test/in"))

    assert answer.status_code == 204
    assert network.connects == [("10.1.2.3", 80), ("10.1.2.4", 80)]


@pytest.mark.parametrize(
    ("url", "answers", "allow_private", "reason"),
    [
        ("https://hooks.test/in", ["127.0.0.1"], False, "loopback"),  # DNS rebinding
        ("https://hooks.test/in", ["93.184.216.34", "10.0.0.1"], False, "private"),
        ("http://hooks.test/in", ["169.254.169.254"], True, "metadata"),
        ("http://hooks.test/in", ["93.184.216.34"], False, "plain http"),
        ("https://10.0.0.1/in", [], False, "private"),
        ("https://[::ffff:127.0.0.1]/in", [], False, "loopback"),
    ],
)
def test_transport_refuses_without_connecting(
    url: str, answers: list[str], allow_private: bool, reason: str
) -> None:
    network = FakeNetwork()
    policy = fake_dns({"hooks.test": answers}, allow_private=allow_private)

    with pytest.raises(RefusedTarget, match=reason) as caught:
        asyncio.run(post(policy, network, url))

    assert network.connects == []
    assert classify(None, caught.value) == "refused_target"


def test_transport_turns_dns_failures_into_connect_errors() -> None:
    network = FakeNetwork()
    with pytest.raises(httpx.ConnectError, match=r"cannot resolve nowhere\.test") as caught:
        asyncio.run(post(fake_dns({}), network, "https://nowhere.test/in"))
    assert classify(None, caught.value) == "connection"
    assert network.connects == []


def test_transport_counts_slow_dns_against_the_connect_timeout() -> None:
    async def stuck(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["93.184.216.34"]

    async def send() -> None:
        transport = GuardedTransport(TargetPolicy(resolver=stuck), network_backend=FakeNetwork())
        async with httpx.AsyncClient(transport=transport, timeout=0.1) as http:
            await http.post("https://slow-dns.test/in")

    with pytest.raises(httpx.ConnectTimeout) as caught:
        asyncio.run(send())
    assert classify(None, caught.value) == "timeout"
