"""What the figure modules share: the `Figure` row, a fresh PostgreSQL schema, service
processes (`ledger serve --role ...`) with their CPU time and RSS read from /proc, and a
counting webhook receiver (`python -m bench.support receive PORT`).

Linux only (/proc), like the rest of the suite.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.load import Request, Result, hammer
from jobledger.bootstrap import Service, build
from jobledger.settings import Settings
from jobledger.webhook_settings import WebhookSettings
from ledger.request import MediaSource, NewJob, Pin
from projections.registry import tracked_names
from projections.runner import TRACKING_TABLE

BASE_URL = os.environ.get(
    "LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ledger_test"
)
LEDGER = str(Path(sys.executable).parent / "ledger")
BENCH_KEY = base64.b64encode(bytes(32)).decode()  # the webhook sealing key of every bench store
BENCH_ADMIN = "bench-admin-key-0123456789"  # LEDGER_ADMIN_KEY of the served bench processes
JOB_BODY = orjson.dumps(  # a minimal valid `POST /v1/jobs` body
    {
        "account_id": "acct",
        "board_id": "board",
        "pin": {
            "title": "t",
            "media_source": {"source_type": "image_url", "url": "https://e.com/i.jpg"},
        },
    }
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    value: float
    baseline_name: str
    baseline: float  # 0 when no fair baseline exists: the ratio column shows "-"
    target: float | None  # the ratio the issue asks for, when it sets one

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else 0.0


OUT_OF_REACH = (
    "the floor itself misses the target, so nothing that does this work reaches it on this machine"
)


@dataclass(frozen=True)
class Floor:
    """A hand-written minimum of the work a figure measures, run beside ours and the baseline:
    whether the target is out of this machine's reach, or of our code's."""

    figure: str
    work: str  # what the floor does beyond the baseline
    ours: float
    floor: float
    baseline: float
    target: float

    def explained(self) -> str:
        ours, floor = self.ours / self.baseline, self.floor / self.baseline
        if floor < self.target:
            verdict = OUT_OF_REACH
        else:
            verdict = (
                f"the target is within reach of this work alone; ours takes "
                f"{self.floor / self.ours:.1f}x the floor's time, and that is our code's own cost"
            )
        return (
            f"- {self.figure}: the floor ({self.work}) runs at {floor:.2f}x the baseline, ours at "
            f"{ours:.2f}x, against a target of {self.target}x: {verdict}."
        )


@dataclass(frozen=True)
class LatencyFloor:
    """`Floor` for a latency target (lower is better): the least a figure's path takes."""

    figure: str
    work: str
    ours_ms: float
    floor_ms: float
    target_ms: float

    def explained(self) -> str:
        if self.floor_ms > self.target_ms:
            verdict = OUT_OF_REACH
        else:
            verdict = "the target is within reach of this work alone"
        return (
            f"- {self.figure}: the floor ({self.work}) takes {self.floor_ms:.1f} ms, ours "
            f"{self.ours_ms:.1f} ms, against a target of {self.target_ms:g} ms: {verdict}."
        )


FLOORS: list[Floor | LatencyFloor] = []


def checkpoint() -> float:
    """Run a PostgreSQL checkpoint now; returns the seconds it took. Before a figure that is
    sensitive to background load (latency): the figures before it (a million-event fill among
    them) leave the server a checkpoint to write, which it would otherwise do while that
    figure is measured, on one of this machine's two cores."""
    t0 = time.perf_counter()
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return time.perf_counter() - t0


def machine_ticks() -> tuple[int, int]:
    """(all, stolen) CPU time of the machine so far, in clock ticks (`/proc/stat`; (0, 0)
    where there is none). Stolen time is what the hypervisor gave to other guests while this
    one wanted to run: on a shared virtual machine it explains figures that are off by
    factors from one day to the next."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def postgres_settings() -> str:
    """The bench server's version and the settings its figures depend on, as text: figure 6
    (scale) with shared_buffers at PostgreSQL's default of 128 MB was 0.76-0.78x at 1M events
    (2026-11-25, two runs), and 0.87x with 2 GB (one run, the same code): at a million events
    the events table's indexes most likely no longer fit in the default buffers."""
    names = ("shared_buffers", "synchronous_commit", "max_connections")
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        values = [(name, conn.execute(f"SHOW {name}").fetchone()) for name in names]
    shown = ", ".join(f"{name} {row[0]}" for name, row in values if row)
    return f"PostgreSQL {version[0] if version else '?'} ({shown})"


def reference_seconds() -> float:
    """Seconds for a fixed pure-Python loop (best of three): how fast this machine's cores run
    Python today, to compare runs of different days (the ratios are meant to be comparable;
    the absolute figures are not)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best


@contextmanager
def pg_schema(prefix: str = "bench") -> Iterator[tuple[str, str]]:
    """A new schema in the bench database, dropped afterwards: (ledger URL, schema name)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{BASE_URL}?schema={schema}", schema
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def new_tenant(base: str, name: str = "bench") -> dict[str, str]:
    """A tenant made through the API at `base` with `BENCH_ADMIN`: the `Authorization` header
    of its key."""
    tenant = httpx.post(
        f"{base}/v1/tenants",
        json={"name": name},
        headers={"Authorization": f"Bearer {BENCH_ADMIN}"},
    ).json()
    return {"Authorization": f"Bearer {tenant['key']['token']}"}


def read_me_job(base: str, auth: dict[str, str]) -> str:
    """The id of the job the status reads read (made with `JOB_BODY`, key "read-me")."""
    return str(
        httpx.post(
            f"{base}/v1/jobs",
            content=JOB_BODY,
            headers={**auth, "Idempotency-Key": "read-me", "Content-Type": "application/json"},
        ).json()["id"]
    )


def hammer_creates(base: str, auth: dict[str, str], total: int, *, exact: bool = False) -> Result:
    """About `total` (`exact`: exactly `total`, see `bench.load`) `POST /v1/jobs` of
    `JOB_BODY` at 32 concurrent clients, each with its own Idempotency-Key."""
    return hammer(
        Request(
            "POST",
            f"{base}/v1/jobs",
            {**auth, "Content-Type": "application/json"},
            JOB_BODY,
            unique_header="Idempotency-Key",
        ),
        concurrency=32,
        total=total,
        exact=exact,
    )


def bench_service(url: str, *, allow_private_targets: bool = False) -> Service:
    """The service over `url`, built as `ledger serve` builds it, with `BENCH_KEY`."""
    webhooks = WebhookSettings(secret_key=BENCH_KEY, allow_private_targets=allow_private_targets)
    return build(Settings(database_url=url, webhooks=webhooks))


def bench_job(i: int) -> NewJob:
    """The i-th sandbox job of a run (accounts and boards vary with i)."""
    return NewJob(
        account_id=f"acct-{i % 7}",
        board_id=f"board-{i % 13}",
        pin=Pin(
            title=f"Pin {i}",
            description="A benchmark pin",
            link="https://example.com/p",
            alt_text="alt",
            media_source=MediaSource("image_url", "https://example.com/i.jpg"),
        ),
        mode="sandbox",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE / 1e6


def wait_http(url: str, process: subprocess.Popen[Any], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} in {seconds:.0f} s")
        time.sleep(0.1)


class Processes:
    """Child processes started here, stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(  # noqa: S603 - our own commands
            args,
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        return proc

    def role(self, role: str, *, port: int | None = None, **env: str) -> subprocess.Popen[Any]:
        args = [LEDGER, "serve", "--role", role]
        if port is not None:
            args += ["--port", str(port)]
        return self.start(role, args, **env)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")

    def cpu(self, names: list[str] | None = None) -> float:
        return sum(cpu_seconds(self.procs[n].pid) for n in names or list(self.procs))

    def rss(self, name: str) -> float:
        return rss_mb(self.procs[name].pid)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_POLLING = threading.local()


def received(port: int) -> Counter[str]:
    """What a counting receiver has answered so far, by webhook `type`. One kept client per
    thread: `httpx.get` builds a client and its TLS context per call (10-15 ms of CPU),
    which, polled 20 times a second for two receivers, took CPU from the figure measured."""
    client = getattr(_POLLING, "client", None)
    if client is None:
        client = _POLLING.client = httpx.Client(timeout=5)
    return Counter(client.get(f"http://127.0.0.1:{port}/_count").json())


def _receive(port: int) -> None:
    from aiohttp import web

    counts: Counter[str] = Counter()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            counts[str(orjson.loads(body).get("type"))] += 1
        except orjson.JSONDecodeError:
            counts["(not json)"] += 1
        return web.Response(status=204)

    async def count(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(counts), content_type="application/json")

    app = web.Application()
    app.router.add_get("/_count", count)
    app.router.add_post("/{tail:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def stop_child(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (a graceful stop), then SIGKILL after `timeout` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def projector(url: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`ledger serve --role projector` on the schema, once it owns every view (their advisory
    locks): a serving process started after it stands by and runs none of them."""
    process = subprocess.Popen(  # noqa: S603 - our own command
        [LEDGER, "serve", "--role", "projector"],
        env={**os.environ, **env, "LEDGER_DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = tracked_names()
    schema = url.split("schema=")[1]
    try:
        deadline = time.monotonic() + 300
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            head = conn.execute(
                "SELECT CASE WHEN to_regclass(%s) IS NULL THEN 0 ELSE -1 END",
                (f"{schema}.ledger_events",),
            ).fetchone()
            target = 0
            if head is not None and head[0] == -1:
                found = conn.execute(f"SELECT max(notification_id) FROM {schema}.ledger_events")
                target = int((found.fetchone() or (0,))[0] or 0)
            while True:  # it owns every view and has caught them up with the log
                locks = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                ).fetchone()
                try:
                    at = conn.execute(
                        f"SELECT min(position), count(*) FROM {schema}.{TRACKING_TABLE} "
                        "WHERE name = ANY(%s)",
                        (names,),
                    ).fetchone()
                except psycopg.errors.UndefinedTable:  # not set up yet
                    at = None
                if (
                    locks is not None
                    and int(locks[0]) >= len(names)
                    and at is not None
                    and int(at[1]) == len(names)
                    and int(at[0]) >= target
                ):
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the projector did not take and catch up its views")
                time.sleep(0.2)
        yield process
    finally:
        stop_child(process)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.support")
    parser.add_argument("command", choices=["receive"])
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    _receive(args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
