"""Shared helpers of the reliability suite: real `ledger serve` processes, bounded waits, RSS
sampling, latency summaries and the receivers' answer patterns.

- `Cluster`: `ledger serve --role ...` processes on one database, each with its own log file
  under the test's tmp dir. `start` waits (bounded) until an HTTP role answers /healthz;
  `kill` is SIGKILL and reaps; `restart` starts the same process again (same port, same
  environment); `stop_all` sends SIGTERM and returns the exit codes. `check_alive` fails with
  the process's log when it died without being killed by the test.
- `wait_until(predicate, what, timeout, cluster=...)`: poll with a deadline; every poll also
  checks the cluster's processes, so a crash fails at once with its log instead of timing out.
- `RssSampler`: samples each live process's resident set size (from /proc) in a thread.
- `Latencies`: per-operation latency samples and error counts, summarised as p50/p99/max.
- `every_nth_fails` / `ledger_cli`: a flaky receiver's answers; the `ledger` CLI as a process.

Everything runs on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.fakes.receiver import Answer, Reply
from tests.serving import free_port

T = TypeVar("T")

LEDGER = str(Path(sys.executable).parent / "ledger")
HTTP_ROLES = ("api", "all")

# Settings that make a test cluster quick to react: short polls and leases, fast job retries,
# pacing out of the way, no audit checkpoint thread, small pools (2 cores, several processes).
FAST_ENV: dict[str, str] = {
    "LEDGER_ALLOW_PRIVATE_TARGETS": "1",
    "LEDGER_WORKER_POLL_SECONDS": "0.2",
    "LEDGER_WORKER_LEASE_SECONDS": "3",
    "LEDGER_WORKER_CONCURRENCY": "8",
    "LEDGER_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
    "LEDGER_JOB_RETRY_BASE_SECONDS": "0.05",
    "LEDGER_JOB_RETRY_CAP_SECONDS": "0.5",
    "LEDGER_JOB_MAX_ATTEMPTS": "50",
    "LEDGER_PACING_ACCOUNT_CAPACITY": "1000000",
    "LEDGER_PACING_ACCOUNT_REFILL_PER_SECOND": "100000",
    "LEDGER_PACING_GLOBAL_CAPACITY": "1000000",
    "LEDGER_PACING_GLOBAL_REFILL_PER_SECOND": "100000",
    "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
    "LEDGER_DB_POOL_SIZE": "4",
    "LEDGER_DB_MAX_OVERFLOW": "4",
    "LEDGER_WEBHOOK_TIMEOUT_SECONDS": "2",
    # ten attempts within about ten seconds instead of about a day
    "LEDGER_WEBHOOK_RETRY_SCHEDULE": "0.2,0.5,1,1,1,2,2,2,2",
    "LEDGER_READY_MAX_LAG_EVENTS": "1000000",
    # The machine is shared and loaded: give the store breaker time before it calls an outage
    # (a busy pool is not one), and let one test key drive the API as fast as it can.
    "LEDGER_DB_FAIL_FAST_SECONDS": "5",
    "LEDGER_RATE_LIMIT_PER_SECOND": "0",
}


STARTUP_WAIT = "start-up try"  # what jobledger.serve logs for each start-up retry


class ProcessDied(AssertionError):
    pass


def wait_until(
    predicate: Callable[[], T | None],
    what: str,
    timeout: float,
    *,
    cluster: Cluster | None = None,
    interval: float = 0.1,
) -> T:
    """Poll `predicate` until it answers something truthy (returned); fail after `timeout` s,
    or at once when a process of `cluster` died without the test killing it."""
    deadline = time.monotonic() + timeout
    while True:
        if cluster is not None:
            cluster.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class ServeProcess:
    name: str
    role: str
    log_path: Path
    env: dict[str, str]
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    killed: int = 0
    starts: int = 0

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} ({self.role}) serves no HTTP"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


class Cluster:
    """`ledger serve` processes on one database (see the module docstring)."""

    def __init__(self, database_url: str, tmp: Path, env: Mapping[str, str] | None = None):
        self.tmp = tmp
        self.env: dict[str, str] = {
            **os.environ,
            **FAST_ENV,
            "LEDGER_DATABASE_URL": database_url,
            **(env or {}),
        }
        self.procs: dict[str, ServeProcess] = {}
        self.startup_waits = 0
        self.command = [LEDGER, "serve"]
        if os.environ.get("RELIABILITY_SERVE_TRACEBACKS"):  # debugging: uncaught tracebacks
            self.command = [sys.executable, "-m", "tests.reliability.harness"]

    def start(
        self, name: str, role: str, *, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> ServeProcess:
        proc = self.procs.get(name)
        if proc is None:
            port = free_port() if role in HTTP_ROLES else None
            proc = ServeProcess(
                name,
                role,
                self.tmp / f"{name}.log",
                {**self.env, "LEDGER_WORKER_ID": f"worker:{name}", **(env or {})},
                port,
            )
            self.procs[name] = proc
        assert proc.popen is None or proc.popen.poll() is not None, f"{name} is running"
        command = [*self.command, "--role", role]
        if proc.port is not None:
            command += ["--host", "127.0.0.1", "--port", str(proc.port)]
        with open(proc.log_path, "a") as log:  # the child keeps its own copy
            log.write(f"--- start {proc.starts + 1} ---\n")
            log.flush()
            proc.popen = subprocess.Popen(
                command, env=proc.env, stdout=log, stderr=subprocess.STDOUT
            )
        proc.starts += 1
        if ready:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: ServeProcess, timeout: float = 180.0) -> None:
        """An HTTP role answers /healthz; any other role has logged that it runs. A process
        waits for a store it cannot reach at start-up by itself (`start_serving_process`):
        its retries are counted in `startup_waits` (a figure the tests record). Any early exit
        fails."""
        deadline = time.monotonic() + timeout

        def up() -> bool:
            assert proc.popen is not None
            code = proc.popen.poll()
            if code is not None and code != -signal.SIGKILL:
                raise ProcessDied(f"{proc.name} ({proc.role}) exited {code}:\n{proc.log()}")
            log = proc.log(tail=100_000).rsplit("--- start", 1)[-1]
            if proc.port is None:
                started = f"ledger {proc.role} on" in log
            else:
                try:
                    started = httpx.get(f"{proc.base_url}/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    started = False
            if started:
                self.startup_waits += log.count(STARTUP_WAIT)
            return started

        wait_until(up, f"{proc.name} ({proc.role}) to start", max(0.0, deadline - time.monotonic()))
        self.check_alive()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.popen is not None and proc.popen.poll() is None, f"{name} is not running"
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=30)
        proc.killed += 1

    def restart(self, name: str, *, ready: bool = True) -> ServeProcess:
        return self.start(name, self.procs[name].role, ready=ready)

    def check_alive(self) -> None:
        for proc in self.procs.values():
            code = proc.popen.poll() if proc.popen is not None else None
            if code is not None and code != -signal.SIGKILL:
                raise ProcessDied(f"{proc.name} ({proc.role}) exited {code}:\n{proc.log()}")

    def pids(self) -> dict[str, int]:
        return {name: pid for name, p in self.procs.items() if (pid := p.pid) is not None}

    def stop_all(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every running process, then the exit codes (a process that will not stop
        is killed, and its code is the kill's)."""
        running = [p for p in self.procs.values() if p.popen is not None and p.popen.poll() is None]
        for proc in running:
            assert proc.popen is not None
            proc.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            try:
                codes[proc.name] = proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                codes[proc.name] = proc.popen.wait(timeout=10)
        return codes


def rss_bytes(pid: int) -> int | None:
    """The process's resident set size, or None if it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples RSS of the cluster's live processes every `interval` s in a thread:
    `series[name]` is a list of (seconds since start, bytes)."""

    def __init__(self, cluster: Cluster, interval: float = 1.0) -> None:
        self.cluster = cluster
        self.interval = interval
        self.series: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = 0.0

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self) -> None:
        at = time.monotonic() - self._started
        for name, pid in self.cluster.pids().items():
            rss = rss_bytes(pid)
            if rss is not None:
                self.series[name].append((at, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def growth(self, name: str) -> tuple[float, float, float]:
        """(first-quarter median MiB, last-quarter median MiB, growth as a fraction)."""
        values = [rss for _, rss in self.series[name]]
        assert len(values) >= 8, f"too few RSS samples of {name}: {len(values)}"
        quarter = len(values) // 4
        first = statistics.median(values[:quarter]) / 2**20
        last = statistics.median(values[-quarter:]) / 2**20
        return first, last, (last - first) / first


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Latencies:
    """Latency samples (seconds) and error descriptions per operation; thread-safe."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, operation: str, seconds: float) -> None:
        with self._lock:
            self.samples[operation].append(seconds)

    def error(self, operation: str, what: str) -> None:
        with self._lock:
            self.errors[operation].append(what)

    def error_count(self) -> int:
        with self._lock:
            return sum(len(e) for e in self.errors.values())

    def summary(self, operation: str) -> dict[str, float]:
        with self._lock:
            values = list(self.samples[operation])
        if not values:
            return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        return {
            "count": len(values),
            "p50_ms": round(percentile(values, 0.50) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
        }


def every_nth_fails(count: int, n: int, failure: Answer | None = None) -> list[Answer]:
    """A flaky receiver's script: every `n`th of `count` answers is `failure` (a 500)."""
    bad, good = failure or Reply(500, body=b"flaky"), Reply(204)
    return [bad if i % n == n - 1 else good for i in range(count)]


def ledger_cli(
    env: Mapping[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `ledger ARGS` as a process to completion (bounded by `timeout`)."""
    return subprocess.run(
        [LEDGER, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def read_log(ledger: Any, batch: int = 2000) -> Iterator[tuple[int, Any, Any]]:
    """Every (position, notification, decoded event) of the ledger's log, oldest first."""
    start = 0
    while True:
        notes = ledger.recorder.select_notifications(start, batch, inclusive_of_start=False)
        for note in notes:
            yield note.id, note, ledger.mapper.to_domain_event(note)
        if len(notes) < batch:
            return
        start = notes[-1].id


class JobClient:
    """Creates jobs through the HTTP API as a careful client does: every request carries its
    `Idempotency-Key`, and a connection error, a timeout or a 503 is retried with the same key
    and body until `deadline` seconds have passed (a process being restarted is survivable; a
    4xx or another 5xx is an error, recorded in `latencies`)."""

    RETRYABLE = frozenset({502, 503, 504})

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        latencies: Latencies | None = None,
        deadline: float = 120.0,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.latencies = latencies or Latencies()
        self.deadline = deadline
        self.timeout = timeout
        self.retries = 0
        self.stopped = threading.Event()  # set it to end every retry loop at once
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def client(self) -> httpx.Client:
        """This thread's connection pool (one per thread: httpx clients are not shared)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.base_url, timeout=self.timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every thread's client; call once no thread uses this any more."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def _retried(self) -> None:
        with self._lock:
            self.retries += 1

    def create(self, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The created (or replayed) job's JSON, or None after an error (recorded)."""
        give_up = time.monotonic() + self.deadline
        while True:
            if self.stopped.is_set():
                self.latencies.error("create", f"{key}: stopped")
                return None
            started = time.monotonic()
            try:
                answer = self.client().post(
                    "/v1/jobs", json=body, headers={**self.headers, "Idempotency-Key": key}
                )
            except httpx.TransportError as error:
                if time.monotonic() > give_up:
                    self.latencies.error("create", f"{key}: {type(error).__name__}")
                    return None
                self._retried()
                time.sleep(0.1)
                continue
            if answer.status_code in (200, 201):
                self.latencies.add("create", time.monotonic() - started)
                job: dict[str, Any] = answer.json()
                return job
            if answer.status_code in self.RETRYABLE and time.monotonic() < give_up:
                self._retried()
                time.sleep(0.1)
                continue
            self.latencies.error("create", f"{key}: {answer.status_code} {answer.text[:200]}")
            return None

    def status(self, job_id: str) -> dict[str, Any] | None:
        started = time.monotonic()
        try:
            answer = self.client().get(f"/v1/jobs/{job_id}", headers=self.headers)
        except httpx.TransportError as error:
            self.latencies.error("read", f"{job_id}: {type(error).__name__}")
            return None
        if answer.status_code != 200:
            self.latencies.error("read", f"{job_id}: {answer.status_code} {answer.text[:200]}")
            return None
        self.latencies.add("read", time.monotonic() - started)
        job: dict[str, Any] = answer.json()
        return job


def _serve_with_tracebacks() -> None:
    """`ledger serve` without the CLI's error handling, so a failure prints its traceback
    (RELIABILITY_SERVE_TRACEBACKS=1 makes `Cluster` start processes this way)."""
    import argparse

    from jobledger.serve import serve
    from jobledger.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="all")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    sys.exit(serve(Settings.from_env(), host=args.host, port=args.port, role=args.role))


if __name__ == "__main__":
    _serve_with_tracebacks()


def view_counts(service: Any, table: str) -> Counter[str]:
    """`state -> rows` of a view with a `state` column (empty until a process has made it)."""
    try:
        with service.database.connect() as conn:
            rows = conn.execute(f"SELECT state, count(*) FROM {table} GROUP BY state").fetchall()
    except Exception:
        return Counter()
    return Counter({str(state): int(count) for state, count in rows})


def announced_state_changes(ledger: Any, job_ids: set[str]) -> dict[tuple[str, int], str]:
    """(job id, version) -> webhook event type, for every event of these jobs that announces a
    state change, read from the log: the oracle deliveries are checked against."""
    from ledger.webhooks import JOB_EVENT_WEBHOOK_TYPES

    changes: dict[tuple[str, int], str] = {}
    for _, _, event in read_log(ledger):
        kind = type(event).__name__
        if str(event.originator_id) in job_ids and kind in JOB_EVENT_WEBHOOK_TYPES:
            changes[(str(event.originator_id), event.originator_version)] = JOB_EVENT_WEBHOOK_TYPES[
                kind
            ]
    return changes
