"""`ledger serve --processes N`: N serving processes share one port under uvicorn's supervisor;
a process killed with SIGKILL is replaced and nothing it held is lost; SIGTERM stops them all
with exit code 0. PostgreSQL only (SQLite is refused with the reason)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import job_body
from tests.serving import free_port

ADMIN_KEY = "processes-admin-key-0123456789"
pytestmark = pytest.mark.slow


def serving_children(parent: int) -> set[int]:
    """The supervisor's serving processes (multiprocessing spawns them via `spawn_main`)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def wait_for(what: str, condition: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def two_processes(
    postgres_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": postgres_url,
        "LEDGER_ADMIN_KEY": ADMIN_KEY,
        "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
        "LEDGER_WORKER_POLL_SECONDS": "0.2",
        "LEDGER_WORKER_LEASE_SECONDS": "5",  # a killed process's claims lapse soon
        # and the job it held (retried as worker_lost) runs again soon after
        "LEDGER_JOB_RETRY_BASE_SECONDS": "0.05",
        "LEDGER_JOB_RETRY_CAP_SECONDS": "0.5",
    }
    subprocess.run(  # migrate once, so the serving processes start side by side
        [sys.executable, "-m", "jobledger.cli", "projections", "status"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jobledger.cli", "serve", "--processes", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("the service to answer", ready)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for child in serving_children(process.pid):
            os.kill(child, signal.SIGKILL)
        log.close()


def test_processes_share_the_port_and_a_killed_one_is_replaced(
    two_processes: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = two_processes
    wait_for("two serving processes", lambda: len(serving_children(process.pid)) == 2)
    first = serving_children(process.pid)
    with httpx.Client(base_url=base, timeout=30) as client:
        tenant = client.post(
            "/v1/tenants", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ).json()
        client.headers["Authorization"] = f"Bearer {tenant['key']['token']}"

        def create(key: str) -> str:
            answer = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": key})
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

        jobs = [create(f"before-{i}") for i in range(10)]
        os.kill(min(first), signal.SIGKILL)
        wait_for(
            "the killed process to be replaced",
            lambda: (
                len(serving_children(process.pid)) == 2 and serving_children(process.pid) != first
            ),
        )
        wait_for("the service to answer again", lambda: _healthy(client))
        jobs += [create(f"after-{i}") for i in range(5)]

        def all_published() -> bool:
            states = [client.get(f"/v1/jobs/{job}").json()["state"] for job in jobs]
            return all(state == "published" for state in states)

        # The worker runs inside the serving processes (role all): every job, including any
        # the killed process had claimed (its lease lapses), is published.
        wait_for("every job to be published", all_published, seconds=180)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=90) == 0
    assert serving_children(process.pid) == set()


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_several_processes_need_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobledger.cli", "serve", "--processes", "2", "--port", "0"],
        env={**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "LEDGER_PROCESSES > 1 needs PostgreSQL" in done.stderr
