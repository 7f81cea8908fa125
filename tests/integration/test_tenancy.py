"""Tenants and keys in the ledger, on SQLite and PostgreSQL: atomic issue, constant-time
authentication, revocation, hash chains that `verify()` covers."""

from __future__ import annotations

import threading
from uuid import UUID

import pytest

from ledger.application import JobLedger
from ledger.errors import InvalidTenancy, KeyNotFound, TenantNotFound
from ledger.tenancy import ApiKey, Tenant, Token


def log_end(ledger: JobLedger) -> int:
    return int(ledger.recorder.max_notification_id() or 0)


def test_tenant_and_first_key_are_saved_together(ledger: JobLedger) -> None:
    created = ledger.create_tenant("Acme", actor="key:bootstrap-admin")
    assert len(created.first_key.positions) == 3  # TenantCreated, KeyIssued, KeyCreated
    assert created.position == log_end(ledger)
    tenant = ledger.get_tenant(created.tenant.id)
    assert tenant.name == "Acme"
    assert tenant.key_ids == [str(created.first_key.key.id)]
    key = ledger.authenticate(created.first_key.token)
    assert key is not None
    assert key.tenant_id == str(tenant.id)
    assert key.role == "writer"
    assert "secret" not in str(key.describe())
    assert created.first_key.token.split("_", 2)[2] not in repr(ledger.events.get(key.id))


def test_authenticate_refuses_wrong_unknown_and_revoked(ledger: JobLedger) -> None:
    created = ledger.create_tenant("Acme", actor="a")
    token = Token.parse(created.first_key.token)
    assert token is not None
    assert ledger.authenticate(str(Token(token.key_id, "x" * 43))) is None
    assert ledger.authenticate(str(Token.new())) is None
    assert ledger.authenticate("garbage") is None
    assert ledger.authenticate(str(Token(created.tenant.id, token.secret))) is None  # not a key
    revoked = ledger.revoke_key(created.tenant.id, token.key_id, actor="a")
    assert len(revoked.positions) == 2
    assert ledger.authenticate(created.first_key.token) is None
    end = log_end(ledger)
    again = ledger.revoke_key(created.tenant.id, token.key_id, actor="a")
    assert again.positions == ()
    assert log_end(ledger) == end


def test_refusals_write_nothing(ledger: JobLedger) -> None:
    created = ledger.create_tenant("Acme", actor="a")
    end = log_end(ledger)
    with pytest.raises(InvalidTenancy):
        ledger.issue_key(created.tenant.id, role="admin", actor="a")
    with pytest.raises(InvalidTenancy):
        ledger.issue_key(created.tenant.id, role="reader", label=" padded ", actor="a")
    with pytest.raises(InvalidTenancy):
        ledger.create_tenant("", actor="a")
    with pytest.raises(TenantNotFound):
        ledger.issue_key(UUID(int=5), role="reader", actor="a")
    other = ledger.create_tenant("Other", actor="a")
    end = log_end(ledger)
    with pytest.raises(KeyNotFound):  # another tenant's key
        ledger.revoke_key(created.tenant.id, other.first_key.key.id, actor="a")
    with pytest.raises(TenantNotFound):  # a key's id is not a tenant's
        ledger.get_tenant(other.first_key.key.id)
    assert log_end(ledger) == end


def test_admin_keys_belong_to_no_tenant(ledger: JobLedger) -> None:
    issued = ledger.create_admin_key(label="ops", actor="cli")
    key = ledger.authenticate(issued.token)
    assert key is not None
    assert (key.role, key.tenant_id, key.label) == ("admin", None, "ops")


def test_concurrent_key_issues_all_land(ledger: JobLedger) -> None:
    tenant_id = ledger.create_tenant("Acme", actor="a").tenant.id
    issued: list[str] = []
    barrier = threading.Barrier(6)

    def issue() -> None:
        barrier.wait()
        issued.append(str(ledger.issue_key(tenant_id, role="reader", actor="a").key.id))

    threads = [threading.Thread(target=issue) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tenant = ledger.get_tenant(tenant_id)
    assert sorted(tenant.key_ids[1:]) == sorted(issued)
    assert [k.role for k in ledger.tenant_keys(tenant_id)] == ["writer"] + ["reader"] * 6


def test_tenancy_events_are_chained_and_verified(ledger: JobLedger) -> None:
    created = ledger.create_tenant("Acme", actor="a")
    ledger.issue_key(created.tenant.id, role="reader", actor="a")
    ledger.write_checkpoint()
    report = ledger.verify()
    assert report.ok, report.summary()
    assert report.events == 5
    tenant_events = list(ledger.events.get(created.tenant.id))
    assert [type(e).__name__ for e in tenant_events] == ["TenantCreated", "KeyIssued", "KeyIssued"]
    assert tenant_events[1].prev_hash == tenant_events[0].hash  # type: ignore[attr-defined]
    assert isinstance(ledger.repository.get(created.tenant.id), Tenant)
    assert isinstance(ledger.repository.get(created.first_key.key.id), ApiKey)
