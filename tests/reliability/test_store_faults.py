"""Store faults (issue 9 item 2): PostgreSQL restarted mid-run, and its connections killed with
`pg_terminate_backend`, under a workload of the real service run as separate processes.

The store is a private PostgreSQL instance made for each test (`initdb` into a temporary
directory, `pg_ctl start` on a free port on 127.0.0.1; as the `postgres` user when the tests run
as root), never the machine's shared cluster, which other tests use at the same time.

Faults, each while jobs are being created, worked and delivered:
- `restart`: `pg_ctlcluster ... restart` runs `pg_ctl restart`, which is `pg_ctl stop -m fast`
  (every connection is terminated, new ones are refused) followed by `pg_ctl start`. A round
  runs a plain `pg_ctl restart -m fast`, then the same two steps with the store held down for
  `OUTAGE_SECONDS` in between, so that there is an outage to probe the API during. Topology:
  `api`, `worker`, `delivery` and `projector` as four `ledger serve --role` processes.
- `terminate`: `pg_terminate_backend` on every backend of the service's database (the instance
  is private, so they are all the test's own). Topology: one `ledger serve --role all`.

Checks: while the store is down every API answer is a 2xx or a 503 `store-unavailable`
problem+json with Retry-After, never a 500 or a stack trace, and each 503 comes quickly (under
`FAST_503_SECONDS`, against 12-50 s before the store breaker; the times are recorded as figures);
no process logs an unhandled request error; every process recovers without being restarted
(none exits, each was started once); every request the careful client retried with its
Idempotency-Key lands exactly once; every job reaches the final state of its script; every state
change is delivered to the endpoint, repeats with the same webhook-id; no event is written
twice; `ledger verify` passes.

Quick (`make test`): `QUICK_JOBS` jobs, one round. Full (`make soak`): `FULL_JOBS`, `FULL_ROUNDS`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from delivery.crypto import generate_key
from jobledger.bootstrap import Service, build
from jobledger.settings import Settings
from jobledger.webhook_settings import WebhookSettings
from ledger.endpoint import EndpointSettings
from ledger.webhooks import JOB_EVENT_WEBHOOK_TYPES
from tests.e2e.conftest import job_body
from tests.fakes.receiver import Receiver, Reply
from tests.reliability.conftest import Figures, Mode
from tests.reliability.harness import (
    Cluster,
    JobClient,
    Latencies,
    free_port,
    ledger_cli,
    read_log,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

QUICK_JOBS, QUICK_ROUNDS = 50, 1
FULL_JOBS, FULL_ROUNDS = 600, 5
OUTAGE_SECONDS = 3.0  # how long a `restart` round holds the store down
FAST_503_SECONDS = 5.0  # generous: before the breaker a 503 took 12 s (1 s timeout) to 50 s
SCRIPTS: tuple[tuple[str, ...], ...] = (("published",), ("server_error", "published"))
FINAL_STATES = ("published", "failed_terminal")
CREATE_PAUSE = 0.05  # between one client thread's creates, so that faults land mid-run
CLIENT_THREADS = 2
PROBLEM = "application/problem+json"


# -- a private PostgreSQL instance --


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@dataclass
class PrivatePostgres:
    bin: Path
    data: Path
    port: int
    log: Path
    as_postgres: bool

    def run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (args, done.stdout, done.stderr, self.server_log())

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def pg_ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data.parent} -c max_connections=300 "
            "-c fsync=off"
        )
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", *args)

    def url(self, dbname: str = "ledger") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "ledger") -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)

    def terminate_backends(self) -> int:
        """Kill every backend of the service's database but this one: all the test's own."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = 'ledger' AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    as_postgres = os.geteuid() == 0
    home = Path(tempfile.mkdtemp(prefix="ledger-store-faults-"))
    if as_postgres:
        shutil.chown(home, "postgres", "postgres")
    pg = PrivatePostgres(bin_dir, home / "data", free_port(), home / "server.log", as_postgres)
    try:
        pg.run("initdb", "-D", str(pg.data), "-U", "postgres", "--auth=trust", "--no-sync")
        pg.pg_ctl("start")
        with pg.connect("postgres") as conn:
            conn.execute("CREATE DATABASE ledger")
        yield pg
    finally:
        with contextlib.suppress(Exception):
            pg.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(home, ignore_errors=True)


# -- the service, its endpoint and what the API said while the store was down --


@dataclass
class Setup:
    service: Service
    token: str
    receiver: Receiver
    secret_key: str


@pytest.fixture
def setup(private_postgres: PrivatePostgres) -> Iterator[Setup]:
    secret_key = generate_key()
    webhooks = WebhookSettings(secret_key=secret_key, allow_private_targets=True)
    service = build(Settings(database_url=private_postgres.url(), webhooks=webhooks))
    with Receiver(Reply(204)) as receiver:
        tenant = service.ledger.create_tenant("store-faults", actor="admin:test")
        service.ledger.register_endpoint(
            str(tenant.tenant.id),
            EndpointSettings(url=receiver.url("/hook"), event_types=("*",)),
            actor="admin:test",
        )
        try:
            yield Setup(service, tenant.first_key.token, receiver, secret_key)
        finally:
            service.close()


@dataclass
class Probe:
    """One request made while the store was down (or just after it was cut)."""

    kind: str  # "read" or "write"
    status: int
    seconds: float
    at: float = 0.0  # time.time() when answered


@dataclass
class Prober:
    """Reads and writes through the API, one after another, checking every answer: a 2xx, or a
    503 `store-unavailable` problem+json with Retry-After. Never anything else."""

    base_url: str
    token: str
    job_id: str
    probes: list[Probe] = field(default_factory=list)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # write key -> body
    count: int = 0

    def run_for(self, seconds: float, label: str) -> list[Probe]:
        made: list[Probe] = []
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=60) as client:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                self.count += 1
                key = f"probe-{label}-{self.count}"
                body = job_body(pin={**job_body()["pin"], "title": key})
                self.keys[key] = body
                for kind in ("read", "write"):
                    started = time.monotonic()
                    if kind == "read":
                        answer = client.get(f"/v1/jobs/{self.job_id}")
                    else:
                        answer = client.post(
                            "/v1/jobs", json=body, headers={"Idempotency-Key": key}
                        )
                    made.append(
                        Probe(kind, answer.status_code, time.monotonic() - started, time.time())
                    )
                    check_answer(answer)
                time.sleep(0.05)
        self.probes += made
        return made


def check_answer(answer: httpx.Response) -> None:
    if answer.is_success:
        return
    assert answer.status_code == 503, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    assert int(answer.headers["Retry-After"]) > 0
    problem = answer.json()
    assert problem["type"].endswith("/store-unavailable"), problem
    assert problem["status"] == 503
    assert "Traceback" not in answer.text


def write_succeeds(base_url: str, token: str, key: str) -> bool:
    """A write through the API answers 201 (the store is back for the API)."""
    body = job_body(pin={**job_body()["pin"], "title": key})
    with contextlib.suppress(httpx.TransportError):
        answer = httpx.post(
            f"{base_url}/v1/jobs",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            timeout=30,
        )
        check_answer(answer)
        return answer.status_code in (200, 201)
    return False


# -- the test --


@pytest.mark.parametrize("fault", ["restart", "terminate"])
def test_store_faults(
    fault: str,
    setup: Setup,
    private_postgres: PrivatePostgres,
    tmp_path: Path,
    mode: Mode,
    figures: Figures,
) -> None:
    pg = private_postgres
    jobs = mode.pick(QUICK_JOBS, FULL_JOBS)
    rounds = mode.pick(QUICK_ROUNDS, FULL_ROUNDS)
    service = setup.service
    # the breaker's default wait (harness.FAST_ENV lengthens it for the loaded crash matrix)
    env = {"LEDGER_SECRET_KEY": setup.secret_key, "LEDGER_DB_FAIL_FAST_SECONDS": "1"}
    cluster = Cluster(pg.url(), tmp_path, env)
    latencies = Latencies()
    scripts: dict[str, tuple[str, ...]] = {}
    lock = threading.Lock()
    recovery: list[float] = []
    to_503: list[float] = []
    first_answer: list[float] = []  # the first request after each stop
    started = time.monotonic()
    try:
        if fault == "restart":
            cluster.start("projector", "projector")
            api = cluster.start("api", "api")
            cluster.start("worker", "worker")
            cluster.start("delivery", "delivery")
        else:
            api = cluster.start("all", "all")
        client = JobClient(api.base_url, setup.token, latencies=latencies, deadline=300.0)
        first = client.create("first", job_body())
        assert first is not None
        scripts[str(first["id"])] = ("published",)
        prober = Prober(api.base_url, setup.token, str(first["id"]))

        def create_range(start: int) -> None:
            for i in range(start, jobs, CLIENT_THREADS):
                script = SCRIPTS[i % len(SCRIPTS)]
                body = job_body(
                    simulate=list(script), pin={**job_body()["pin"], "title": f"fault {i}"}
                )
                job = client.create(f"{fault}-{i}", body)
                if job is not None:
                    with lock:
                        scripts[str(job["id"])] = script
                time.sleep(CREATE_PAUSE)

        creators = [
            threading.Thread(target=create_range, args=(start,), daemon=True)
            for start in range(CLIENT_THREADS)
        ]
        for creator in creators:
            creator.start()
        for round_ in range(rounds):
            share = (round_ + 0.5) / rounds * 0.8
            wait_until(
                lambda s=share: len(scripts) >= s * jobs,  # type: ignore[misc]
                f"{share:.0%} of the jobs created",
                300,
                cluster=cluster,
                interval=0.02,
            )
            if fault == "restart":
                pg.pg_ctl("restart", "-m", "fast")  # what `pg_ctlcluster ... restart` does
                prober.run_for(0.5, f"{round_}-restarted")
                pg.pg_ctl("stop", "-m", "fast")
                down = prober.run_for(OUTAGE_SECONDS, f"{round_}-down")
                assert any(p.status == 503 for p in down), down  # the outage was seen
                first_answer.append(down[0].seconds)
                to_503 += [p.seconds for p in down if p.status == 503]
                pg.pg_ctl("start")
            else:
                killed = pg.terminate_backends()
                assert killed > 0
                prober.run_for(1.0, f"{round_}-terminated")
            back = time.monotonic()
            wait_until(
                lambda r=round_: write_succeeds(api.base_url, setup.token, f"back-{r}"),  # type: ignore[misc]
                "the API to write again",
                120,
                cluster=cluster,
                interval=0.05,
            )
            recovery.append(time.monotonic() - back)
        for creator in creators:
            creator.join(timeout=600)
            assert not creator.is_alive()
        assert latencies.error_count() == 0, dict(latencies.errors)

        # every write the prober (or the recovery check) got a 503 for is retried with its key,
        # as a careful client does: it lands once, whatever the store did meanwhile
        for key, body in prober.keys.items():
            job = client.create(key, body)
            assert job is not None, dict(latencies.errors)
            scripts[str(job["id"])] = ("published",)
        for round_ in range(rounds):
            job = client.create(
                f"back-{round_}", job_body(pin={**job_body()["pin"], "title": f"back-{round_}"})
            )
            assert job is not None
            scripts[str(job["id"])] = ("published",)
        client.close()

        wait_until(
            lambda: final_jobs(service) == len(scripts),
            f"all {len(scripts)} jobs final",
            600,
            cluster=cluster,
            interval=0.5,
        )
        expected = state_changes(service, set(scripts))
        wait_until(
            lambda: succeeded_deliveries(service) == len(expected),
            f"{len(expected)} deliveries succeeded",
            600,
            cluster=cluster,
            interval=0.5,
        )
    finally:
        codes = cluster.stop_all()
    assert codes == dict.fromkeys(codes, 0), {
        name: (code, cluster.procs[name].log()) for name, code in codes.items() if code != 0
    }
    assert all(proc.starts == 1 for proc in cluster.procs.values())  # none was restarted
    for proc in cluster.procs.values():
        text = proc.log_path.read_text(errors="replace")
        assert "unhandled error on" not in text, proc.log()

    check_outcomes(service, scripts, expected, setup.receiver)
    verified = ledger_cli(cluster.env, "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    answered = Counter(p.status for p in prober.probes)
    record = [
        ("jobs", len(scripts), ""),
        ("rounds", rounds, ""),
        ("API requests during faults", len(prober.probes), ""),
        ("API answers 503 during faults", answered[503], ""),
        (
            "API answers 5xx other than 503",
            sum(n for s, n in answered.items() if s >= 500 and s != 503),
            "",
        ),
        ("client requests retried (503 or connection error)", client.retries, ""),
        ("recovery: first API write after the fault, max", round(max(recovery), 2), "s"),
        ("lost jobs or state changes", 0, ""),
        ("run time", round(time.monotonic() - started, 1), "s"),
    ]
    if to_503:
        record += [
            ("time to 503 while down, median", round(statistics.median(to_503), 3), "s"),
            ("time to 503 while down, max", round(max(to_503), 3), "s"),
            ("first answer after the stop, max", round(max(first_answer), 3), "s"),
        ]
    for name, value, unit in record:
        figures.record(f"{fault}: {name}", value, unit, fault=fault)
    print(f"{fault}: " + ", ".join(f"{n}={v}{u}" for n, v, u in record))
    print("slowest probes:", sorted(prober.probes, key=lambda p: -p.seconds)[:5])
    assert answered.keys() <= {200, 201, 503}, answered
    assert all(seconds < FAST_503_SECONDS for seconds in to_503), sorted(to_503)[-5:]


def final_jobs(service: Service) -> int:
    with contextlib.suppress(psycopg.Error), service.database.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM job_status WHERE state = ANY(%s)", (list(FINAL_STATES),)
        ).fetchone()
        return int(row[0]) if row else 0
    return 0


def succeeded_deliveries(service: Service) -> int:
    with contextlib.suppress(psycopg.Error), service.database.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM delivery_queue WHERE state = 'succeeded'"
        ).fetchone()
        return int(row[0]) if row else 0
    return 0


def state_changes(service: Service, job_ids: set[str]) -> dict[tuple[str, int], str]:
    """(job id, version) -> webhook event type of every job event that announces a change."""
    changes: dict[tuple[str, int], str] = {}
    for _, _, event in read_log(service.ledger):
        name = type(event).__name__
        if str(event.originator_id) in job_ids and name in JOB_EVENT_WEBHOOK_TYPES:
            changes[(str(event.originator_id), event.originator_version)] = JOB_EVENT_WEBHOOK_TYPES[
                name
            ]
    return changes


def check_outcomes(
    service: Service,
    scripts: dict[str, tuple[str, ...]],
    expected: dict[tuple[str, int], str],
    receiver: Receiver,
) -> None:
    events: dict[str, list[Any]] = defaultdict(list)
    for _, _, event in read_log(service.ledger):
        if str(event.originator_id) in scripts:
            events[str(event.originator_id)].append(event)
    assert set(events) == set(scripts)  # every job the API accepted is in the log
    for job_id, script in scripts.items():
        kinds = Counter(type(e).__name__ for e in events[job_id])
        assert kinds["JobCreated"] == 1, (job_id, kinds)
        assert kinds["JobPublished"] == 1, (job_id, script, kinds)
        started = [e.attempt for e in events[job_id] if type(e).__name__ == "AttemptStarted"]
        assert len(started) == len(set(started)), (job_id, started)
    with service.database.connect() as conn:
        twice = conn.execute(
            "SELECT originator_id, originator_version FROM ledger_events "
            "GROUP BY originator_id, originator_version HAVING count(*) > 1"
        ).fetchall()
    assert twice == []
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for request in receiver.requests_for("/hook"):
        body = request.json()
        if body["type"] == "webhook.test" or "job_id" not in body.get("data", {}):
            continue
        key = (body["data"]["job_id"], body["data"]["version"])
        assert body["type"] == expected.get(key), (key, body["type"])
        ids[key].add(request.headers["webhook-id"])
    assert set(ids) == set(expected)  # every state change delivered
    assert all(len(v) == 1 for v in ids.values())  # a repeat keeps its webhook-id
