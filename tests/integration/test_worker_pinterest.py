"""The live publisher against a fake Pinterest on 127.0.0.1: every error class, Retry-After,
`x-pinterest-rid` in receipts, and reconciliation of ambiguous attempts (no second POST)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ledger.clock import ManualClock
from ledger.job import AttemptFailure, Job
from storage.sql import SqlStore
from tests.conftest import make_new_job
from tests.fakes.fake_pinterest import FakePinterest, Planned
from tests.integration.worker_harness import Harness
from worker.publishers import Published
from worker.publishers.pinterest import PinterestPublisher

TOKENS = {"acct-1": "token-1", "acct-unknown-token": "wrong-token"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock) -> Iterator[FakePinterest]:
    server = FakePinterest(clock=clock.now).start()
    yield server
    server.stop()


@pytest.fixture
def publisher(fake) -> Iterator[PinterestPublisher]:
    p = PinterestPublisher(fake.base_url, TOKENS, timeout_seconds=0.5)
    yield p
    p.close()


def live_job(clock: ManualClock, title: str = "A cat", **overrides) -> Job:
    new = make_new_job(mode="pinterest", pin={"title": title}, **overrides)
    return Job.create(
        tenant_id="t",
        idempotency_key=title,
        request_fingerprint=new.fingerprint(),
        account_id=new.account_id,
        board_id=new.board_id,
        pin=new.pin.as_dict(),
        publish_at=None,
        mode="pinterest",
        simulate=None,
        metadata={},
        actor="key:k",
        now=clock.now(),
    )


def test_created_pin_keeps_id_and_request_id(fake, publisher, clock) -> None:
    result = publisher.publish(live_job(clock), 1)
    assert isinstance(result, Published)
    assert result.external_ref == fake.pins[0]["id"]
    assert result.receipt["status"] == 201
    assert result.receipt["x_pinterest_rid"].startswith("rid-")
    sent = fake.posts[0]
    assert sent["headers"]["authorization"] == "Bearer token-1"
    assert sent["body"] == {
        "board_id": "board-1",
        "title": "A cat",
        "description": "A very good cat.",
        "link": "https://example.com/cat",
        "alt_text": "a cat on a mat",
        "media_source": {"source_type": "image_url", "url": "https://images.example.com/cat.png"},
    }


@pytest.mark.parametrize(
    ("planned", "code", "retryable", "retry_after"),
    [
        (Planned(429, 8, "Rate limit exceeded", {"Retry-After": "7"}), "rate_limited", True, 7.0),
        (Planned(429, 8, "Slow down", {"x-ratelimit-reset": "3"}), "rate_limited", True, 3.0),
        (Planned(429, 8, "Blocked: this looks like spam"), "spam_rejected", False, None),
        (Planned(500, None, "Internal error"), "server_error", True, None),
        (Planned(503, None, "Unavailable", {"Retry-After": "2"}), "server_error", True, 2.0),
        (Planned(400, 1, "Invalid URL"), "invalid_url", False, None),
        (Planned(403, 233, "Image too small"), "invalid_media", False, None),
        (Planned(403, 235, "Image broken"), "invalid_media", False, None),
        (Planned(403, 29, "You are not permitted"), "forbidden", False, None),
        (Planned(404, 2031, "Section not found."), "section_not_found", False, None),
    ],
)
def test_error_classes(fake, publisher, clock, planned, code, retryable, retry_after) -> None:
    fake.plan(planned)
    result = publisher.publish(live_job(clock), 1)
    assert isinstance(result, AttemptFailure)
    assert (result.code, result.retryable, result.ambiguous) == (code, retryable, False)
    assert result.retry_after == retry_after
    assert result.receipt["status"] == planned.status
    assert result.receipt["pinterest_code"] == planned.code
    assert result.receipt["x_pinterest_rid"].startswith("rid-")
    assert str(planned.status) in result.message


def test_unauthorized_and_missing_board_from_the_server(fake, publisher, clock) -> None:
    bad_token = publisher.publish(live_job(clock, account_id="acct-unknown-token"), 1)
    assert isinstance(bad_token, AttemptFailure)
    assert (bad_token.code, bad_token.retryable) == ("unauthorized", False)
    fake.boards = {"board-1"}
    missing = publisher.publish(live_job(clock, "B", board_id="board-gone"), 1)
    assert isinstance(missing, AttemptFailure)
    assert (missing.code, missing.retryable) == ("board_not_found", False)
    no_token = publisher.publish(live_job(clock, "C", account_id="acct-nobody"), 1)
    assert isinstance(no_token, AttemptFailure)
    assert no_token.code == "unauthorized" and not no_token.retryable
    assert len(fake.posts) == 2  # no token: nothing was sent


def test_timeout_after_sending_is_ambiguous(fake, publisher, clock) -> None:
    fake.plan(Planned(201, delay=1.5))
    result = publisher.publish(live_job(clock), 1)
    assert isinstance(result, AttemptFailure)
    assert (result.code, result.retryable, result.ambiguous) == ("timeout", True, True)


def test_connection_refused_is_retryable_not_ambiguous(clock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = PinterestPublisher(f"http://127.0.0.1:{port}", TOKENS, timeout_seconds=0.5)
    try:
        result = p.publish(live_job(clock), 1)
    finally:
        p.close()
    assert isinstance(result, AttemptFailure)
    assert (result.code, result.retryable, result.ambiguous) == ("network_error", True, False)


def test_reconcile_matches_link_and_title_since_the_attempt(fake, publisher, clock) -> None:
    job = live_job(clock)
    since = clock.now()
    assert publisher.reconcile(job, since) is None
    publisher.publish(live_job(clock, "Another pin"), 1)
    assert publisher.reconcile(job, since) is None
    publisher.publish(job, 1)
    found = publisher.reconcile(job, since)
    assert isinstance(found, Published)
    assert found.external_ref == fake.pins_for("A cat")[0]["id"]
    assert found.receipt["reconciled"] is True
    clock.advance(3600)  # a pin older than the attempt (less the skew margin) is not ours
    assert publisher.reconcile(job, clock.now()) is None


def test_reconcile_pages_through_the_board(fake, publisher, clock) -> None:
    job = live_job(clock)
    since = clock.now()
    publisher.publish(job, 1)
    for i in range(120):  # newer pins push ours onto the second page
        fake._store({"board_id": "board-1", "title": f"filler {i}", "link": "https://x.test/"})
    found = publisher.reconcile(job, since)
    assert isinstance(found, Published)
    assert found.receipt["pages_read"] == 2


def test_failed_listing_is_reported_never_guessed(fake, publisher, clock) -> None:
    fake.tokens = set()
    result = publisher.reconcile(live_job(clock), clock.now())
    assert isinstance(result, AttemptFailure)
    assert result.code == "unauthorized"  # terminal: the token is wrong for listing too


# -- through the worker, on both stores --


@pytest.fixture
def live_harness(ledger, service, clock, fake) -> Iterator[Harness]:
    store = SqlStore(service.database)
    p = PinterestPublisher(fake.base_url, TOKENS, timeout_seconds=0.5)
    yield Harness(ledger, store, clock, publishers={"pinterest": p})
    p.close()
    store.close()


def test_timeout_whose_pin_was_created_is_reconciled_without_a_second_post(
    live_harness, fake
) -> None:
    fake.plan(Planned(201, delay=1.5))  # creates the pin, answers too late
    job_id = live_harness.create("k1", mode="pinterest", pin={"title": "Timed out"})
    job = live_harness.until_final(job_id)
    assert job.state == "published"
    assert len(fake.posts_for("Timed out")) == 1  # reconciliation found it: no second POST
    assert job.external_ref == fake.pins_for("Timed out")[0]["id"]
    events = live_harness.ledger.job_events(job_id)
    failed = [e for e in events if type(e).__name__ == "AttemptFailed"]
    assert [(e.error_code, e.ambiguous) for e in failed] == [("timeout", True)]
    published = events[-1]
    assert published.attempt == 2
    assert published.receipt["reconciled"] is True
    assert published.receipt["x_pinterest_rid"].startswith("rid-")


def test_timeout_whose_pin_was_not_created_is_posted_again(live_harness, fake) -> None:
    fake.plan(Planned(504, None, "Gateway timeout", delay=1.5))  # nothing created
    job_id = live_harness.create("k1", mode="pinterest", pin={"title": "Lost"})
    job = live_harness.until_final(job_id)
    assert job.state == "published"
    assert len(fake.posts_for("Lost")) == 2
    assert len(fake.pins_for("Lost")) == 1
    assert fake.lists == 1  # reconciled once, found nothing, then posted


def test_live_terminal_and_rate_limited_then_published(live_harness, fake) -> None:
    fake.plan(Planned(429, 8, "Too many requests", {"Retry-After": "90"}))
    job_id = live_harness.create("k1", mode="pinterest", pin={"title": "Busy"})
    live_harness.step()
    live_harness.step()
    job = live_harness.ledger.get_job(job_id)
    assert job.state == "failed_retrying"
    failed = live_harness.ledger.job_events(job_id)[-1]
    assert failed.delay_seconds >= 90  # Retry-After is the floor
    assert failed.receipt["x_pinterest_rid"].startswith("rid-")
    assert live_harness.until_final(job_id).state == "published"
    fake.plan(Planned(403, 235, "Image broken"))
    bad = live_harness.create("k2", mode="pinterest", pin={"title": "Broken"})
    job = live_harness.until_final(bad)
    assert (job.state, job.last_error["code"]) == ("failed_terminal", "invalid_media")
