"""Receiver chaos (issue 9, item 3): the real sender, as `ledger serve --role delivery` in its
own process, delivers a batch of jobs' `job.queued` events to seven endpoints on 127.0.0.1 at
once: a healthy one, one that resets every connection, one that hangs past the timeout, a slow
one (inside the timeout), one that answers a 50 MB body, one that redirects and one that flaps
(500, 204, 500, ...). Checked, on both stores:

- the healthy, slow, huge-body and flapping endpoints get every event (each delivery ends
  `succeeded`, with one `webhook-id` per delivery), whatever the others do;
- every attempt on the bad endpoints is recorded with the right failure class (`connection`,
  `timeout`, `redirect` with its 307), a huge body's excerpt stays within the receipt limit;
- the delivery process's resident memory stays bounded: sampled from /proc all along, its peak
  is within `RSS_GROWTH_LIMIT` of its size once it was delivering, while 50 MB bodies were
  offered to it again and again (buffering even one would blow the bound).

Quick mode: 10 jobs (70 deliveries); full mode: 300 jobs (2,100 deliveries).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from delivery.http import RESPONSE_BODY_LIMIT
from jobledger.bootstrap import Service
from ledger.endpoint import EndpointSettings
from projections.delivery_queue import list_deliveries
from storage.sql import SqlStore
from tests.conftest import TEST_SECRET_KEY, make_new_job
from tests.fakes.receiver import Receiver, Reply, redirect, running_receiver, slow
from tests.reliability.conftest import Figures, Mode, store_of

HUGE_BYTES = 50 * 1024 * 1024
RSS_GROWTH_LIMIT = 40 * 1024 * 1024
TIMEOUT_SECONDS = 2.0
HANG_SECONDS = 30.0
SLOW_SECONDS = 0.3
MUST_SUCCEED = ("healthy", "slow", "huge", "flap")
FAILS_AS = {"reset": "connection", "hang": "timeout", "redirect": "redirect"}


class RawServer:
    """A raw TCP receiver. `huge`: answers every request with `200` and a 50 MB body, streamed
    in 64 KiB chunks until the client hangs up. `reset`: reads the request, then closes the
    connection with a TCP reset (SO_LINGER 0) instead of answering."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        chunk = b"x" * 65536
        with conn:
            conn.settimeout(10)
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        return
                    request += data
                head, _, body = request.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    body += data
                with self._lock:
                    self.requests += 1
                if self.behaviour == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {HUGE_BYTES}\r\n\r\n".encode()
                )
                left = HUGE_BYTES
                while left > 0 and not self._stop.is_set():
                    conn.sendall(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
                    with self._lock:
                        self.sent += len(chunk)
            except OSError:
                return  # the client hung up after its excerpt: expected

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.behaviour}"

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RssSampler:
    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            except (OSError, AssertionError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Reply(204)) as started:
        yield started


@pytest.fixture
def huge() -> Iterator[RawServer]:
    server = RawServer("huge")
    yield server
    server.stop()


@pytest.fixture
def resetting() -> Iterator[RawServer]:
    server = RawServer("reset")
    yield server
    server.stop()


@pytest.fixture
def delivery_process(
    database_url: str, service: Service, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "delivery.log"
    logs: list[Any] = []

    def start() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_SECRET_KEY": TEST_SECRET_KEY,
            "LEDGER_ALLOW_PRIVATE_TARGETS": "1",
            "LEDGER_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "LEDGER_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.5,0.5,0.5",
            "LEDGER_WEBHOOK_DISABLE_AFTER_DEAD_LETTERS": "1000000",
            "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
        }
        logs.append(log_path.open("w"))
        process = subprocess.Popen(
            [sys.executable, "-m", "jobledger.cli", "serve", "--role", "delivery"],
            env=env,
            stdout=logs[-1],
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    for log in logs:
        log.close()


def deliveries_of(store: SqlStore, endpoint_id: UUID) -> list[dict[str, Any]]:
    with store.transaction() as tx:
        page = list_deliveries(tx, endpoint_id=str(endpoint_id), limit=100_000)
    return [orjson.loads(doc) for doc in page.docs]


def test_receiver_chaos(
    service: Service,
    receiver: Receiver,
    huge: RawServer,
    resetting: RawServer,
    delivery_process: Callable[[], subprocess.Popen[bytes]],
    mode: Mode,
    figures: Figures,
    database_url: str,
    tmp_path: Path,
) -> None:
    jobs = mode.pick(10, 300)
    started = time.monotonic()
    ledger = service.ledger
    tenant_id = str(ledger.create_tenant("Chaos", actor="admin:test").tenant.id)
    receiver.script("/hang", then=slow(HANG_SECONDS, Reply(204)))
    receiver.script("/slow", then=slow(SLOW_SECONDS, Reply(204)))
    receiver.script("/redirect", then=redirect("http://127.0.0.1:9/elsewhere"))
    # flaps: down one answer in three (any delivery gets through within its 6 attempts)
    receiver.script("/flap", *([Reply(500), Reply(204), Reply(204)] * jobs), then=Reply(204))
    urls = {
        name: receiver.url(f"/{name}") for name in ("healthy", "hang", "slow", "redirect", "flap")
    }
    urls["huge"] = huge.url()
    urls["reset"] = resetting.url()
    endpoints = {
        name: ledger.register_endpoint(
            tenant_id,
            EndpointSettings(url=url, event_types=("job.queued",)).checked(),
            actor="admin:test",
        ).endpoint.id
        for name, url in urls.items()
    }
    process = delivery_process()
    sampler = RssSampler(process.pid)
    store = SqlStore(service.database)
    try:
        for n in range(jobs):
            ledger.create_job(
                make_new_job(), tenant_id=tenant_id, idempotency_key=f"chaos-{n}", actor="key:k"
            )
        # warm: the process is delivering (the first events reached the healthy endpoint)
        receiver.wait_for(1, timeout=60, path="/healthy")
        warm = rss_bytes(process.pid)

        def progress() -> dict[str, dict[str, int]]:
            assert process.poll() is None, (tmp_path / "delivery.log").read_text()[-3000:]
            seen: dict[str, dict[str, int]] = {}
            for name, endpoint_id in endpoints.items():
                found = deliveries_of(store, endpoint_id)
                states: dict[str, int] = {"tried": sum(d["attempts"] >= 1 for d in found)}
                for d in found:
                    states[d["state"]] = states.get(d["state"], 0) + 1
                seen[name] = states
            return seen

        def settled(seen: dict[str, dict[str, int]]) -> bool:
            return all(seen[n].get("succeeded", 0) == jobs for n in MUST_SUCCEED) and all(
                seen[n]["tried"] == jobs for n in FAILS_AS
            )

        deadline = time.monotonic() + mode.pick(180, 900)
        while not settled(seen := progress()):
            assert time.monotonic() < deadline, f"the chaos run did not settle: {seen}"
            time.sleep(0.5)
    finally:
        sampler.stop()
    took = time.monotonic() - started
    peak = max(rss for _, rss in sampler.samples)
    assert process.poll() is None, "the delivery process died"

    healthy = receiver.requests_for("/healthy")
    ids = {r.headers["webhook-id"] for r in healthy}
    assert len(ids) == jobs  # every event once per delivery id; retries keep the id
    failures: dict[str, int] = {}
    for name in FAILS_AS:
        attempts = [
            a for d in deliveries_of(store, endpoints[name]) for a in attempts_of(ledger, d)
        ]
        assert attempts and all(not a.succeeded for a in attempts), name
        classes = {a.receipt["error_class"] for a in attempts}
        assert classes == {FAILS_AS[name]}, (name, classes)
        if name == "redirect":
            assert {a.receipt["status_code"] for a in attempts} == {307}
        failures[name] = len(attempts)
    huge_attempts = [
        a for d in deliveries_of(store, endpoints["huge"]) for a in attempts_of(ledger, d)
    ]
    assert all(a.succeeded for a in huge_attempts)
    assert all(len(a.receipt["response_body"]) <= RESPONSE_BODY_LIMIT for a in huge_attempts)
    assert huge.requests >= jobs
    flap_attempts = [
        a for d in deliveries_of(store, endpoints["flap"]) for a in attempts_of(ledger, d)
    ]
    flapped = [a for a in flap_attempts if not a.succeeded]
    assert flapped and {a.receipt["status_code"] for a in flapped} == {500}
    growth = peak - warm
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB (peak {peak / 2**20:.1f})"

    store_name = store_of(database_url)
    figures.record(f"chaos: jobs ({store_name})", jobs, "jobs")
    figures.record(f"chaos: time to settle ({store_name})", round(took, 1), "s")
    figures.record(f"chaos: deliveries ({store_name})", jobs * len(endpoints), "deliveries")
    figures.record(
        f"chaos: failed attempts recorded ({store_name})",
        sum(failures.values()) + len(flapped),
        "attempts",
        **failures,
        flap=len(flapped),
    )
    figures.record(f"chaos: huge bodies offered ({store_name})", huge.requests, "x 50 MB")
    figures.record(f"chaos: delivery RSS peak ({store_name})", round(peak / 2**20, 1), "MiB")
    figures.record(f"chaos: delivery RSS growth ({store_name})", round(growth / 2**20, 1), "MiB")
    store.close()


def attempts_of(ledger: Any, delivery: dict[str, Any]) -> list[Any]:
    return list(ledger.delivery_attempts(UUID(delivery["id"])))
