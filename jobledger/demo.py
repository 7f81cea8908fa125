"""`ledger demo`: the whole flow on a fresh SQLite file, in one command (issue 7 item 4).

It starts `ledger serve` as a child process on 127.0.0.1 (a free port, a generated admin key,
private webhook targets allowed, a short webhook retry schedule and a small sandbox latency),
and a local webhook receiver (a Starlette app under uvicorn in a thread) that checks every
request's Standard Webhooks signature with `delivery.signing.verify` and records it. Then,
through the HTTP API only, it creates a tenant, registers an endpoint for `*` pointing at the
receiver and creates four sandbox jobs:

- `published`: published on the first attempt;
- `retried`: a retryable failure (`server_error`) first, then published;
- `failed`: a terminal failure (`invalid_media`);
- `canceled`: scheduled an hour ahead, then canceled.

It waits (bounded by `--timeout`, polling conditions, never a fixed sleep) until the jobs are in
their final states and every webhook their events caused has arrived, prints what arrived per
job and the console URL with a writer key, and keeps the service running until Ctrl-C (SIGINT
or SIGTERM stop the child cleanly), or with `--exit` stops everything and exits 0. `--json`
prints a machine-readable summary instead. Anything missing in time: exit 1 with a message.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from delivery import signing
from ledger.webhooks import JOB_EVENT_WEBHOOK_TYPES

EXIT_FAILED = 1
HOST = "127.0.0.1"
HOOK_PATH = "/hooks/demo"

# The child service's configuration: everything else is the embedded default.
SERVICE_ENV = {
    "LEDGER_ALLOW_PRIVATE_TARGETS": "1",  # the receiver listens on 127.0.0.1 over http
    "LEDGER_WEBHOOK_RETRY_SCHEDULE": "1,2",  # a failed delivery is retried within seconds
    "LEDGER_SANDBOX_LATENCY_SECONDS": "0.2",
    "LEDGER_JOB_RETRY_BASE_SECONDS": "0.5",  # the retried job's second attempt comes soon
    "LEDGER_JOB_RETRY_CAP_SECONDS": "2",
    "LEDGER_WORKER_POLL_SECONDS": "0.2",
}


@dataclass(frozen=True)
class DemoJob:
    name: str
    what: str
    expected_state: str
    simulate: tuple[str, ...]
    expected_types: tuple[str, ...]  # webhook types that must arrive (others may too)
    publish_in_seconds: float | None = None
    cancel: bool = False


JOBS = (
    DemoJob(
        "published",
        "published on the first attempt",
        "published",
        ("published",),
        ("job.queued", "job.running", "job.published"),
    ),
    DemoJob(
        "retried",
        "a retryable failure (server_error), then published",
        "published",
        ("server_error", "published"),
        ("job.queued", "job.running", "job.retrying", "job.published"),
    ),
    DemoJob(
        "failed",
        "a terminal failure (invalid_media)",
        "failed_terminal",
        ("invalid_media",),
        ("job.queued", "job.running", "job.failed"),
    ),
    DemoJob(
        "canceled",
        "scheduled an hour ahead, then canceled",
        "canceled",
        ("published",),
        ("job.queued", "job.scheduled", "job.canceled"),
        publish_in_seconds=3600.0,
        cancel=True,
    ),
)


class DemoError(Exception):
    """Something did not happen in time, or the service refused a request."""


class _Stop(Exception):
    """SIGINT or SIGTERM arrived while the demo was still setting up."""


# -- the webhook receiver ------------------------------------------------------------------


@dataclass
class Arrival:
    webhook_id: str
    type: str
    job_id: str | None
    version: int | None
    verified: bool
    error: str | None
    at: float


@dataclass
class WebhookReceiver:
    """Records every POST to HOOK_PATH; answers 204 when its signature verifies, 401 if not
    (503 before the endpoint's secret is known, so the service retries)."""

    secret: str | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{HOOK_PATH}"

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        secret = self.secret
        if secret is None:
            return Response(status_code=503)
        error: str | None = None
        try:
            signing.verify(secret, dict(request.headers), body, now=time.time())
        except signing.SignatureError as failed:
            error = str(failed)
        try:
            message = orjson.loads(body)
            data = message.get("data") or {}
            kind, job_id, version = (
                str(message.get("type")),
                data.get("job_id"),
                data.get("version"),
            )
        except (orjson.JSONDecodeError, AttributeError):
            kind, job_id, version = "(not JSON)", None, None
        arrival = Arrival(
            webhook_id=request.headers.get("webhook-id", ""),
            type=kind,
            job_id=job_id if isinstance(job_id, str) else None,
            version=version if isinstance(version, int) else None,
            verified=error is None,
            error=error,
            at=time.time(),
        )
        with self._lock:
            self.arrivals.append(arrival)
        return Response(status_code=204 if error is None else 401)

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def start(self, deadline: float) -> None:
        app = Starlette(routes=[Route(HOOK_PATH, self._hook, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="demo-receiver", daemon=True
        )
        self._thread.start()
        _wait_until(lambda: server.started, deadline, "the webhook receiver did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


# -- the child service ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ChildService:
    directory: Path
    port: int
    admin_key: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.directory / 'ledger.db').resolve()}"

    @property
    def log_path(self) -> Path:
        return self.directory / "serve.log"

    def start(self, deadline: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(SERVICE_ENV)
        env["LEDGER_DATABASE_URL"] = self.database_url
        env["LEDGER_ADMIN_KEY"] = self.admin_key
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "jobledger.cli",
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the child
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DemoError(
                    f"ledger serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_until(ready, deadline, "ledger serve did not become ready", self.log_tail)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop within `timeout`; its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- the run -------------------------------------------------------------------------------


def _wait_until(
    condition: Callable[[], bool],
    deadline: float,
    message: str,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` (every 0.1 s) until it holds; DemoError once `deadline` passes."""
    while not condition():
        if time.monotonic() >= deadline:
            raise DemoError(message + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(0.1)


def _check(response: httpx.Response, expected: int, what: str) -> dict[str, Any]:
    if response.status_code != expected:
        raise DemoError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    data: dict[str, Any] = response.json()
    return data


def _job_body(job: DemoJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": "demo-account",
        "board_id": "demo-board",
        "mode": "sandbox",
        "simulate": list(job.simulate),
        "pin": {
            "title": f"Demo pin: {job.name}",
            "description": f"ledger demo: {job.what}.",
            "link": "https://example.com/demo",
            "alt_text": "a demo pin",
            "media_source": {
                "source_type": "image_url",
                "url": "https://images.example.com/demo.png",
            },
        },
        "metadata": {"demo": job.name},
    }
    if job.publish_in_seconds is not None:
        at = datetime.now(UTC) + timedelta(seconds=job.publish_in_seconds)
        body["publish_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return body


def _expected_webhooks(writer: httpx.Client, job_id: str) -> set[int]:
    """The versions of the job's events that become webhooks (one delivery each)."""
    events = _check(writer.get(f"/v1/jobs/{job_id}/events"), 200, "read a job's events")
    return {int(e["version"]) for e in events["events"] if e["type"] in JOB_EVENT_WEBHOOK_TYPES}


def run_flow(service: ChildService, receiver: WebhookReceiver, deadline: float) -> dict[str, Any]:
    """Tenant, endpoint, jobs; wait for final states and webhooks; the summary."""
    base = service.base_url
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {service.admin_key}"}, timeout=30
    ) as admin:
        tenant = _check(admin.post("/v1/tenants", json={"name": "Demo"}), 201, "create a tenant")
    writer_key = str(tenant["key"]["token"])
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {writer_key}"}, timeout=30
    ) as writer:
        endpoint = _check(
            writer.post(
                "/v1/endpoints",
                json={
                    "url": receiver.url,
                    "event_types": ["*"],
                    "description": "ledger demo receiver",
                },
            ),
            201,
            "register the webhook endpoint",
        )
        receiver.secret = str(endpoint["secret"])

        job_ids: dict[str, str] = {}
        run_tag = secrets.token_hex(4)
        for job in JOBS:
            created = _check(
                writer.post(
                    "/v1/jobs",
                    json=_job_body(job),
                    headers={"Idempotency-Key": f"demo-{run_tag}-{job.name}"},
                ),
                201,
                f"create the {job.name} job",
            )
            job_ids[job.name] = str(created["id"])

        states: dict[str, dict[str, Any]] = {}

        def state_of(name: str) -> str:
            got = _check(writer.get(f"/v1/jobs/{job_ids[name]}"), 200, "read a job")
            states[name] = got
            return str(got["state"])

        def cancel_when_scheduled(name: str) -> None:
            """Let the scheduler schedule it first, then withdraw it."""
            _wait_until(
                lambda: state_of(name) == "scheduled",
                deadline,
                f"the {name} job was not scheduled in time",
            )
            _check(
                writer.post(
                    f"/v1/jobs/{job_ids[name]}/cancel",
                    json={"reason": "ledger demo: withdrawn before its time"},
                ),
                200,
                f"cancel the {name} job",
            )

        for job in JOBS:
            if job.cancel:
                cancel_when_scheduled(job.name)

        def all_final() -> bool:
            return all(state_of(job.name) == job.expected_state for job in JOBS)

        _wait_until(
            all_final,
            deadline,
            "the jobs did not reach their final states in time",
            lambda: ", ".join(f"{n}: {s.get('state')}" for n, s in states.items()),
        )

        expected = {job.name: _expected_webhooks(writer, job_ids[job.name]) for job in JOBS}

        def arrived(name: str) -> set[int]:
            return {
                a.version
                for a in receiver.snapshot()
                if a.job_id == job_ids[name] and a.verified and a.version is not None
            }

        def missing() -> dict[str, list[int]]:
            return {
                name: sorted(want - arrived(name))
                for name, want in expected.items()
                if not want <= arrived(name)
            }

        _wait_until(
            lambda: not missing(),
            deadline,
            "not every webhook arrived (verified) in time",
            lambda: f"missing event versions per job: {missing()}",
        )

    arrivals = receiver.snapshot()
    jobs_summary = []
    for job in JOBS:
        job_id = job_ids[job.name]
        seen: dict[str, Arrival] = {}
        repeats: dict[str, int] = {}
        for arrival in arrivals:
            if arrival.job_id != job_id:
                continue
            if arrival.webhook_id in seen:  # at least once: a repeat has the same webhook-id
                repeats[arrival.webhook_id] = repeats.get(arrival.webhook_id, 0) + 1
                continue
            seen[arrival.webhook_id] = arrival
        ordered = sorted(seen.values(), key=lambda a: (a.version or 0, a.at))
        jobs_summary.append(
            {
                "name": job.name,
                "what": job.what,
                "job_id": job_id,
                "state": states[job.name]["state"],
                "expected_state": job.expected_state,
                "attempts": states[job.name].get("attempts"),
                "external_ref": states[job.name].get("external_ref"),
                "webhooks": [
                    {
                        "type": a.type,
                        "webhook_id": a.webhook_id,
                        "version": a.version,
                        "verified": a.verified,
                        "error": a.error,
                        "arrivals": 1 + repeats.get(a.webhook_id, 0),
                    }
                    for a in ordered
                ],
            }
        )
    return {
        "ok": True,
        "base_url": base,
        "console_url": f"{base}/ui/",
        "writer_key": writer_key,
        "tenant_id": tenant["id"],
        "endpoint_id": endpoint["id"],
        "receiver_url": receiver.url,
        "directory": str(service.directory),
        "database_url": service.database_url,
        "jobs": jobs_summary,
        "all_verified": all(a.verified for a in arrivals),
        "webhooks_received": len(arrivals),
    }


def _missing_types(summary: dict[str, Any]) -> list[str]:
    problems = []
    for entry, job in zip(summary["jobs"], JOBS, strict=True):
        types = [w["type"] for w in entry["webhooks"]]
        for kind in job.expected_types:
            if kind not in types:
                problems.append(f"{job.name}: no {kind} webhook")
    return problems


def render(summary: dict[str, Any], *, keep_running: bool, temporary: bool) -> str:
    lines = [f"ledger demo: the service at {summary['base_url']}", ""]
    for entry in summary["jobs"]:
        lines.append(
            f"{entry['name']:<10} {entry['job_id']}  {entry['state']} "
            f"after {entry['attempts']} attempt(s): {entry['what']}"
        )
        for hook in entry["webhooks"]:
            check = "signature verified" if hook["verified"] else f"NOT VERIFIED ({hook['error']})"
            lines.append(
                f"    v{hook['version']:<3} {hook['type']:<15} {hook['webhook_id']}  {check}"
            )
    lines += [
        "",
        f"{summary['webhooks_received']} webhooks received at {summary['receiver_url']}, "
        + ("every signature verified." if summary["all_verified"] else "NOT all verified."),
        "",
        f"Console:    {summary['console_url']}",
        f"Writer key: {summary['writer_key']}   (sign in with it)",
        f"Data:       {summary['directory']}"
        + ("  (removed when the demo stops; --dir keeps it)" if temporary else ""),
    ]
    if keep_running:
        lines += ["", "The service keeps running; press Ctrl-C to stop it."]
    else:
        lines += ["", "Stopping (--exit)."]
    return "\n".join(lines)


def demo(*, data_dir: str | None, exit_after: bool, timeout: float, as_json: bool) -> int:
    """Run the demo (see the module docstring); the process exit code."""
    directory: Path
    temporary = data_dir is None
    if data_dir is None:
        directory = Path(tempfile.mkdtemp(prefix="ledger-demo-"))
    else:
        directory = Path(data_dir).resolve()
        directory.mkdir(parents=True, exist_ok=True)
    service = ChildService(directory, free_port(), secrets.token_urlsafe(24))
    receiver = WebhookReceiver()
    stop = threading.Event()
    setting_up = True

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if setting_up:
            raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        deadline = time.monotonic() + timeout
        if not as_json:
            print(f"Starting the service on {service.base_url} (data in {directory}) ...")
            sys.stdout.flush()
        receiver.start(deadline)
        service.start(deadline)
        summary = run_flow(service, receiver, deadline)
        problems = _missing_types(summary)
        if problems or not summary["all_verified"]:
            summary["ok"] = False
            summary["problems"] = problems or ["a webhook signature did not verify"]
        keep_running = not exit_after and summary["ok"]
        if as_json:
            sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(render(summary, keep_running=keep_running, temporary=temporary))
            for problem in summary.get("problems", []):
                print(f"problem: {problem}", file=sys.stderr)
        sys.stdout.flush()
        if not summary["ok"]:
            code = EXIT_FAILED
        elif keep_running:
            setting_up = False
            while not stop.wait(0.5):
                if service.process is not None and service.process.poll() is not None:
                    print(
                        f"ledger serve exited with {service.process.returncode}",
                        file=sys.stderr,
                    )
                    code = EXIT_FAILED
                    break
    except DemoError as error:
        print(f"ledger demo failed: {error}", file=sys.stderr)
        code = EXIT_FAILED
    except httpx.HTTPError as error:
        print(f"ledger demo failed: the service did not answer: {error!r}", file=sys.stderr)
        code = EXIT_FAILED
    except _Stop:
        code = 130
    finally:
        setting_up = False
        receiver.stop()
        stopped = service.stop()
        for signum, old in previous.items():
            signal.signal(signum, old)
        if stopped not in (None, 0, -signal.SIGTERM):
            print(
                f"ledger serve stopped with exit code {stopped}:\n{service.log_tail()}",
                file=sys.stderr,
            )
        if temporary and code == 0:
            shutil.rmtree(directory, ignore_errors=True)
        elif temporary:
            print(f"(the demo's data and serve.log are kept in {directory})", file=sys.stderr)
    if not as_json and code == 0 and not exit_after:
        print("Stopped.")
    return code
