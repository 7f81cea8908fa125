"""`ledger serve` as a real process, with keys made by the `ledger` CLI in other processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.config import parse_database_url
from tests.e2e.conftest import job_body
from tests.e2e.store_proxy import StoreProxy
from tests.serving import free_port, serving, start_serve, wait_for_log

ADMIN_KEY = "serve-admin-key-0123456789"
METRICS_TOKEN = "serve-metrics-token-0123456789"


def ledger_cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "jobledger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_ADMIN_KEY": ADMIN_KEY,
        "LEDGER_MAX_BODY_BYTES": "4096",
        "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
        "LEDGER_METRICS_TOKEN": METRICS_TOKEN,
        "LEDGER_STUCK_QUEUED_SECONDS": "450",
        "LEDGER_READY_MAX_LAG_EVENTS": "50",
    }
    with serving(env, tmp_path) as served:
        yield served.base_url, env


def test_ledger_serve_with_cli_made_keys(served: tuple[str, dict[str, str]]) -> None:
    base, env = served
    tenant = ledger_cli(env, "tenants", "create", "Acme", "--json")
    key = tenant["key"]
    assert isinstance(key, dict)
    reader = ledger_cli(
        env, "keys", "create", "--tenant", str(tenant["id"]), "--role", "reader", "--json"
    )
    admin = ledger_cli(env, "keys", "create", "--admin", "--label", "ops", "--json")
    assert admin["role"] == "admin"
    assert admin["tenant_id"] is None

    with httpx.Client(base_url=base, timeout=30) as client:
        writer = {"Authorization": f"Bearer {key['token']}"}
        created = client.post(
            "/v1/jobs", json=job_body(), headers={**writer, "Idempotency-Key": "serve-1"}
        )
        assert created.status_code == 201
        job_id = created.json()["id"]
        as_reader = client.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {reader['token']}"}
        )
        assert as_reader.status_code == 200
        refused = client.post(
            f"/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {reader['token']}"}
        )
        assert refused.status_code == 403
        for token in (admin["token"], ADMIN_KEY):  # a CLI admin key and the bootstrap one
            listed = client.get(
                f"/v1/tenants/{tenant['id']}/keys", headers={"Authorization": f"Bearer {token}"}
            )
            assert listed.status_code == 200
            assert len(listed.json()["keys"]) == 2
        too_big = client.post(
            "/v1/jobs",
            content=b" " * 5000,
            headers={**writer, "Idempotency-Key": "big", "Content-Type": "application/json"},
        )
        assert too_big.status_code == 413  # LEDGER_MAX_BODY_BYTES reached the app
        document = client.get("/openapi.json").json()
        assert "4096 bytes" in document["info"]["description"]


def test_ledger_serve_reports_stuck_jobs_metrics_and_readiness(
    served: tuple[str, dict[str, str]],
) -> None:
    base, env = served
    tenant = ledger_cli(env, "tenants", "create", "Acme", "--json")
    key = tenant["key"]
    assert isinstance(key, dict)
    with httpx.Client(base_url=base, timeout=30) as client:
        writer = {"Authorization": f"Bearer {key['token']}"}
        report = client.get("/v1/ops/stuck", headers=writer)
        assert report.status_code == 200, report.text
        assert report.json()["tenant_id"] == tenant["id"]
        assert report.json()["thresholds"]["queued_seconds"] == 450.0  # from the environment

        assert client.get("/metrics").status_code == 401  # LEDGER_METRICS_TOKEN is set
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200
        assert 'ledger_projection_lag_events{projection="job_status"}' in scraped.text

        ready = client.get("/readyz").json()
        assert ready["max_lag_events"] == 50
        assert "job_status" in ready["projections"]


@pytest.mark.postgres
def test_serve_waits_for_an_unreachable_store_at_start_up(
    postgres_url: str, tmp_path: Path
) -> None:
    """Started while its database refuses connections, the worker waits (logging each try)
    and starts once the store is back, instead of exiting for a supervisor to restart."""
    database = parse_database_url(postgres_url)
    proxy = StoreProxy((database.host, database.port))
    proxy.cut()
    url = postgres_url.replace(f"@{database.host}:{database.port}/", f"@127.0.0.1:{proxy.port}/")
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_STARTUP_WAIT_SECONDS": "120",
        "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
    }
    log = tmp_path / "serve.log"
    process = start_serve(env, tmp_path, "--role", "worker")
    try:
        wait_for_log(process, log, "start-up try 2: the store is unreachable or busy")
        proxy.restore()
        wait_for_log(process, log, "ledger worker on")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        proxy.close()
    assert "Traceback" not in log.read_text()


def test_serve_gives_up_on_the_store_after_the_start_up_wait(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        "LEDGER_STARTUP_WAIT_SECONDS": "1.5",
    }
    process = start_serve(env, tmp_path, "--role", "worker")
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    output = (tmp_path / "serve.log").read_text()
    assert code == 1, output
    assert "start-up try 1: the store is unreachable or busy" in output
    assert "could not be reached within LEDGER_STARTUP_WAIT_SECONDS=1.5" in output
    assert "Traceback" not in output
