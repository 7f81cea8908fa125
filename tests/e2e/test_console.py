"""The operations console (`/ui/`) in a real browser: headless Debian chromium driven by
Playwright against a real uvicorn serving the real app.

One browser per module (each test gets a fresh browser context, so cookies never leak between
tests); every test has its own server and database. SQLite only: the console's pages are the
same code over the same read-model queries that the API's contract tests already run on both
stores, so a second browser pass on PostgreSQL would add minutes and no coverage.

The browser is /usr/bin/chromium (Debian's package; `make test` installs it when missing). A
Playwright-downloaded browser is never used. Without /usr/bin/chromium these tests skip, except
when CI is set, where they must run.

Screenshots of every page go to tests/artifacts/ (gitignored); with
LEDGER_UPDATE_SCREENSHOTS=1 the queue page also goes to docs/console.png, the README's picture.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN_KEY, Server, Tenant, job_body, make_tenant

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
# read at import: the autouse fixture clears LEDGER_* variables before each test
UPDATE_SCREENSHOTS = bool(os.environ.get("LEDGER_UPDATE_SCREENSHOTS"))

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "the console's browser tests need Debian's chromium at /usr/bin/chromium "
        "(`apt-get install chromium`, or `make test`); they run whenever CI is set",
        allow_module_level=True,
    )

if not os.environ.get("CI"):
    pytest.importorskip(
        "playwright.sync_api", reason="install the test extra: pip install -e .[test]"
    )
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

WAIT_MS = 10_000


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (see the module docstring)."""
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],  # root in containers
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def site(api: Server, admin: httpx.Client, tenant: Tenant) -> dict[str, Any]:
    return {"api": api, "admin": admin, "tenant": tenant}


@pytest.fixture
def signed_in(browser: Browser, api: Server) -> Iterator[Callable[[str], Page]]:
    contexts = []

    def sign_in(token: str) -> Page:
        context = browser.new_context(
            base_url=api.base_url, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto("/ui/login")
        page.get_by_label("API key").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", level=1, name="Queue")).to_be_visible()
        return page

    yield sign_in
    for context in contexts:
        context.close()


def new_job(tenant: Tenant, **overrides: Any) -> str:
    created = tenant.writer.post(
        "/v1/jobs", json=job_body(**overrides), headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def csrf_of(page: Page) -> str:
    token = page.locator('form[action="/ui/logout"] input[name="csrf_token"]').input_value()
    assert token
    return token


def test_sign_in_sets_a_strict_http_only_session_without_the_key(
    signed_in: Callable[[str], Page], tenant: Tenant
) -> None:
    token = tenant.writer.headers["Authorization"].removeprefix("Bearer ")
    page = signed_in(token)
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "ledger_console"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert token not in cookie["value"] and token.split("_")[-1] not in cookie["value"]
    shoot(page, "queue-empty")


def test_wrong_key_is_refused(browser: Browser, api: Server) -> None:
    context = browser.new_context(base_url=api.base_url)
    try:
        page = context.new_page()
        page.goto("/ui/login")
        page.get_by_label("API key").fill("jlk_nope_nope")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not valid")
        assert context.cookies() == []
        shoot(page, "login-refused")
        assert page.goto("/ui/").url.endswith("/ui/login")  # no session: sign in first
    finally:
        context.close()


def test_queue_updates_itself_as_a_job_is_published(
    signed_in: Callable[[str], Page], api: Server, admin: httpx.Client, tenant: Tenant
) -> None:
    ledger = api.ledger
    hook = tenant.writer.post(
        "/v1/endpoints", json={"url": "https://hooks.example.com/hook", "event_types": ["*"]}
    )
    assert hook.status_code == 201, hook.text
    job_id = new_job(tenant)
    waiting = new_job(tenant, account_id="acct-2", board_id="board-7")
    ledger.schedule(uuid.UUID(waiting))
    page = signed_in(ADMIN_KEY)  # admin: every tenant
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator("td.state")).to_have_text("queued")
    page.evaluate("window.__sameDocument = true")

    ledger.schedule(uuid.UUID(job_id))
    expect(row.locator("td.state")).to_have_text("scheduled")
    ledger.start_attempt(uuid.UUID(job_id), worker_id="console-test", lease_seconds=60)
    expect(row.locator("td.state")).to_have_text("running")
    ledger.record_success(
        uuid.UUID(job_id),
        attempt=1,
        external_ref="pin-123",
        receipt={"status_code": 201},
        actor="worker:console-test",
    )
    expect(row).to_have_count(0)  # no longer waiting or running
    expect(page.locator('.count[data-state="published"] dd')).to_have_text("1")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    shoot(page, "queue")
    if UPDATE_SCREENSHOTS:  # tests never change the docs by themselves
        page.screenshot(path=str(ROOT / "docs" / "console.png"), full_page=True)

    page.get_by_role("link", name="Outcomes").click()
    expect(page.locator(f'a[href="/ui/jobs/{job_id}"]')).to_be_visible()
    shoot(page, "outcomes")
    page.locator(f'a[href="/ui/jobs/{job_id}"]').click()
    expect(page.locator("#job-state")).to_have_text("published")
    expect(page.locator(".story")).to_contain_text("published the pin")
    expect(page.locator(".receipt")).to_contain_text(job_id)
    expect(page.locator(".delivery").first).to_contain_text("job.queued")  # the webhook fan-out
    shoot(page, "job")
    page.get_by_role("link", name="Stuck").click()
    expect(page.get_by_role("heading", level=1, name="Stuck jobs")).to_be_visible()
    shoot(page, "stuck")
    page.get_by_role("link", name="Endpoints").click()
    expect(page.locator("td code", has_text="https://hooks.example.com/hook")).to_be_visible()
    expect(page.locator("svg.chart title").first).to_have_text("Delivery latency per endpoint (ms)")
    shoot(page, "endpoints")
    page.get_by_role("button", name="Recover").click()  # nothing to recover: back to the list
    expect(page.get_by_role("heading", level=1, name="Webhook endpoints")).to_be_visible()


def test_writer_cancels_a_scheduled_job(
    signed_in: Callable[[str], Page], api: Server, tenant: Tenant
) -> None:
    job_id = new_job(tenant)
    api.ledger.schedule(uuid.UUID(job_id))
    page = signed_in(tenant.writer.headers["Authorization"].removeprefix("Bearer "))
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("scheduled")
    page.get_by_label("Reason (optional)").fill("customer asked")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("canceled")
    expect(page.locator(".story")).to_contain_text("customer asked")
    assert str(api.ledger.state_of(uuid.UUID(job_id))) == "canceled"
    shoot(page, "job-canceled")


def test_writer_retries_a_dead_lettered_delivery_from_the_job_page(
    signed_in: Callable[[str], Page], api: Server, tenant: Tenant
) -> None:
    hook = tenant.writer.post(
        "/v1/endpoints", json={"url": "https://hooks.example.com/dead", "event_types": ["*"]}
    )
    assert hook.status_code == 201, hook.text
    job_id = new_job(tenant)
    deadline = time.monotonic() + 10
    while not (made := tenant.writer.get("/v1/deliveries").json()["deliveries"]):
        assert time.monotonic() < deadline, "the fan-out made no delivery"
        time.sleep(0.05)
    delivery_id = uuid.UUID(made[0]["id"])
    api.ledger.record_delivery_attempt(  # the only attempt failed: dead-lettered
        delivery_id,
        attempt=1,
        succeeded=False,
        receipt={"status_code": 500, "error_class": "http_status", "error": "HTTP 500"},
        next_attempt_at=None,
        actor="delivery:console-test",
    )
    dead = tenant.writer.get("/v1/deliveries", params={"state": "dead_lettered"}).json()
    assert [d["id"] for d in dead["deliveries"]] == [str(delivery_id)]  # the views caught up
    page = signed_in(tenant.writer.headers["Authorization"].removeprefix("Bearer "))
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator(".delivery").first).to_contain_text("dead_lettered")
    page.get_by_role("button", name="Retry this delivery").click()
    expect(page.locator(".delivery").first).to_contain_text("pending")
    assert str(api.ledger.get_delivery(delivery_id, tenant_id=None).state) == "pending"
    shoot(page, "job-delivery-retried")


def test_reader_sees_no_cancel_button_and_a_forged_post_is_refused(
    signed_in: Callable[[str], Page], api: Server, tenant: Tenant
) -> None:
    job_id = new_job(tenant)
    api.ledger.schedule(uuid.UUID(job_id))
    page = signed_in(tenant.reader.headers["Authorization"].removeprefix("Bearer "))
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("scheduled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    forged = page.request.post(
        f"/ui/jobs/{job_id}/cancel", form={"csrf_token": csrf_of(page)}, max_redirects=0
    )
    assert forged.status == 403
    assert "may not cancel or requeue jobs" in forged.text()
    assert str(api.ledger.state_of(uuid.UUID(job_id))) == "scheduled"


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
    signed_in: Callable[[str], Page], api: Server, tenant: Tenant
) -> None:
    job_id = new_job(tenant)
    api.ledger.schedule(uuid.UUID(job_id))
    page = signed_in(tenant.writer.headers["Authorization"].removeprefix("Bearer "))
    token = csrf_of(page)
    for form in ({}, {"csrf_token": "x" * len(token)}, {"csrf_token": token[:-1]}):
        refused = page.request.post(f"/ui/jobs/{job_id}/cancel", form=form, max_redirects=0)
        assert refused.status == 403, form
        assert "security token" in refused.text()
    assert str(api.ledger.state_of(uuid.UUID(job_id))) == "scheduled"
    page.goto(f"/ui/jobs/{job_id}")
    page.evaluate(
        "document.querySelector('form[action$=\"/cancel\"] input[name=csrf_token]').value = 'bad'"
    )
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("403")
    shoot(page, "csrf-refused")


def test_another_tenants_job_is_not_found(
    signed_in: Callable[[str], Page], api: Server, admin: httpx.Client, tenant: Tenant
) -> None:
    other = make_tenant(api, admin, "Other")
    theirs = new_job(other)
    page = signed_in(tenant.writer.headers["Authorization"].removeprefix("Bearer "))
    response = page.goto(f"/ui/jobs/{theirs}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_contain_text("404")
    refused = page.request.post(
        f"/ui/jobs/{theirs}/cancel", form={"csrf_token": csrf_of(page)}, max_redirects=0
    )
    assert refused.status == 404
    shoot(page, "not-found")


def test_a_revoked_key_is_signed_out(
    signed_in: Callable[[str], Page], admin: httpx.Client, tenant: Tenant
) -> None:
    page = signed_in(tenant.reader.headers["Authorization"].removeprefix("Bearer "))
    revoked = admin.delete(f"/v1/tenants/{tenant.id}/keys/{tenant.reader_key_id}")
    assert revoked.status_code in (200, 204), revoked.text
    page.goto("/ui/stuck")
    assert page.url.endswith("/ui/login")
