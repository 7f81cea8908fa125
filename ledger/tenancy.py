"""Tenancy: tenants, their API keys, and the commands that issue and revoke keys.

Tenants and keys are event-sourced in the same ledger as jobs (same store, same notification
log), as hash-chained `AuditedAggregate`s, so `JobLedger.verify()` covers them too.

- `Tenant`: `TenantCreated(name)`, `KeyIssued(key_id, role, label)`, `KeyRevoked(key_id)`.
- `ApiKey` (id = the key id): `KeyCreated(tenant_id, role, label, secret_hash)` with
  `tenant_id=None` for admin keys, and `KeyRevoked`.

A key is shown once, as a bearer token `jlk_<key_id.hex>_<secret>`; only sha256(secret) is
stored and it is compared with `hmac.compare_digest`. Issuing a key writes the tenant's
`KeyIssued` and the key's `KeyCreated` in one atomic save; so does revoking.

`TenancyCommands` is a mixin of `JobLedger`. This module must never import web, database or
HTTP-client code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ledger.aggregate import AuditedAggregate
from ledger.clock import iso_z
from ledger.commands import AggregateCommands
from ledger.errors import (
    ConcurrentUpdate,
    InvalidTenancy,
    KeyNotFound,
    TenantNotFound,
    store_errors,
)

if TYPE_CHECKING:
    from ledger.clock import Clock

ADMIN = "admin"
WRITER = "writer"
READER = "reader"
ROLES = (ADMIN, WRITER, READER)
TENANT_ROLES = (WRITER, READER)  # admin keys belong to no tenant
TOKEN_PREFIX = "jlk_"  # noqa: S105 - a public prefix, not a secret
NAME_MAX = 200
LABEL_MAX = 200
COMMAND_RETRIES = 8
TOKEN_PATTERN = re.compile(r"^jlk_([0-9a-f]{32})_([A-Za-z0-9_-]{16,128})$")

T = TypeVar("T")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_actor(key_id: UUID | str) -> str:
    """The actor written into events for changes made with an API key."""
    return f"key:{key_id}"


@dataclass(frozen=True)
class Token:
    """A bearer token: the key's id (public) and its secret (shown once, stored hashed)."""

    key_id: UUID
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.key_id.hex}_{self.secret}"

    @classmethod
    def new(cls) -> Token:
        return cls(uuid4(), secrets.token_urlsafe(32))

    @classmethod
    def parse(cls, text: str) -> Token | None:
        match = TOKEN_PATTERN.match(text)
        if match is None:
            return None
        return cls(UUID(hex=match.group(1)), match.group(2))


class Tenant(AuditedAggregate):
    TOPIC = "job-ledger:Tenant"

    class Event(AuditedAggregate.Event):
        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            self.apply_to(aggregate)

        def apply_to(self, tenant: Tenant) -> None:
            pass

    class TenantCreated(Event, Aggregate.Created):
        TOPIC = "job-ledger:TenantCreated:v1"
        name: str

        def apply(self, aggregate: Any) -> None:
            tenant: Tenant = aggregate
            tenant.name = self.name
            tenant.created_at = self.timestamp
            tenant.key_ids = []
            tenant.revoked_key_ids = set()
            super().apply(tenant)

    Created = TenantCreated

    class KeyIssued(Event):
        TOPIC = "job-ledger:TenantKeyIssued:v1"
        key_id: str
        role: str
        label: str | None

        def apply_to(self, tenant: Tenant) -> None:
            tenant.key_ids.append(self.key_id)

    class KeyRevoked(Event):
        TOPIC = "job-ledger:TenantKeyRevoked:v1"
        key_id: str

        def apply_to(self, tenant: Tenant) -> None:
            tenant.revoked_key_ids.add(self.key_id)

    if TYPE_CHECKING:
        name: str
        created_at: datetime
        key_ids: list[str]
        revoked_key_ids: set[str]

    @classmethod
    def create(cls, *, tenant_id: UUID, name: str, actor: str, now: datetime) -> Tenant:
        _check_text("name", name, NAME_MAX, required=True)
        return cls._start(cls.TenantCreated, id=tenant_id, when=now, actor=actor, name=name)

    def issue_key(
        self, *, key_id: UUID, role: str, label: str | None, actor: str, now: datetime
    ) -> None:
        if role not in TENANT_ROLES:
            raise InvalidTenancy(
                "role",
                f"must be one of {', '.join(TENANT_ROLES)} for a tenant's key, not {role!r}",
            )
        _check_text("label", label, LABEL_MAX, required=False)
        self._record(
            self.KeyIssued, when=now, actor=actor, key_id=str(key_id), role=role, label=label
        )

    def has_key(self, key_id: UUID) -> bool:
        return str(key_id) in self.key_ids

    def revoke_key(self, *, key_id: UUID, actor: str, now: datetime) -> None:
        if not self.has_key(key_id):
            raise KeyNotFound(key_id)
        self._record(self.KeyRevoked, when=now, actor=actor, key_id=str(key_id))

    def describe(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "created_at": iso_z(self.created_at),
            "keys": len(self.key_ids),
            "active_keys": len(self.key_ids) - len(self.revoked_key_ids),
        }


class ApiKey(AuditedAggregate):
    TOPIC = "job-ledger:ApiKey"

    class Event(AuditedAggregate.Event):
        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            self.apply_to(aggregate)

        def apply_to(self, key: ApiKey) -> None:
            pass

    class KeyCreated(Event, Aggregate.Created):
        TOPIC = "job-ledger:ApiKeyCreated:v1"
        tenant_id: str | None
        role: str
        label: str | None
        secret_hash: str

        def apply(self, aggregate: Any) -> None:
            key: ApiKey = aggregate
            key.tenant_id = self.tenant_id
            key.role = self.role
            key.label = self.label
            key.secret_hash = self.secret_hash
            key.created_at = self.timestamp
            key.revoked_at = None
            super().apply(key)

    Created = KeyCreated

    class KeyRevoked(Event):
        TOPIC = "job-ledger:ApiKeyRevoked:v1"

        def apply_to(self, key: ApiKey) -> None:
            key.revoked_at = self.timestamp

    if TYPE_CHECKING:
        tenant_id: str | None
        role: str
        label: str | None
        secret_hash: str
        created_at: datetime
        revoked_at: datetime | None

    @classmethod
    def create(
        cls,
        *,
        token: Token,
        tenant_id: str | None,
        role: str,
        label: str | None,
        actor: str,
        now: datetime,
    ) -> ApiKey:
        if role not in ROLES:
            raise InvalidTenancy("role", f"must be one of {', '.join(ROLES)}, not {role!r}")
        if (tenant_id is None) != (role == ADMIN):
            raise InvalidTenancy(
                "role", "admin keys belong to no tenant; tenant keys are not admin"
            )
        _check_text("label", label, LABEL_MAX, required=False)
        return cls._start(
            cls.KeyCreated,
            id=token.key_id,
            when=now,
            actor=actor,
            tenant_id=tenant_id,
            role=role,
            label=label,
            secret_hash=hash_secret(token.secret),
        )

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of the presented secret's hash with the stored one."""
        return hmac.compare_digest(hash_secret(secret), self.secret_hash)

    def revoke(self, *, actor: str, now: datetime) -> None:
        self._record(self.KeyRevoked, when=now, actor=actor)

    def describe(self) -> dict[str, Any]:
        """The key as the API lists it: never the secret nor its hash."""
        return {
            "id": str(self.id),
            "tenant_id": self.tenant_id,
            "role": self.role,
            "label": self.label,
            "created_at": iso_z(self.created_at),
            "revoked_at": iso_z(self.revoked_at),
        }


@dataclass(frozen=True)
class IssuedKey:
    """A newly issued key; `token` is the only time its secret is available."""

    key: ApiKey
    token: str
    positions: tuple[int, ...]

    @property
    def position(self) -> int:
        return max(self.positions) if self.positions else 0

    def describe(self) -> dict[str, Any]:
        return {**self.key.describe(), "token": self.token}


@dataclass(frozen=True)
class CreatedTenant:
    tenant: Tenant
    first_key: IssuedKey

    @property
    def position(self) -> int:
        return self.first_key.position


@dataclass(frozen=True)
class RevokedKey:
    key: ApiKey
    positions: tuple[int, ...]  # empty when the key was already revoked

    @property
    def position(self) -> int:
        return max(self.positions) if self.positions else 0


class TenancyCommands(AggregateCommands):
    """Tenant and key commands of `JobLedger` (a mixin: it relies on `self.clock`)."""

    if TYPE_CHECKING:
        clock: Clock

    def create_tenant(
        self, name: str, *, actor: str, key_label: str | None = None
    ) -> CreatedTenant:
        """A new tenant and its first `writer` key, saved atomically."""
        now = self.clock.now()
        tenant = Tenant.create(tenant_id=uuid4(), name=name, actor=actor, now=now)
        token = Token.new()
        label = key_label if key_label is not None else "first key"
        tenant.issue_key(key_id=token.key_id, role=WRITER, label=label, actor=actor, now=now)
        key = ApiKey.create(
            token=token, tenant_id=str(tenant.id), role=WRITER, label=label, actor=actor, now=now
        )
        with store_errors():
            recordings = self.save(tenant, key)
        positions = tuple(r.notification.id for r in recordings)
        return CreatedTenant(tenant, IssuedKey(key, str(token), positions))

    def issue_key(
        self, tenant_id: UUID, *, role: str, label: str | None = None, actor: str
    ) -> IssuedKey:
        token = Token.new()

        def decide(tenant: Tenant) -> tuple[ApiKey, bool]:
            now = self.clock.now()
            tenant.issue_key(key_id=token.key_id, role=role, label=label, actor=actor, now=now)
            key = ApiKey.create(
                token=token, tenant_id=str(tenant.id), role=role, label=label, actor=actor, now=now
            )
            return key, True

        key, positions = self._update_tenant(tenant_id, decide)
        return IssuedKey(key, str(token), positions)

    def create_admin_key(self, *, label: str | None = None, actor: str) -> IssuedKey:
        """An admin key (all tenants); made by `ledger keys create --admin`."""
        token = Token.new()
        key = ApiKey.create(
            token=token, tenant_id=None, role=ADMIN, label=label, actor=actor, now=self.clock.now()
        )
        with store_errors():
            recordings = self.save(key)
        return IssuedKey(key, str(token), tuple(r.notification.id for r in recordings))

    def revoke_key(self, tenant_id: UUID, key_id: UUID, *, actor: str) -> RevokedKey:
        """Revoke a tenant's key. Revoking a revoked key changes nothing and is not an error."""

        def decide(tenant: Tenant) -> tuple[ApiKey, bool]:
            if not tenant.has_key(key_id):
                raise KeyNotFound(key_id)
            key = self.get_key(key_id)
            if key.revoked:
                return key, False
            now = self.clock.now()
            tenant.revoke_key(key_id=key_id, actor=actor, now=now)
            key.revoke(actor=actor, now=now)
            return key, True

        key, positions = self._update_tenant(tenant_id, decide)
        return RevokedKey(key, positions)

    def get_tenant(self, tenant_id: UUID) -> Tenant:
        tenant = self._load(tenant_id, Tenant)
        if tenant is None:
            raise TenantNotFound(tenant_id)
        return tenant

    def get_key(self, key_id: UUID) -> ApiKey:
        key = self._load(key_id, ApiKey)
        if key is None:
            raise KeyNotFound(key_id)
        return key

    def tenant_keys(self, tenant_id: UUID) -> list[ApiKey]:
        """The tenant's keys, oldest first, revoked ones included."""
        tenant = self.get_tenant(tenant_id)
        return [self.get_key(UUID(key_id)) for key_id in tenant.key_ids]

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key this bearer token proves, or None (unknown, wrong secret, revoked)."""
        parsed = Token.parse(token)
        if parsed is None:
            return None
        key = self._load(parsed.key_id, ApiKey)
        if key is None or not key.matches(parsed.secret) or key.revoked:
            return None
        return key

    # -- internals --

    def _update_tenant(
        self, tenant_id: UUID, decide: Callable[[Tenant], tuple[ApiKey, bool]]
    ) -> tuple[ApiKey, tuple[int, ...]]:
        """Load the tenant, decide (which may refuse, or find nothing to do), save both at once."""
        for _ in range(COMMAND_RETRIES):
            tenant = self.get_tenant(tenant_id)
            key, write = decide(tenant)  # raises a LedgerError (and writes nothing) when refused
            if not write:
                return key, ()
            try:
                with store_errors():
                    recordings = self.save(tenant, key)
            except IntegrityError:
                continue  # the tenant changed under us: decide again on fresh state
            return key, tuple(r.notification.id for r in recordings)
        raise ConcurrentUpdate(
            f"Tenant {tenant_id} kept changing while this command was applied "
            f"({COMMAND_RETRIES} tries); nothing was written. Try again.",
            tenant_id=str(tenant_id),
        )


def _check_text(name: str, value: str | None, limit: int, *, required: bool) -> None:
    if value is None:
        if required:
            raise InvalidTenancy(name, "is required")
        return
    if not 1 <= len(value) <= limit:
        raise InvalidTenancy(name, f"must be 1 to {limit} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidTenancy(name, "must be printable with no surrounding whitespace")
