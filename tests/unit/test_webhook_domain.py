"""Endpoint and Delivery aggregates: given events, when a command, then events (fixed clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from ledger.delivery import ORIGIN_TEST, Delivery, DeliveryState, delivery_id_for
from ledger.endpoint import Endpoint, EndpointSettings, EndpointState
from ledger.errors import InvalidEndpoint, InvalidTransition, WrongAttempt

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def endpoint(**overrides) -> Endpoint:
    settings = EndpointSettings(
        **{"url": "https://hooks.example.com/in", "event_types": ("*",), **overrides}
    )
    return Endpoint.register(
        endpoint_id=uuid4(),
        tenant_id="t1",
        settings=settings,
        sealed_secret="sealed-1",
        sealed_payload_key=None,
        actor="key:k",
        now=NOW,
    )


def delivery(origin: str = "event") -> Delivery:
    return Delivery.create(
        delivery_id=uuid4(),
        tenant_id="t1",
        endpoint_id=uuid4(),
        event_type="webhook.test" if origin == ORIGIN_TEST else "job.published",
        payload='{"type":"job.published"}',
        origin=origin,
        actor="system",
        now=NOW,
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https://example.com/#frag"}, "url"),
        ({"url": "https://" + "a" * 2050}, "url"),
        ({"url": "not a url"}, "url"),
        ({"event_types": ()}, "event_types"),
        ({"event_types": ("job.exploded",)}, "event_types"),
        ({"event_types": ("job.failed", "job.failed")}, "event_types"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 30.5}, "timeout_seconds"),
        ({"timeout_seconds": float("nan")}, "timeout_seconds"),
        ({"retry_schedule": ()}, "retry_schedule"),
        ({"retry_schedule": (5, -1)}, "retry_schedule"),
        ({"retry_schedule": tuple([1.0] * 21)}, "retry_schedule"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"description": "x" * 501}, "description"),
    ],
)
def test_invalid_settings_name_the_field_and_record_nothing(overrides, field) -> None:
    with pytest.raises(InvalidEndpoint) as caught:
        endpoint(**overrides)
    assert caught.value.field == field


def test_update_records_only_real_changes_and_checks_them() -> None:
    e = endpoint()
    assert e.update(changes={"url": e.url}, actor="key:k", now=NOW) is False
    assert e.version == 1
    assert e.update(changes={"event_types": ["job.failed"]}, actor="key:k", now=NOW)
    assert e.event_types == ["job.failed"] and e.version == 2
    with pytest.raises(InvalidEndpoint):
        e.update(changes={"timeout_seconds": 99}, actor="key:k", now=NOW)
    with pytest.raises(InvalidEndpoint):
        e.update(changes={"tenant_id": "t2"}, actor="key:k", now=NOW)
    assert e.version == 2


def test_rotation_signs_with_both_secrets_during_the_grace_only() -> None:
    e = endpoint()
    e.rotate_secret(sealed_secret="sealed-2", grace_seconds=3600, actor="key:k", now=NOW)
    assert e.sealed_signing_secrets(NOW) == ["sealed-2", "sealed-1"]
    e.rotate_secret(sealed_secret="sealed-3", grace_seconds=60, actor="key:k", now=NOW)
    assert e.sealed_signing_secrets(NOW) == ["sealed-3", "sealed-2", "sealed-1"]
    assert e.sealed_signing_secrets(NOW + timedelta(seconds=61)) == ["sealed-3", "sealed-1"]
    assert e.sealed_signing_secrets(NOW + timedelta(hours=2)) == ["sealed-3"]
    with pytest.raises(InvalidEndpoint):
        e.rotate_secret(sealed_secret="x", grace_seconds=-1, actor="key:k", now=NOW)


def test_disable_enable_delete() -> None:
    e = endpoint()
    error = {"status_code": 500}
    assert e.disable(reason="r", automatic=True, last_error=error, actor="system", now=NOW)
    assert e.disable(reason="again", automatic=False, last_error=None, actor="k", now=NOW) is False
    assert (e.state, e.disabled_reason, e.last_error) == (EndpointState.DISABLED, "r", error)
    assert e.enable(actor="key:k", now=NOW)
    assert e.state == EndpointState.ACTIVE and e.disabled_reason is None
    assert e.delete(actor="key:k", now=NOW)
    with pytest.raises(InvalidTransition, match="endpoint that is deleted"):
        e.enable(actor="key:k", now=NOW)
    assert "secret" not in str(e.describe())


def test_attempts_are_numbered_and_decide_the_state() -> None:
    d = delivery()
    later = NOW + timedelta(seconds=5)
    result = d.record_attempt(
        attempt=1, succeeded=False, receipt={}, next_attempt_at=later, actor="s", now=NOW
    )
    assert result == DeliveryState.PENDING and d.next_attempt_at == later
    with pytest.raises(WrongAttempt):
        d.record_attempt(
            attempt=1, succeeded=True, receipt={}, next_attempt_at=None, actor="s", now=NOW
        )
    result = d.record_attempt(
        attempt=2, succeeded=False, receipt={}, next_attempt_at=None, actor="s", now=NOW
    )
    assert result == DeliveryState.DEAD_LETTERED
    with pytest.raises(InvalidTransition):
        d.record_attempt(
            attempt=3, succeeded=True, receipt={}, next_attempt_at=None, actor="s", now=NOW
        )
    d.request_retry(reason="manual", actor="key:k", now=later)
    assert (d.state, d.round_attempts, d.attempts) == (DeliveryState.PENDING, 0, 2)
    assert d.next_attempt_at == later
    assert (
        d.record_attempt(
            attempt=3, succeeded=True, receipt={}, next_attempt_at=later, actor="s", now=later
        )
        == DeliveryState.SUCCEEDED
    )
    assert d.next_attempt_at is None


def test_gone_holds_and_test_deliveries_fail_after_one_attempt() -> None:
    d = delivery()
    result = d.record_attempt(
        attempt=1,
        succeeded=False,
        receipt={"status_code": 410},
        next_attempt_at=NOW,
        hold_reason="endpoint_gone",
        actor="s",
        now=NOW,
    )
    assert result == DeliveryState.HELD and d.hold_reason == "endpoint_gone"
    t = delivery(ORIGIN_TEST)
    result = t.record_attempt(
        attempt=1, succeeded=False, receipt={}, next_attempt_at=NOW, actor="s", now=NOW
    )
    assert result == DeliveryState.FAILED


def test_hold_only_from_pending_and_ids_are_stable() -> None:
    d = delivery()
    d.hold(reason="endpoint_disabled", actor="s", now=NOW)
    with pytest.raises(InvalidTransition):
        d.hold(reason="again", actor="s", now=NOW)
    assert d.webhook_id == f"msg_{d.id.hex}" and "." not in d.webhook_id
    endpoint_id, event_id = uuid4(), uuid4()
    assert delivery_id_for(endpoint_id, event_id) == delivery_id_for(endpoint_id, event_id)
    assert delivery_id_for(endpoint_id, event_id) != delivery_id_for(uuid4(), event_id)
