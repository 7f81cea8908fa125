"""Checking a webhook URL when an endpoint is registered or changed (the SSRF guard, early).

The delivery edge checks every target again when it connects (`delivery.targets`), so this
check is for the endpoint's owner: a URL that can never be delivered to is refused at once,
with the reason, as a 422 naming `url`. It checks what the URL says (scheme, host, literal
addresses, metadata and loopback names) and then what its host resolves to now: a name that
resolves to a private, loopback or metadata address is refused unless private targets are
allowed. A name that does not resolve (or not within `dns_timeout` seconds) is accepted: DNS
may not be set up yet, and the sender resolves and checks it again before every connection.
"""

from __future__ import annotations

import asyncio

from api.problems import Problem
from delivery.targets import RefusedTarget, Resolver, TargetPolicy, system_resolver

DNS_TIMEOUT_SECONDS = 3.0


class TargetCheck:
    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver | None = None,
        dns_timeout: float = DNS_TIMEOUT_SECONDS,
    ) -> None:
        self.policy = TargetPolicy(
            allow_private=allow_private, resolver=resolver or system_resolver
        )
        self.dns_timeout = dns_timeout

    async def check(self, url: str) -> bool:
        """Refuse (422 naming `url`) a target the guard refuses; True when its host resolved
        and every address was allowed, False when it did not resolve (accepted, see above)."""
        try:
            target = self.policy.check_url(url)
            if target.address is not None:
                return True
            async with asyncio.timeout(self.dns_timeout):
                await self.policy.resolve_and_check(target.host, target.port)
        except RefusedTarget as refused:
            reason = f"is not an allowed webhook target: {refused.reason}"
            raise Problem.parameter("url", reason, slug="validation-error") from None
        except (OSError, TimeoutError, UnicodeError):
            return False
        return True
