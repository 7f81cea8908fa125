"""Which webhook target URLs may be called: the guard against server-side request forgery.

What this module is for: a tenant registers a URL and we POST to it from inside our network.
Without a guard, `http://169.254.169.254/latest/meta-data/` or `http://10.0.0.5:5432/` turns
the webhook sender into a proxy into our own infrastructure. `TargetPolicy` decides:

- Always refused: schemes other than http and https, user names or passwords in the URL, an
  empty host, ports outside 1..65535, hosts that are neither a DNS name nor a canonical IP
  literal (`http://2130706433/`, `http://0x7f.1/`), and addresses that are never a valid
  unicast target (unspecified, multicast, reserved, broadcast, 0.0.0.0/8), and cloud metadata
  services (`METADATA_ADDRESSES`, `METADATA_HOSTS`) - the latter even with `allow_private`.
- Refused unless `allow_private` (the embedded dev mode): plain `http`, loopback, private
  (RFC 1918, fc00::/7), link-local, shared (100.64.0.0/10) and other non-global addresses, and
  `localhost` names. IPv4 addresses inside IPv6 (IPv4-mapped `::ffff:a.b.c.d`, NAT64
  `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they carry.

DNS rebinding: checking a name and then letting the HTTP client resolve it again leaves a
window in which a hostile DNS server answers first with a public address, then with a private
one (TTL 0). So the check must hold for the address actually connected to: `resolve_and_check`
resolves once, refuses if ANY answer is forbidden (not only the first: clients try them all)
and returns the checked addresses, and `GuardedTransport` connects to exactly those, keeping the
host name for TLS (SNI and certificate verification), the `Host` header and the connection-pool
key. A kept-alive connection was checked when it was opened. Redirects are never followed by the
sender; if they were, each hop would go through the transport and be checked again.

httpx takes no network backend, so `GuardedTransport` swaps the connection pool inside an
`httpx.AsyncHTTPTransport` (its private `_pool`) for one whose backend resolves and checks; the
unit tests drive requests through it, so an httpx upgrade that breaks this fails loudly.
Deployments that send through an egress proxy (e.g. stripe/smokescreen) may rely on it as well;
this guard still refuses early, with a reason the endpoint's owner can read.

What it must never do: open a connection to an address it has not just checked, follow
redirects, use proxies from the environment, or allow a metadata address in any mode.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA_ADDRESSES: frozenset[Address] = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


class RefusedTarget(Exception):
    """This webhook target is not allowed."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.reason)


@dataclass(frozen=True)
class ParsedTarget:
    """A checked target URL. `host` is lower-case ASCII (IDNA), IPv6 without brackets."""

    url: str
    scheme: str
    host: str
    port: int
    address: Address | None  # the host, when it is an IP literal


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host:port (TCP), in its order, no repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_problem(address: Address, *, allow_private: bool) -> str | None:
    """Why `address` may not be a webhook target, or None when it may."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        problem = address_problem(embedded, allow_private=allow_private)
        return f"it carries {embedded}, {problem}" if problem else None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK:
        return "a 'this network' address"
    if address.is_loopback:
        kind = "a loopback address"
    elif address.is_link_local:
        kind = "a link-local address"
    elif isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        kind = "a shared (carrier-grade NAT) address"
    elif address.is_reserved:
        return "a reserved address"
    elif address.is_private:
        kind = "a private address"
    elif not address.is_global:
        kind = "not a public address"
    else:
        return None
    return None if allow_private else kind


def _ip_literal(host: str) -> Address | None:
    """The address if `host` is an IP literal; RefusedTarget if it only looks like one."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(unquote(host))
        except ValueError:
            raise RefusedTarget(f"{host!r} is not a valid IPv6 address") from None
    name = host.removesuffix(".")
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(name)
        except ValueError:
            raise RefusedTarget(
                f"{host!r} is not a valid host; write IPv4 addresses as four decimal numbers"
            ) from None
    return None


def _check_host_name(host: str) -> None:
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise RefusedTarget(f"{host!r} is not a valid host name")


@dataclass(frozen=True)
class TargetPolicy:
    """Which targets may be called. `resolver` is replaceable, so tests need no real DNS."""

    allow_private: bool = False
    resolver: Resolver = field(default=system_resolver, repr=False, compare=False)

    def check_address(self, address: str | Address) -> Address:
        """The address, if it may be a target; RefusedTarget naming the reason otherwise."""
        if isinstance(address, str):
            try:
                address = ipaddress.ip_address(address)
            except ValueError:
                raise RefusedTarget(f"{address!r} is not an IP address") from None
        problem = address_problem(address, allow_private=self.allow_private)
        if problem is not None:
            raise RefusedTarget(f"{address} is {problem}")
        return address

    def check_url(self, url: str) -> ParsedTarget:
        """Check everything that can be checked without DNS; RefusedTarget with the reason.
        A function of the URL and `allow_private` alone, so an accepted URL's answer is
        remembered (`_accepted`: the sender checks its endpoints' few URLs on every attempt,
        and parsing one cost about a tenth of the sender's loop)."""
        return _accepted(url, self.allow_private)

    def _check_url(self, url: str) -> ParsedTarget:
        if len(url) > MAX_URL_LENGTH:
            raise RefusedTarget(f"the URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parsed = httpx.URL(url)
            host = parsed.raw_host.decode("ascii").lower()
        except (httpx.InvalidURL, TypeError, UnicodeError):
            raise RefusedTarget("not a valid URL") from None
        scheme = parsed.scheme
        if scheme not in DEFAULT_PORTS:
            if not scheme:
                raise RefusedTarget("the URL has no scheme; use https://")
            raise RefusedTarget(f"the scheme {scheme!r} is not allowed; use https")
        if parsed.userinfo:
            raise RefusedTarget("a user name or password in the URL is not allowed")
        if not host:
            raise RefusedTarget("the URL has no host")
        if scheme == "http" and not self.allow_private:
            raise RefusedTarget("plain http is not allowed; use https")
        port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
        if not 1 <= port <= 65535:
            raise RefusedTarget(f"port {port} is out of range")
        address = _ip_literal(host)
        if address is not None:
            self.check_address(address)
        else:
            _check_host_name(host)
            self._check_name(host)
        return ParsedTarget(str(parsed), scheme, host, port, address)

    def _check_name(self, host: str) -> None:
        name = host.removesuffix(".").lower()
        if name in METADATA_HOSTS:
            raise RefusedTarget(f"{host} is a cloud metadata service")
        if not self.allow_private and (name == "localhost" or name.endswith(".localhost")):
            raise RefusedTarget(f"{host} is a loopback name")

    async def resolve_and_check(self, host: str, port: int) -> list[str]:
        """Resolve `host` once and check every answer; return the addresses to connect to.

        Refuses (RefusedTarget) when ANY resolved address is forbidden. A host that does not
        resolve raises OSError (`socket.gaierror`): a connection failure, not a refusal.
        """
        address = _ip_literal(host.lower())
        if address is not None:
            return [str(self.check_address(address))]
        self._check_name(host)
        answers = list(await self.resolver(host, port))
        if not answers:
            raise OSError(f"{host} did not resolve to any address")
        for answer in answers:
            try:
                resolved = ipaddress.ip_address(answer)
            except ValueError:
                raise RefusedTarget(f"{host} resolved to {answer!r}, not an address") from None
            problem = address_problem(resolved, allow_private=self.allow_private)
            if problem is not None:
                raise RefusedTarget(f"{host} resolves to {resolved}, {problem}")
        return answers


class _CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy has just resolved and checked."""

    def __init__(self, policy: TargetPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._policy.resolve_and_check(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        options = list(socket_options) if socket_options is not None else None
        failure: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await self._inner.connect_tcp(
                    address, port, remaining, local_address, options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None  # resolve_and_check never returns an empty list
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedTarget("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that only talks to targets the policy allows.

    Before each request the URL is checked (`check_url`); each new connection resolves the host
    once, refuses if any answer is forbidden, and connects to one of the checked addresses, so
    a DNS answer that changes between check and connect cannot slip through. Refusals raise
    `RefusedTarget` (not an httpx error); DNS failures raise `httpx.ConnectError` and slow DNS
    `httpx.ConnectTimeout`, within the request's connect timeout. Environment proxies are not
    used. Use it as `httpx.AsyncClient(transport=GuardedTransport(policy))`.
    """

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._http = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
        # httpx takes no network backend, so its pool is replaced by one that connects through
        # the check; httpx keeps mapping httpcore errors and wrapping response streams.
        self._http._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedNetworkBackend(
                policy, network_backend or httpcore.AnyIOBackend()
            ),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.policy.check_url(str(request.url))
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


@functools.lru_cache(maxsize=4096)
def _accepted(url: str, allow_private: bool) -> ParsedTarget:
    """`TargetPolicy.check_url` for URLs it accepts (a refusal raises, and is not kept)."""
    return TargetPolicy(allow_private=allow_private)._check_url(url)
