"""Who is calling: bearer API keys, their roles, and what each role may do.

`Authorization: Bearer <token>`. A tenant key's token is `jlk_<key_id>_<secret>`, checked
against the stored sha256 of its secret in constant time (`TenancyCommands.authenticate`).
The bootstrap admin key (`LEDGER_ADMIN_KEY`) is compared in constant time against its sha256,
the only form of it this module keeps. Roles:

- `admin`: every tenant; manages tenants and keys, reads and cancels/requeues any job, manages
  any tenant's webhook endpoints and deliveries. Admin keys belong to no tenant, so they cannot
  create jobs.
- `writer`: reads and writes its own tenant's jobs, webhook endpoints and deliveries.
- `reader`: reads its own tenant's jobs, endpoints and deliveries (auditors, support).

No key, an unknown key and a revoked key all answer 401; a role that may not do this, 403.

Tenant and admin keys from the store are cached in memory (`KeyCache`), keyed by the sha256 of
the whole token, never the token itself, for `LEDGER_API_KEY_CACHE_SECONDS` (default 5): a
status read then costs no key lookup. A key in use is read again in the background in the
last fifth of its entry's life, so a busy key's requests never all wait for one lookup when its
entry expires; a re-read that finds the key revoked drops it at once. A revocation through this
process's API takes effect at once here (`Authenticator.forget_key`); in *other* API processes
a revoked key keeps working for at most that many seconds, until its entry expires. 0 turns
the cache off (every request reads the key from the store). Only valid keys are cached;
unknown, wrong and revoked tokens are looked up every time. Concurrent requests with the same
uncached token share one lookup.

`GET /metrics` is outside the roles: Prometheus scrapers rarely carry API keys, so it is open
unless `LEDGER_METRICS_TOKEN` is set; then that one token (and nothing else) must be sent as
`Authorization: Bearer <token>`, compared in constant time like the admin key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import Request

from api.problems import Problem
from ledger.tenancy import ADMIN, READER, WRITER, ApiKey, key_actor

BOOTSTRAP_ADMIN_ID = "bootstrap-admin"
DEFAULT_KEY_CACHE_SECONDS = 5.0
KEY_CACHE_MAX_ENTRIES = 10_000
REFRESH_AHEAD = 0.2  # the share of a cached key's life in which a request starts its re-read
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="job-ledger"'}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer realm="job-ledger", error="invalid_token"'}


class Permission(StrEnum):
    READ_JOBS = "read jobs"
    CREATE_JOBS = "create jobs"
    CHANGE_JOBS = "cancel or requeue jobs"
    MANAGE_TENANTS = "manage tenants and keys"
    READ_WEBHOOKS = "read webhook endpoints and deliveries"
    MANAGE_WEBHOOKS = "manage webhook endpoints or redeliver webhooks"
    VERIFY_AUDIT = "verify the audit log"


GRANTS: dict[str, frozenset[Permission]] = {
    ADMIN: frozenset(
        {
            Permission.READ_JOBS,
            Permission.CHANGE_JOBS,
            Permission.MANAGE_TENANTS,
            Permission.READ_WEBHOOKS,
            Permission.MANAGE_WEBHOOKS,
            Permission.VERIFY_AUDIT,
        }
    ),
    WRITER: frozenset(
        {
            Permission.READ_JOBS,
            Permission.CREATE_JOBS,
            Permission.CHANGE_JOBS,
            Permission.READ_WEBHOOKS,
            Permission.MANAGE_WEBHOOKS,
        }
    ),
    READER: frozenset({Permission.READ_JOBS, Permission.READ_WEBHOOKS}),
}


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: str | None  # None for admin keys
    role: str

    @property
    def actor(self) -> str:
        return key_actor(self.key_id)

    @property
    def scope(self) -> str | None:
        """The tenant whose objects this key sees; None is every tenant."""
        return None if self.role == ADMIN else self.tenant_id

    def tenant_filter(self, asked: str | None) -> str | None:
        """The tenant a report or list covers: admin keys every tenant or the one `asked`
        for; a tenant key only its own (naming another is a 403)."""
        if self.scope is None:
            return asked
        if asked is not None and asked != self.scope:
            raise Problem(
                "forbidden",
                f"A {self.role} key sees only its own tenant; tenant_id is for admin keys.",
                extra={"role": self.role},
            )
        return self.scope

    def require(self, permission: Permission) -> None:
        if permission not in GRANTS.get(self.role, frozenset()):
            extra = ""
            if permission is Permission.CREATE_JOBS and self.role == ADMIN:
                extra = " Admin keys belong to no tenant: create jobs with a tenant's writer key."
            raise Problem(
                "forbidden",
                f"A {self.role} key may not {permission}.{extra}",
                extra={"role": self.role},
            )


class KeyCache:
    """Valid keys by the sha256 of their token, each for `ttl` seconds (0: nothing is kept).

    `forget(key_id)` drops a key at once and bumps `generation`; a lookup that started before
    (and may have read the key before its revocation) is then not stored (`put` checks)."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = KEY_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("ttl must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[bytes, tuple[Principal, float]] = {}  # digest -> (who, expires)
        self.generation = 0

    def get(self, digest: bytes) -> Principal | None:
        found = self.find(digest)
        return None if found is None else found[0]

    def find(self, digest: bytes) -> tuple[Principal, bool] | None:
        """(who, True when the entry is in the last `REFRESH_AHEAD` of its life: time to read
        the key again, in the background), or None when nothing valid is kept."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry[1]:
            self._entries.pop(digest, None)
            return None
        return entry[0], now >= entry[1] - self.ttl * REFRESH_AHEAD

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)

    def put(self, digest: bytes, principal: Principal, generation: int) -> None:
        if self.ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:  # drop the oldest (insertion order)
            self._entries.pop(next(iter(self._entries)), None)
        self._entries[digest] = (principal, self._clock() + self.ttl)

    def forget(self, key_id: str) -> None:
        self.generation += 1
        for digest in [d for d, (who, _) in self._entries.items() if who.key_id == key_id]:
            del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)


KeyLookup = Callable[[str], Awaitable[ApiKey | None]]


class Authenticator:
    def __init__(
        self,
        admin_key: str | None,
        metrics_token: str | None = None,
        *,
        key_cache_seconds: float = DEFAULT_KEY_CACHE_SECONDS,
    ) -> None:
        self._admin_digest = _digest(admin_key) if admin_key else None
        self._metrics_digest = _digest(metrics_token) if metrics_token else None
        self.keys = KeyCache(key_cache_seconds)
        self._lookups: dict[bytes, asyncio.Task[Principal]] = {}

    async def key_principal(self, token: str, lookup: KeyLookup) -> Principal:
        """The principal of a stored key (from the cache, or `lookup` in the store); 401 when
        the token proves no active key."""
        digest = _digest(token)
        found = self.keys.find(digest)
        if found is not None:
            principal, refresh = found
            if refresh and digest not in self._lookups:
                # read it again before it expires, without making this request wait: at expiry
                # every request of a busy key would otherwise wait for one lookup together
                self._start_lookup(digest, token, lookup)
            return principal
        task = self._lookups.get(digest)
        if task is None:  # the first asker looks it up; the others wait for that answer
            task = self._start_lookup(digest, token, lookup)
        # shield: a client that goes away does not cancel the lookup the others wait for
        return await asyncio.shield(task)

    def _start_lookup(
        self, digest: bytes, token: str, lookup: KeyLookup
    ) -> asyncio.Task[Principal]:
        task = asyncio.ensure_future(self._look_up(digest, token, lookup))
        self._lookups[digest] = task
        task.add_done_callback(lambda done: self._lookup_done(digest, done))
        return task

    async def _look_up(self, digest: bytes, token: str, lookup: KeyLookup) -> Principal:
        generation = self.keys.generation
        try:
            principal = self.principal(await lookup(token))
        except Problem:  # revoked (or gone) since it was cached: refused from now on
            self.keys.discard(digest)
            raise
        self.keys.put(digest, principal, generation)
        return principal

    def _lookup_done(self, digest: bytes, task: asyncio.Task[Principal]) -> None:
        if self._lookups.get(digest) is task:
            del self._lookups[digest]
        if not task.cancelled():
            task.exception()  # a refresh nobody awaited: its failure is not "never retrieved"

    def forget_key(self, key_id: str) -> None:
        """A key was revoked in this process: it is refused from the next request on (a
        lookup under way may have read it before; later requests do not join it)."""
        self.keys.forget(key_id)
        self._lookups.clear()

    def require_metrics_token(self, request: Request) -> None:
        """A 401 unless /metrics is open or the request bears LEDGER_METRICS_TOKEN."""
        if self._metrics_digest is None:
            return
        token = self.bearer_token(request)
        if not hmac.compare_digest(_digest(token), self._metrics_digest):
            raise Problem(
                "unauthenticated",
                "This is not the metrics token (LEDGER_METRICS_TOKEN).",
                headers=INVALID_TOKEN,
            )

    def bearer_token(self, request: Request) -> str:
        header = request.headers.get("authorization")
        if not header:
            raise Problem(
                "unauthenticated",
                "Send an API key as `Authorization: Bearer <key>`.",
                headers=CHALLENGE,
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(
                "unauthenticated",
                "The Authorization header must be `Bearer <key>`.",
                headers=CHALLENGE,
            )
        return token

    def admin(self, token: str) -> Principal | None:
        """The bootstrap admin, when `token` is LEDGER_ADMIN_KEY (constant-time comparison)."""
        if self._admin_digest is None:
            return None
        if hmac.compare_digest(_digest(token), self._admin_digest):
            return Principal(BOOTSTRAP_ADMIN_ID, None, ADMIN)
        return None

    @staticmethod
    def principal(key: ApiKey | None) -> Principal:
        if key is None:
            raise Problem(
                "unauthenticated",
                "This API key is not valid (unknown, mistyped or revoked).",
                headers=INVALID_TOKEN,
            )
        return Principal(str(key.id), key.tenant_id, key.role)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()
