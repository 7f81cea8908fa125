"""The webhook sender end to end on both stores: the real service, its read models, the delivery
role's loop, and recording receivers under uvicorn on 127.0.0.1.

Signatures are checked with the `standardwebhooks` reference library. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from ledger.clock import ManualClock
from ledger.delivery import Delivery, DeliveryState
from ledger.endpoint import EndpointState
from ledger.errors import StoreUnavailable
from tests.fakes.receiver import RESET, Received, Reply, redirect, slow
from tests.fakes.receiver import webhook_receiver as webhook_receiver  # a fixture
from tests.integration.delivery_harness import DeliveryEnv, wait_until

CLOSED_PORT_URL = "http://127.0.0.1:9/hooks"  # discard: nothing listens there


@pytest.fixture
def make_env(database_url) -> Iterator:
    made: list[DeliveryEnv] = []

    def make(**options) -> DeliveryEnv:
        env = DeliveryEnv(database_url, **options)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def verify(secret: str, request: Received) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def signature(secret: str, request: Received) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        + request.body
    )
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_retries_across_failure_kinds_keep_one_webhook_id_and_verify(make_env, webhook_receiver):
    env = make_env()
    receiver = webhook_receiver()
    # connection refused first (nothing listens), then the receiver: 500, 302, a timeout, 200
    registered = env.endpoint(
        CLOSED_PORT_URL, timeout_seconds=0.5, retry_schedule=(0.5,) + (0.05,) * 9
    )
    endpoint_id = registered.endpoint.id
    receiver.script(
        "/a", Reply(500), redirect("https://elsewhere.example/", 302), slow(1.5), then=Reply(204)
    )
    env.job("job-1")
    delivery = env.one_delivery(endpoint_id)
    wait_until(lambda: env.attempts_sent(delivery.id), "the first attempt")
    env.ledger.update_endpoint(
        endpoint_id, tenant_id=None, changes={"url": receiver.url("/a")}, actor="key:test"
    )
    final = env.wait_state(delivery.id, DeliveryState.SUCCEEDED)
    # the sender reports an attempt to the harness after recording it: wait for the report
    wait_until(
        lambda: any(s.error_class is None for s in env.attempts_sent(delivery.id)),
        "the successful attempt reported",
    )

    sent = env.attempts_sent(delivery.id)
    classes = [s.error_class for s in sent]
    assert classes[0] == "connection"
    assert classes[-4:] == ["http_status", "redirect", "timeout", None]
    assert set(classes) == {"connection", "http_status", "redirect", "timeout", None}
    assert {s.request.headers["webhook-id"] for s in sent} == {delivery.webhook_id}
    assert [s.attempt for s in sent] == list(range(1, len(sent) + 1))
    assert final.attempts == len(sent)
    # what the ledger recorded matches what was sent
    recorded = env.ledger.delivery_attempts(delivery.id)
    assert [e.receipt["error_class"] for e in recorded] == classes
    assert recorded[0].receipt["status_code"] is None
    error, redirected, timed_out, succeeded = (e.receipt for e in recorded[-4:])
    assert error["status_code"] == 500
    assert redirected["error"].endswith("(redirects are not followed)")
    assert timed_out["error"] == "no answer within 0.5 s"
    assert succeeded["status_code"] == 204
    assert set(succeeded) == {
        "attempted_at",
        "url",
        "webhook_timestamp",
        "status_code",
        "latency_ms",
        "response_headers",
        "response_body",
        "error_class",
        "error",
    }
    # the receiver got four signed requests, one webhook-id, the exact payload each time
    got = receiver.requests_for("/a")
    assert len(got) == 4
    assert {r.headers["webhook-id"] for r in got} == {delivery.webhook_id}
    for request in got:
        assert request.body == delivery.payload.encode()
        body = verify(registered.secret, request)
        assert body["type"] == "job.queued"
        assert request.headers["content-type"] == "application/json"
    stamps = [int(r.headers["webhook-timestamp"]) for r in got]
    assert stamps == sorted(stamps)
    # the redirect was not followed: nothing went to elsewhere.example
    assert all(s.request.url in (CLOSED_PORT_URL, receiver.url("/a")) for s in sent)


def test_an_attempt_whose_round_the_store_refused_is_recorded_on_its_own(
    make_env, webhook_receiver, monkeypatch
):
    """The store fails the round that records an attempt, then the first try to record it on
    its own: the attempt is recorded once, after a wait, and the delivery succeeds without
    being sent again."""
    env = make_env()
    receiver = webhook_receiver()
    refused: list[str] = []
    record_round = env.ledger.record_delivery_attempts
    record_one = env.ledger.record_delivery_attempt

    def failing_once(kind, record):
        def record_or_fail(*args, **kwargs):
            if kind not in refused:
                refused.append(kind)
                raise StoreUnavailable("test: the store went away")
            return record(*args, **kwargs)

        return record_or_fail

    monkeypatch.setattr(env.ledger, "record_delivery_attempts", failing_once("round", record_round))
    monkeypatch.setattr(env.ledger, "record_delivery_attempt", failing_once("one", record_one))
    registered = env.endpoint(receiver.url("/a"))
    env.job("job-1")
    delivery = env.one_delivery(registered.endpoint.id)
    final = env.wait_state(delivery.id, DeliveryState.SUCCEEDED)
    assert refused == ["round", "one"]
    assert final.attempts == 1
    assert [e.receipt["status_code"] for e in env.ledger.delivery_attempts(delivery.id)] == [200]
    assert len(receiver.requests_for("/a")) == 1


def _sender_reads(env, monkeypatch, *, fail_together: bool = False) -> dict[str, list]:
    """Spy on how the sender's threads read deliveries: together (`get_deliveries`) or alone
    (`get_delivery`); the test's own reads are not counted."""
    reads: dict[str, list] = {"together": [], "alone": []}
    together, alone = env.ledger.get_deliveries, env.ledger.get_delivery

    def by_sender() -> bool:
        return threading.current_thread().name.startswith("delivery-ledger")

    def read_together(ids):
        if by_sender():
            reads["together"].append(list(ids))
            if fail_together:
                raise StoreUnavailable("test: the store went away")
        return together(ids)

    def read_alone(delivery_id, **kwargs):
        if by_sender():
            reads["alone"].append(delivery_id)
        return alone(delivery_id, **kwargs)

    monkeypatch.setattr(env.ledger, "get_deliveries", read_together)
    monkeypatch.setattr(env.ledger, "get_delivery", read_alone)
    return reads


def test_a_claim_pass_reads_its_deliveries_together(make_env, webhook_receiver, monkeypatch):
    env = make_env()
    env.queue_only()  # (deliveries offered as they are made are not read at all)
    receiver = webhook_receiver()
    reads = _sender_reads(env, monkeypatch)
    registered = env.endpoint(receiver.url("/a"), max_in_flight=16)
    for i in range(12):
        env.job(f"job-{i}")
    wait_until(lambda: len(env.attempts_sent()) >= 12, "12 webhooks sent")
    assert all(s.succeeded and s.recorded for s in env.attempts_sent())
    assert reads["alone"] == []
    read = [i for ids in reads["together"] for i in ids]
    assert sorted(read) == sorted(s.delivery_id for s in env.attempts_sent())
    assert len(reads["together"]) < 12  # passes, not deliveries
    assert len(receiver.requests_for("/a")) == 12
    assert all(d.state == DeliveryState.SUCCEEDED for d in env.deliveries(registered.endpoint.id))


def _hold_queue_view(env, monkeypatch, holding: type = Delivery.DeliveryCreated) -> threading.Event:
    """Hold the delivery-queue view's batches with a `holding` event (by default: those
    that make deliveries) until the event returned is set (before the view's transaction:
    no SQLite write lock is held meanwhile)."""
    queue = env.read_models.runners["delivery_queue"].projection
    prepare, release = queue.prepare, threading.Event()

    def held(store, events):
        if any(isinstance(e, holding) for _, e in events):
            release.wait(15)
        prepare(store, events)

    monkeypatch.setattr(queue, "prepare", held)
    return release


def _queue_wakes(env, monkeypatch) -> list[int]:
    """The positions of the sender's wakes from the projections thread (the queue view's)."""
    wake, woken = env.sender.wake, []

    def counted(position: int = 0) -> None:
        if threading.current_thread().name == "projections":
            woken.append(position)
        wake(position)

    monkeypatch.setattr(env.sender, "wake", counted)
    return woken


def _wait_for_one_succeeded_row(env, endpoint_id) -> None:
    wait_until(
        lambda: [d.state for d in env.deliveries(endpoint_id)] == [DeliveryState.SUCCEEDED],
        "the queue to show the delivery succeeded",
    )


def test_a_fresh_delivery_is_sent_before_the_queue_view_shows_it_and_only_once(
    make_env, webhook_receiver, monkeypatch
):
    """The fan-out offers the deliveries it makes to the sender in its process: the webhook
    goes out while the delivery queue is still held up (no read of the ledger either), and
    once the queue shows the delivery, it is not sent again."""
    env = make_env()
    receiver = webhook_receiver()
    release = _hold_queue_view(env, monkeypatch)
    reads = _sender_reads(env, monkeypatch)
    registered = env.endpoint(receiver.url("/a"))
    try:
        env.job("job-1")
        (request,) = receiver.wait_for(1, timeout=10, path="/a")
        (sent,) = wait_until(env.attempts_sent, "the attempt recorded")
        assert env.deliveries(registered.endpoint.id) == []  # the queue has no row yet
    finally:
        release.set()
    assert sent.succeeded and sent.recorded
    assert reads == {"together": [], "alone": []}
    _wait_for_one_succeeded_row(env, registered.endpoint.id)
    env.job("job-2")  # one more pass of the queue and the sender after the row appeared
    wait_until(lambda: len(env.attempts_sent()) == 2, "the second attempt recorded")
    assert [r.headers["webhook-id"] for r in receiver.requests_for("/a")].count(
        request.headers["webhook-id"]
    ) == 1


def test_the_queue_wakes_the_sender_only_for_deliveries_a_pass_could_take(
    make_env, webhook_receiver, monkeypatch
):
    """A delivery the sender took from the fan-out is pending in the queue view once it
    shows up, but a pass would find nothing there: the view's batch does not wake the
    sender. A delivery the sender has not taken does."""
    env = make_env()
    receiver = webhook_receiver()
    release = _hold_queue_view(env, monkeypatch)
    woken_by_queue = _queue_wakes(env, monkeypatch)
    registered = env.endpoint(receiver.url("/a"))
    try:
        env.job("job-1")
        wait_until(env.attempts_sent, "the first attempt recorded")
    finally:
        release.set()
    _wait_for_one_succeeded_row(env, registered.endpoint.id)
    assert woken_by_queue == []
    env.queue_only()  # the next delivery reaches the sender through the queue alone
    env.job("job-2")
    wait_until(lambda: len(env.attempts_sent()) == 2, "the second attempt recorded")
    assert woken_by_queue  # its row woke the sender
    assert len(receiver.requests_for("/a")) == 2


def test_the_queue_showing_a_delivery_being_sent_does_not_wake_the_sender(
    make_env, webhook_receiver, monkeypatch
):
    env = make_env()
    receiver = webhook_receiver()
    recording, record = threading.Event(), env.ledger.record_delivery_attempts

    def held(*args, **kwargs):
        recording.wait(15)
        return record(*args, **kwargs)

    monkeypatch.setattr(env.ledger, "record_delivery_attempts", held)
    woken_by_queue = _queue_wakes(env, monkeypatch)
    sent = _hold_queue_view(env, monkeypatch)  # the queue shows it once it is on the wire
    runner = env.read_models.runners["delivery_queue"]
    pending_batches: list[list[tuple[str, int]]] = []
    # called after the role's own callback: a batch seen here was already judged
    runner.position_changed.append(
        lambda _: pending_batches.append(list(runner.projection.pending))
    )
    env.endpoint(receiver.url("/a"))
    try:
        env.job("job-1")
        receiver.wait_for(1, timeout=10, path="/a")
        sent.set()
        wait_until(lambda: any(pending_batches), "the queue to show the delivery pending")
        assert woken_by_queue == []  # it is being sent: a pass would find nothing
    finally:
        sent.set()
        recording.set()
    wait_until(env.attempts_sent, "the attempt recorded")


def test_a_pass_blocked_by_rows_the_view_has_not_caught_up_on_is_woken_when_it_does(
    make_env, webhook_receiver, monkeypatch
):
    """One send at a time scans four due rows a pass (SQLite's pass may take one more).
    Once the oldest rows scanned are deliveries already sent, whose attempts the (held)
    queue view does not show yet, a pass finds nothing to take; the view catching up must
    wake the sender for those left, not the fallback poll (30 s here; under load it was a
    second without a send)."""
    env = make_env(sender={"concurrency": 1, "poll_seconds": 30.0})
    env.queue_only()
    receiver = webhook_receiver()
    view_released = _hold_queue_view(env, monkeypatch, Delivery.DeliveryAttempted)
    claim, claims_released = env.sender.claims.claim_batch, threading.Event()

    def claim_when_released(*args, **kwargs):
        claims_released.wait(15)
        return claim(*args, **kwargs)

    monkeypatch.setattr(env.sender.claims, "claim_batch", claim_when_released)
    endpoint_id = env.endpoint(receiver.url("/a")).endpoint.id
    try:
        for n in range(6):
            env.job(f"job-{n}")
        wait_until(lambda: len(env.deliveries(endpoint_id)) == 6, "six rows in the queue")
        claims_released.set()
        wait_until(lambda: len(env.attempts_sent()) >= 4, "four attempts behind the view")
        time.sleep(0.5)  # the next pass finds only rows already sent: nothing to take
        assert len(receiver.requests_for("/a")) < 6
        view_released.set()
        wait_until(lambda: len(env.attempts_sent()) == 6, "those left, once the view moved")
    finally:
        claims_released.set()
        view_released.set()
    assert len({r.headers["webhook-id"] for r in receiver.requests_for("/a")}) == 6


def test_the_delivery_role_sends_on_uvloop(make_env, webhook_receiver):
    env = make_env()
    receiver = webhook_receiver()
    loops: list[str] = []
    env.sender.attempt_finished.append(
        lambda sent: loops.append(type(asyncio.get_running_loop()).__module__)
    )
    env.endpoint(receiver.url("/a"))
    env.job("job-1")
    wait_until(lambda: loops, "a webhook sent")
    assert loops[0].startswith("uvloop")


def test_when_the_pass_cannot_read_its_deliveries_each_attempt_reads_its_own(
    make_env, webhook_receiver, monkeypatch
):
    env = make_env()
    env.queue_only()
    receiver = webhook_receiver()
    reads = _sender_reads(env, monkeypatch, fail_together=True)
    registered = env.endpoint(receiver.url("/a"), max_in_flight=16)
    for i in range(3):
        env.job(f"job-{i}")
    wait_until(lambda: len(env.attempts_sent()) >= 3, "3 webhooks sent")
    assert reads["together"]
    assert sorted(reads["alone"]) == sorted(s.delivery_id for s in env.attempts_sent())
    assert all(s.succeeded and s.recorded for s in env.attempts_sent())
    assert len(receiver.requests_for("/a")) == 3
    assert all(d.state == DeliveryState.SUCCEEDED for d in env.deliveries(registered.endpoint.id))


def test_dead_letter_after_the_schedule_then_manual_retry_delivers(make_env, webhook_receiver):
    env = make_env()
    receiver = webhook_receiver()
    registered = env.endpoint(receiver.url("/dl"), retry_schedule=(0.05, 0.05))
    receiver.script("/dl", Reply(500), Reply(503, {"retry-after": "0"}), RESET, then=Reply(200))
    env.job("job-1")
    delivery = env.one_delivery(registered.endpoint.id)
    dead = env.wait_state(delivery.id, DeliveryState.DEAD_LETTERED)
    assert dead.attempts == 3
    assert len(receiver.requests_for("/dl")) == 3
    assert [e.receipt["error_class"] for e in env.ledger.delivery_attempts(delivery.id)] == [
        "http_status",
        "http_status",
        "connection",
    ]

    env.ledger.retry_delivery(delivery.id, tenant_id=None, actor="key:test")
    done = env.wait_state(delivery.id, DeliveryState.SUCCEEDED)
    assert done.attempts == 4
    got = receiver.wait_for(4, path="/dl")
    assert {r.headers["webhook-id"] for r in got} == {delivery.webhook_id}
    verify(registered.secret, got[-1])


def test_410_disables_the_endpoint_and_tells_the_other_endpoints(make_env, webhook_receiver):
    env = make_env()
    receiver = webhook_receiver()
    gone = env.endpoint(receiver.url("/gone"))
    other = env.endpoint(receiver.url("/other"))
    receiver.script("/gone", then=Reply(410, body=b"unsubscribed"))
    env.job("job-1")
    delivery = env.one_delivery(gone.endpoint.id)
    held = env.wait_state(delivery.id, DeliveryState.HELD)
    assert held.hold_reason == "endpoint_gone"

    # the attempt is recorded (held) first, then the endpoint is disabled
    endpoint = wait_until(
        lambda: (
            e
            if (e := env.ledger.get_endpoint(gone.endpoint.id, tenant_id=None)).state
            == EndpointState.DISABLED
            else None
        ),
        "the endpoint disabled",
    )
    assert endpoint.disabled_automatically
    assert endpoint.disabled_reason == "endpoint answered 410 Gone"
    assert endpoint.last_error["status_code"] == 410
    notice = env.one_delivery(other.endpoint.id, "endpoint.disabled")
    env.wait_state(notice.id, DeliveryState.SUCCEEDED)
    told = [r for r in receiver.requests_for("/other") if r.json()["type"] == "endpoint.disabled"]
    assert len(told) == 1
    message = verify(other.secret, told[0])
    assert message["data"]["endpoint_id"] == str(gone.endpoint.id)
    assert message["data"]["automatic"] is True
    assert message["data"]["last_error"]["status_code"] == 410
    # the disabled endpoint gets nothing more: its new deliveries are held
    env.job("job-2")
    wait_until(lambda: len(env.deliveries(gone.endpoint.id)) == 2, "the second delivery")
    second = next(d for d in env.deliveries(gone.endpoint.id) if d.id != delivery.id)
    assert second.state == DeliveryState.HELD
    assert second.hold_reason == "endpoint_disabled"
    assert len(receiver.requests_for("/gone")) == 1


def test_endpoint_failing_for_five_days_is_disabled_automatically(make_env, webhook_receiver):
    clock = ManualClock()
    env = make_env(clock=clock)
    receiver = webhook_receiver(default=Reply(500))
    failing = env.endpoint(receiver.url("/down"), retry_schedule=(86400.0,) * 10)
    env.job("job-1")
    delivery = env.one_delivery(failing.endpoint.id)
    for attempt in range(1, 10):
        wait_until(lambda n=attempt: len(env.attempts_sent(delivery.id)) >= n, f"attempt {attempt}")
        endpoint = env.ledger.get_endpoint(failing.endpoint.id, tenant_id=None)
        if endpoint.state == EndpointState.DISABLED:
            break
        assert clock.now() - delivery.created_at < timedelta(days=5)
        clock.advance(days=1.3)  # past the jittered (+/- 20 %) one-day wait
        env.role.wake()
    failing_for = clock.now() - delivery.created_at
    assert timedelta(days=5) <= failing_for < timedelta(days=6.5)
    assert endpoint.state == EndpointState.DISABLED
    assert endpoint.disabled_automatically
    assert endpoint.disabled_reason.startswith("every delivery attempt failed for")
    assert endpoint.last_error["status_code"] == 500
    assert env.attempts_sent(delivery.id)[-1].endpoint_disabled


def test_consecutive_dead_letters_disable_the_endpoint(make_env, webhook_receiver):
    env = make_env(webhooks={"disable_after_dead_letters": 2})
    receiver = webhook_receiver(default=Reply(500))
    failing = env.endpoint(receiver.url("/x"), retry_schedule=(0.05,))
    env.job("job-1")
    first = env.one_delivery(failing.endpoint.id)
    env.wait_state(first.id, DeliveryState.DEAD_LETTERED)
    assert env.ledger.get_endpoint(failing.endpoint.id, tenant_id=None).state == "active"
    env.job("job-2")
    wait_until(lambda: len(env.deliveries(failing.endpoint.id)) == 2, "the second delivery")
    second = next(d for d in env.deliveries(failing.endpoint.id) if d.id != first.id)
    env.wait_state(second.id, DeliveryState.DEAD_LETTERED)
    endpoint = wait_until(
        lambda: (
            e
            if (e := env.ledger.get_endpoint(failing.endpoint.id, tenant_id=None)).state
            == "disabled"
            else None
        ),
        "the endpoint disabled",
    )
    assert endpoint.disabled_reason == "2 deliveries in a row were dead-lettered (the limit is 2)"


def test_an_endpoint_slot_is_free_while_its_attempt_is_recorded(
    make_env, webhook_receiver, monkeypatch
):
    """`max_in_flight` counts requests on the wire: at a cap of one, the second webhook goes
    out while the first attempt's recording is still held up."""
    env = make_env()
    receiver = webhook_receiver()
    recording = threading.Event()
    record = env.ledger.record_delivery_attempts

    def held(*args, **kwargs):
        recording.wait(15)
        return record(*args, **kwargs)

    monkeypatch.setattr(env.ledger, "record_delivery_attempts", held)
    registered = env.endpoint(receiver.url("/one"), max_in_flight=1)
    env.job("job-1")
    env.job("job-2")
    try:
        receiver.wait_for(2, timeout=10, path="/one")
        assert env.attempts_sent() == []  # neither is recorded yet
    finally:
        recording.set()
    wait_until(lambda: len(env.attempts_sent()) >= 2, "both attempts recorded")
    assert all(s.succeeded and s.recorded for s in env.attempts_sent())
    assert len(receiver.requests_for("/one")) == 2
    assert all(d.state == DeliveryState.SUCCEEDED for d in env.deliveries(registered.endpoint.id))


def test_a_slow_endpoint_does_not_delay_a_fast_one(make_env, webhook_receiver):
    env = make_env(webhooks={"concurrency": 4, "endpoint_concurrency": 2})
    receiver = webhook_receiver()
    receiver.script("/slow", then=slow(2.0))
    slow_endpoint = env.endpoint(receiver.url("/slow"), timeout_seconds=5.0)
    env.endpoint(receiver.url("/fast"))
    for i in range(6):
        env.job(f"job-{i}")
    fast = receiver.wait_for(6, timeout=10, path="/fast")
    slow_requests = receiver.requests_for("/slow")
    # the slow endpoint holds at most its own two slots; a third request to it can only start
    # after its first answer (2 s), and every fast delivery arrived before that
    assert len(slow_requests) <= 2
    slow_deliveries = env.deliveries(slow_endpoint.endpoint.id)
    assert len(slow_deliveries) == 6
    assert sum(d.state == DeliveryState.SUCCEEDED for d in slow_deliveries) < 6  # still busy
    third = receiver.wait_for(3, timeout=10, path="/slow")[2]
    assert max(r.monotonic for r in fast) < third.monotonic


def test_rotation_grace_period_signs_with_new_and_old_secret(make_env, webhook_receiver):
    env = make_env()
    receiver = webhook_receiver()
    registered = env.endpoint(receiver.url("/rot"))
    _, new_secret = env.ledger.rotate_endpoint_secret(
        registered.endpoint.id, tenant_id=None, grace_seconds=3600, actor="key:test"
    )
    env.job("job-1")
    (request,) = receiver.wait_for(1, path="/rot")
    signatures = request.headers["webhook-signature"].split(" ")
    assert signatures == [signature(new_secret, request), signature(registered.secret, request)]
    assert verify(new_secret, request) == verify(registered.secret, request)


def test_private_target_is_refused_when_not_allowed(make_env, webhook_receiver):
    env = make_env(webhooks={"allow_private_targets": False})
    receiver = webhook_receiver()
    registered = env.endpoint(receiver.url("/private"), retry_schedule=(0.05,))
    env.job("job-1")
    delivery = env.one_delivery(registered.endpoint.id)
    env.wait_state(delivery.id, DeliveryState.DEAD_LETTERED)
    receipts = [e.receipt for e in env.ledger.delivery_attempts(delivery.id)]
    assert [r["error_class"] for r in receipts] == ["refused_target", "refused_target"]
    assert receipts[0]["error"] == "target refused: plain http is not allowed; use https"
    assert receipts[0]["status_code"] is None
    assert receiver.requests == []


def test_deliver_now_returns_the_exact_request_and_a_bounded_answer(make_env, webhook_receiver):
    env = make_env()
    receiver = webhook_receiver()
    huge = b"x" * 2_000_000
    receiver.script("/test", then=Reply(200, {"x-receiver": "yes"}, body=huge))
    registered = env.endpoint(receiver.url("/test"))
    endpoint = registered.endpoint
    made = env.ledger.create_test_delivery(
        endpoint, payload='{"type": "webhook.test", "data": {}}', actor="key:test"
    )
    sent = env.deliver_now(made.aggregate.id)

    assert sent.succeeded and sent.recorded
    assert sent.state == "succeeded"
    assert sent.request.method == "POST"
    assert sent.request.url == receiver.url("/test")
    assert sent.request.body == '{"type": "webhook.test", "data": {}}'
    assert sent.request.headers["webhook-id"] == made.aggregate.webhook_id
    assert sent.response.status_code == 200
    assert sent.response.headers["x-receiver"] == "yes"
    assert sent.response.body == "x" * 4096
    assert sent.response.latency_ms > 0
    (request,) = receiver.wait_for(1, path="/test")
    assert request.headers["webhook-signature"] == sent.request.headers["webhook-signature"]
    verify(registered.secret, request)
    # the claim loop leaves it alone: one request only
    assert env.ledger.get_delivery(made.aggregate.id, tenant_id=None).attempts == 1
    assert len(receiver.requests_for("/test")) == 1
