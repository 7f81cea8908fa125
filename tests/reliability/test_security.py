"""Security proof (issue 9, item 6), on both stores where a store is involved:

- the tenant and role matrix over every route of the app (enumerated from its router, so a new
  route without a rule here fails the test) and the console, for admin, tenant A and B writers
  and readers, no key and a revoked key: allowed or refused as SPEC section 5 says, another
  tenant's objects 404, lists never show them, refusals write nothing;
- at rest: the raw stored bytes (the SQLite files; every PostgreSQL table) hold no API key and
  no endpoint signing secret or payload key, only hashes and sealed forms;
- logs: `ledger serve` at its default level through keys, endpoints, rotations, test events and
  deliveries never prints a key, a secret or LEDGER_SECRET_KEY;
- SSRF: the refusal table, names resolving to private addresses, and the send-time guard;
- keys and signatures compared with `hmac.compare_digest`;
- the request-rate limit (`api.rate_limit`) and the body-size limit;
- `ledger verify` names altered, reordered, removed and truncated tenancy/endpoint events.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from starlette.routing import Mount, Route

from api.app import create_app
from api.auth import GRANTS, Permission
from api.config import ApiConfig
from api.problems import Problem
from api.rate_limit import TokenBuckets
from api.targets import TargetCheck
from delivery import signing
from delivery.targets import GuardedTransport, RefusedTarget, TargetPolicy
from jobledger.bootstrap import Service
from jobledger.delivery_role import make_sender
from ledger.tenancy import hash_secret
from storage.config import parse_database_url
from storage.sql import SqlStore
from tests.conftest import TEST_SECRET_KEY
from tests.e2e import conftest as e2e
from tests.e2e.conftest import ADMIN_KEY, Server, Tenant, job_body, log_end, make_tenant
from tests.fakes.receiver import Reply, running_receiver
from tests.integration.delivery_harness import wait_until
from tests.integration.test_audit import RawLog, run_cli
from tests.reliability.conftest import Figures, store_of
from tests.serving import serving

# the e2e fixtures: a real uvicorn server over the `service` fixture's store
api_server = e2e.api_server
api = e2e.api
admin = e2e.admin
tenant = e2e.tenant

PUBLIC = "public"
OK = {200, 201, 204, 409}  # allowed; 409: allowed but not in the object's present state


@dataclass(frozen=True)
class Rule:
    """What a route needs: `permission` (None: open to all), and what its path names:
    `object` (one of tenant A's objects: another tenant gets 404), `list` (a list: another
    tenant gets its own, empty of A's), `create` (makes an object in the caller's tenant)."""

    permission: Permission | None
    kind: str
    body: Any = None
    shows: str | None = None  # a list shows this id of A's (and never to tenant B)


P = Permission
# (method, path) -> Rule for every route of the app (SPEC section 5).
API_RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(None, PUBLIC),
    ("GET", "/readyz"): Rule(None, PUBLIC),
    ("GET", "/openapi.json"): Rule(None, PUBLIC),
    ("GET", "/metrics"): Rule(None, PUBLIC),
    ("POST", "/v1/jobs"): Rule(P.CREATE_JOBS, "create", "job"),
    ("GET", "/v1/jobs"): Rule(P.READ_JOBS, "list", shows="job_id"),
    ("GET", "/v1/jobs/{job_id}"): Rule(P.READ_JOBS, "object"),
    ("POST", "/v1/jobs/{job_id}/cancel"): Rule(P.CHANGE_JOBS, "object", {"reason": "matrix"}),
    ("POST", "/v1/jobs/{job_id}/requeue"): Rule(P.CHANGE_JOBS, "object"),
    ("GET", "/v1/jobs/{job_id}/events"): Rule(P.READ_JOBS, "object"),
    ("GET", "/v1/jobs/{job_id}/receipt"): Rule(P.READ_JOBS, "object"),
    ("GET", "/v1/ops/stuck"): Rule(P.READ_JOBS, "list"),
    ("GET", "/v1/audit/verify"): Rule(P.VERIFY_AUDIT, "list"),
    ("POST", "/v1/tenants"): Rule(P.MANAGE_TENANTS, "create", {"name": "Matrix"}),
    ("GET", "/v1/tenants/{tenant_id}"): Rule(P.MANAGE_TENANTS, "object"),
    ("GET", "/v1/tenants/{tenant_id}/keys"): Rule(P.MANAGE_TENANTS, "object"),
    ("POST", "/v1/tenants/{tenant_id}/keys"): Rule(P.MANAGE_TENANTS, "object", {"role": "reader"}),
    ("GET", "/v1/tenants/{tenant_id}/keys/{key_id}"): Rule(P.MANAGE_TENANTS, "object"),
    ("DELETE", "/v1/tenants/{tenant_id}/keys/{key_id}"): Rule(P.MANAGE_TENANTS, "object"),
    ("POST", "/v1/endpoints"): Rule(P.MANAGE_WEBHOOKS, "create", "endpoint"),
    ("GET", "/v1/endpoints"): Rule(P.READ_WEBHOOKS, "list", shows="endpoint_id"),
    ("GET", "/v1/endpoints/{endpoint_id}"): Rule(P.READ_WEBHOOKS, "object"),
    ("PATCH", "/v1/endpoints/{endpoint_id}"): Rule(
        P.MANAGE_WEBHOOKS, "object", {"description": "matrix"}
    ),
    ("DELETE", "/v1/endpoints/{endpoint_id}"): Rule(P.MANAGE_WEBHOOKS, "object"),
    ("POST", "/v1/endpoints/{endpoint_id}/rotate-secret"): Rule(P.MANAGE_WEBHOOKS, "object", {}),
    ("POST", "/v1/endpoints/{endpoint_id}/test"): Rule(P.MANAGE_WEBHOOKS, "object", {}),
    ("GET", "/v1/endpoints/{endpoint_id}/deliveries"): Rule(P.READ_WEBHOOKS, "object"),
    ("POST", "/v1/endpoints/{endpoint_id}/recover"): Rule(
        P.MANAGE_WEBHOOKS, "object", {"since": "2020-01-01T00:00:00Z"}
    ),
    ("GET", "/v1/endpoints/{endpoint_id}/health"): Rule(P.READ_WEBHOOKS, "object"),
    ("GET", "/v1/deliveries"): Rule(P.READ_WEBHOOKS, "list", shows="delivery_id"),
    ("GET", "/v1/deliveries/{delivery_id}"): Rule(P.READ_WEBHOOKS, "object"),
    ("POST", "/v1/deliveries/{delivery_id}/retry"): Rule(P.MANAGE_WEBHOOKS, "object", {}),
}
# Console routes: (method, path) -> Rule; `form` POSTs carry the session's CSRF token.
CONSOLE_RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/ui"): Rule(None, PUBLIC),
    ("GET", "/ui/static"): Rule(None, PUBLIC),
    ("GET", "/ui/login"): Rule(None, PUBLIC),
    ("POST", "/ui/login"): Rule(None, "login"),
    ("GET", "/ui/"): Rule(P.READ_JOBS, "list", shows="job_id"),
    ("GET", "/ui/live/queue"): Rule(P.READ_JOBS, "list", shows="job_id"),
    ("GET", "/ui/stuck"): Rule(P.READ_JOBS, "list"),
    ("GET", "/ui/outcomes"): Rule(P.READ_JOBS, "list"),
    ("GET", "/ui/endpoints"): Rule(P.READ_WEBHOOKS, "list", shows="endpoint_url"),
    ("GET", "/ui/jobs/{job_id}"): Rule(P.READ_JOBS, "object"),
    ("POST", "/ui/jobs/{job_id}/{command:str}"): Rule(P.CHANGE_JOBS, "object", {}),
    ("POST", "/ui/deliveries/{delivery_id}/retry"): Rule(P.MANAGE_WEBHOOKS, "object", {}),
    ("POST", "/ui/endpoints/{endpoint_id}/recover"): Rule(
        P.MANAGE_WEBHOOKS, "object", {"hours": "1"}
    ),
    ("POST", "/ui/logout"): Rule(None, "logout"),
}
A_ENDPOINT_URL = "https://hooks.example.com/tenant-a-only"
PRINCIPALS = ["admin", "a_writer", "a_reader", "b_writer", "b_reader", "anonymous", "revoked"]
# Objects a call destroys or changes for good get a fresh one per call.
FRESH = {"job_id": ("cancel",), "key_id": ("DELETE",), "endpoint_id": ("DELETE",)}


def app_routes(app: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Route):
            found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, Mount):
            found.add(("GET", route.path))
    return found


@dataclass
class World:
    api: Server
    admin: httpx.Client
    a: Tenant
    b: Tenant
    tokens: dict[str, str | None]
    ids: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return self.api.client(self.tokens[who])

    def new_job(self) -> str:
        made = self.a.writer.post(
            "/v1/jobs", json=job_body(), headers={"Idempotency-Key": f"w-{time.monotonic_ns()}"}
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def new_endpoint(self) -> str:
        made = self.a.writer.post(
            "/v1/endpoints", json={"url": A_ENDPOINT_URL, "event_types": ["*"]}
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def new_key(self) -> str:
        made = self.admin.post(f"/v1/tenants/{self.a.id}/keys", json={"role": "reader"})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


@pytest.fixture
def world(api_server: Callable[..., Server], service: Service) -> Iterator[World]:
    """Tenants A and B with their writer and reader keys, a revoked key of A's, and A's job,
    endpoint and delivery; test events go to a mock transport (nothing leaves the machine)."""
    store = SqlStore(service.database)
    mock = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204)))
    api = api_server(webhook_tester=make_sender(service, store, client=mock))
    admin = api.client(ADMIN_KEY)
    a, b = make_tenant(api, admin, "A"), make_tenant(api, admin, "B")
    revoked = admin.post(f"/v1/tenants/{a.id}/keys", json={"role": "writer"}).json()
    assert admin.delete(f"/v1/tenants/{a.id}/keys/{revoked['id']}").status_code == 200
    tokens: dict[str, str | None] = {
        "admin": ADMIN_KEY,
        "a_writer": _token(a.writer),
        "a_reader": _token(a.reader),
        "b_writer": _token(b.writer),
        "b_reader": _token(b.reader),
        "anonymous": None,
        "revoked": revoked["token"],
    }
    w = World(api, admin, a, b, tokens, {"tenant_id": a.id})
    w.ids["endpoint_url"] = A_ENDPOINT_URL
    w.ids["endpoint_id"] = w.new_endpoint()  # first: the job's events are delivered to it
    w.ids["job_id"] = w.new_job()
    w.ids["key_id"] = w.new_key()
    found = wait_until(
        lambda: a.writer.get("/v1/deliveries").json()["deliveries"], "a delivery", 15
    )
    w.ids["delivery_id"] = str(found[0]["id"])
    yield w
    store.close()


def _token(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def written_since(world: World, end: int) -> list[str]:
    """Topics of the events written after log position `end`, except the deliveries the
    delivery projector makes in the background for jobs created earlier."""
    found = world.api.ledger.recorder.select_notifications(
        end, limit=1000, inclusive_of_start=False
    )
    return [n.topic for n in found if "Delivery" not in n.topic]


def role_of(who: str) -> str:
    return "admin" if who == "admin" else who.split("_")[-1]


def expected(rule: Rule, who: str) -> set[int]:
    if rule.kind == PUBLIC:
        return {200}
    if who in ("anonymous", "revoked"):
        return {401}
    assert rule.permission is not None
    if rule.permission not in GRANTS[role_of(who)]:
        return {403}
    if who.startswith("b_") and rule.kind == "object":
        return {404}
    return OK


def prepared(world: World, key: tuple[str, str]) -> dict[str, str]:
    """The ids a call names: fresh objects for calls that destroy theirs."""
    method, template = key
    ids = dict(world.ids)
    for name, fresh_for in FRESH.items():
        if "{" + name + "}" in template and any(f in template or f == method for f in fresh_for):
            ids[name] = {"job_id": world.new_job, "endpoint_id": world.new_endpoint}.get(
                name, world.new_key
            )()
    return ids


def api_call(
    world: World, who: str, key: tuple[str, str], rule: Rule, ids: dict[str, str]
) -> httpx.Response:
    method, template = key
    body = rule.body
    headers = {}
    if body == "job":
        body = job_body()
        headers["Idempotency-Key"] = f"m-{who}-{time.monotonic_ns()}"
    elif body == "endpoint":
        body = {"url": "https://hooks.example.com/m", "event_types": ["*"]}
        if who == "admin":
            body["tenant_id"] = world.a.id
    return world.client(who).request(method, template.format(**ids), json=body, headers=headers)


def test_every_api_route_by_every_principal(
    world: World, figures: Figures, database_url: str
) -> None:
    app = create_app(world.api.ledger, ApiConfig())
    routes = {r for r in app_routes(app) if not r[1].startswith("/ui")}
    assert routes == set(API_RULES), "a route without a rule here (or a rule without a route)"
    console = {r for r in app_routes(world_app(world)) if r[1].startswith("/ui")}
    assert console == set(CONSOLE_RULES)
    tried = 0
    for who in PRINCIPALS:
        for key, rule in API_RULES.items():
            ids = prepared(world, key)
            end = log_end(world.api.ledger)
            answer = api_call(world, who, key, rule, ids)
            tried += 1
            want = expected(rule, who)
            assert answer.status_code in want, (who, key, answer.status_code, answer.text)
            if answer.status_code >= 400 and answer.status_code != 409:
                assert answer.headers["content-type"] == "application/problem+json"
                if answer.status_code in (401, 403, 404):
                    assert not written_since(world, end), (who, key, "wrote on refusal")
            if answer.status_code == 404:
                assert answer.json()["type"].endswith("/not-found")
            if rule.shows and answer.status_code == 200:
                mine = world.ids[rule.shows]
                if who.startswith("b_"):
                    assert mine not in answer.text, (who, key, "another tenant's object")
                else:
                    assert mine in answer.text, (who, key, "the list lacks its own object")
    figures.record("security: API routes", len(API_RULES), "routes")
    figures.record(f"security: API route x principal requests ({store_of(database_url)})", tried)


def world_app(world: World) -> Any:
    """The app `world` serves (the console is mounted only with read models)."""
    return world.api.uvicorn.config.app


def console_session(world: World, who: str) -> tuple[httpx.Client, str | None]:
    """A browser-like client signed in as `who` (none for anonymous; for `revoked`, signed in
    while the key was valid, then the key is revoked), and its CSRF token."""
    client = world.api.client(follow_redirects=False)
    if who == "anonymous":
        return client, None
    token = world.tokens[who]
    if who == "revoked":
        spare = world.admin.post(f"/v1/tenants/{world.a.id}/keys", json={"role": "writer"})
        token = spare.json()["token"]
    signed = client.post("/ui/login", data={"api_key": token})
    assert signed.status_code == 303, (who, signed.text)
    page = client.get("/ui/")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    if who == "revoked":
        gone = world.admin.delete(f"/v1/tenants/{world.a.id}/keys/{spare.json()['id']}")
        assert gone.status_code == 200
    return client, match.group(1)


def console_expected(rule: Rule, who: str, method: str) -> set[int]:
    if rule.kind == PUBLIC:
        return {200, 307}
    signed_out = who in ("anonymous", "revoked")
    if rule.kind == "login":
        return {401} if signed_out else {303}
    if signed_out:
        return {403} if method == "POST" else {303}
    if rule.kind == "logout":
        return {303}
    assert rule.permission is not None
    if rule.permission not in GRANTS[role_of(who)]:
        return {403}
    if who.startswith("b_") and rule.kind == "object":
        return {404}
    return {200, 303, 409}


def test_every_console_route_by_every_principal(
    world: World, figures: Figures, database_url: str
) -> None:
    tried = 0
    for who in PRINCIPALS:
        client, csrf = console_session(world, who)
        for (method, template), rule in CONSOLE_RULES.items():
            ids = {**world.ids, "command:str": "cancel"}
            if "{job_id}" in template and method == "POST":
                ids["job_id"] = world.new_job()
            path = template.replace("{command:str}", "cancel").format(**ids)
            end = log_end(world.api.ledger)
            if (method, template) == ("POST", "/ui/login"):
                token = world.tokens[who] or ""
                answer = world.api.client(follow_redirects=False).post(
                    path, data={"api_key": token}
                )
            elif method == "POST":
                answer = client.post(path, data={**(rule.body or {}), "csrf_token": csrf or ""})
            elif template == "/ui/static":
                answer = client.get("/ui/static/console.css")
            else:
                answer = client.get(path)
            tried += 1
            want = console_expected(rule, who, method)
            assert answer.status_code in want, (who, method, template, answer.status_code)
            if answer.status_code in (401, 403, 404):
                assert not written_since(world, end), (who, template, "wrote on refusal")
            if rule.shows and answer.status_code == 200:
                mine = world.ids[rule.shows]
                if who.startswith("b_"):
                    assert mine not in answer.text, (who, template, "another tenant's object")
                else:
                    assert mine in answer.text, (who, template, "the page lacks its own object")
    figures.record(
        f"security: console route x principal requests ({store_of(database_url)})", tried
    )


# -- at rest --


def raw_bytes(database_url: str) -> bytes:
    """Every byte the store holds: the SQLite files, or every row of every table of the
    PostgreSQL schema (as text, with bytea columns as their raw bytes)."""
    db = parse_database_url(database_url)
    if not db.is_postgres:
        path = Path(database_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    chunks: list[bytes] = []
    with db.connect() as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (db.schema,),
        ).fetchall()
        assert tables
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM "{db.schema}"."{table}"').fetchall():
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        chunks.append(bytes(value))
                    else:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


def secret_forms(secret: str) -> list[bytes]:
    """The forms a leaked secret could take: the text, its secret part, its raw bytes."""
    forms = [secret.encode()]
    if secret.startswith("jlk_"):
        forms.append(secret.split("_", 2)[2].encode())  # jlk_<key id>_<secret>
    if secret.startswith("whsec_"):
        part = secret.removeprefix("whsec_")
        forms += [part.encode(), base64.b64decode(part + "=" * (-len(part) % 4))]
    raw = forms[-1]
    forms.append(raw.hex().encode())
    return forms


def test_keys_and_secrets_are_not_stored_in_the_clear(world: World, database_url: str) -> None:
    writer = world.a.writer
    endpoint = writer.post(
        "/v1/endpoints",
        json={
            "url": "https://hooks.example.com/at-rest",
            "event_types": ["*"],
            "payload_encryption": True,
        },
    ).json()
    rotated = writer.post(f"/v1/endpoints/{endpoint['id']}/rotate-secret", json={}).json()
    secrets = [
        *(t for t in world.tokens.values() if t and t != ADMIN_KEY),
        ADMIN_KEY,
        endpoint["secret"],
        rotated["secret"],
        endpoint["payload_key"],
        TEST_SECRET_KEY,
    ]
    stored = raw_bytes(database_url)
    # the scan sees the stored data: names and URLs are there in the clear
    assert b"hooks.example.com/at-rest" in stored
    for n, secret in enumerate(secrets):
        for k, form in enumerate(secret_forms(secret)):
            where = stored.find(form)
            assert where < 0, (n, k, len(form), stored[max(0, where - 200) : where + 100])


# -- logs --


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_ADMIN_KEY": ADMIN_KEY,
        "LEDGER_SECRET_KEY": TEST_SECRET_KEY,
        "LEDGER_ALLOW_PRIVATE_TARGETS": "1",
        "LEDGER_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2",
    }
    with serving(env, tmp_path) as served:
        yield served.base_url, served.log_path


def test_no_key_or_secret_in_the_logs(
    served: tuple[str, Path], figures: Figures, database_url: str
) -> None:
    base, log_path = served
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    tenant = admin.post("/v1/tenants", json={"name": "Logs"}).json()
    token = tenant["key"]["token"]
    writer = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    reader = admin.post(f"/v1/tenants/{tenant['id']}/keys", json={"role": "reader"}).json()
    secrets = [ADMIN_KEY, TEST_SECRET_KEY, token, reader["token"]]
    with running_receiver() as receiver:
        receiver.script("/bad", then=Reply(500, body=b"nope"))
        for path in ("/hooks", "/bad"):
            made = writer.post(
                "/v1/endpoints", json={"url": receiver.url(path), "event_types": ["*"]}
            ).json()
            secrets.append(made["secret"])
            rotated = writer.post(f"/v1/endpoints/{made['id']}/rotate-secret", json={}).json()
            secrets.append(rotated["secret"])
            writer.post(f"/v1/endpoints/{made['id']}/test", json={})
        job = writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "logs"})
        assert job.status_code == 201
        receiver.wait_for(3, path="/hooks", timeout=30)
    # wrong keys are logged nowhere either
    for bad in (token + "x", "jlk_" + "0" * 32 + "_" + "A" * 43):
        assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {bad}"}).is_error
        secrets.append(bad)
    admin.delete(f"/v1/tenants/{tenant['id']}/keys/{reader['id']}")
    admin.close()
    writer.close()
    text = log_path.read_bytes()
    assert b"INFO" in text  # the logs were captured
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in text, "a key or secret appears in the logs"
    figures.record(
        f"security: log bytes scanned for secrets ({store_of(database_url)})", len(text), "bytes"
    )


# -- SSRF --

SSRF_DNS = {
    "public.example.com": ["93.184.215.14"],
    "loopback.example.com": ["127.0.0.1"],
    "private10.example.com": ["10.1.2.3"],
    "private172.example.com": ["172.16.0.5"],
    "private192.example.com": ["192.168.1.1"],
    "linklocal.example.com": ["169.254.169.254"],
    "cgnat.example.com": ["100.64.0.1"],
    "v6loop.example.com": ["::1"],
    "v6ula.example.com": ["fd00::1"],
    "v6linklocal.example.com": ["fe80::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "zero.example.com": ["0.0.0.0"],
    "mixed.example.com": ["93.184.215.14", "10.0.0.1"],
}


async def ssrf_dns(host: str, port: int) -> Sequence[str]:
    try:
        return SSRF_DNS[host.lower().rstrip(".")]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve") from None


REFUSED_URLS = [
    *(f"https://{name}/hook" for name in SSRF_DNS if name != "public.example.com"),
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://0x7f000001/hook",
    "https://2130706433/hook",
    "https://localhost/hook",
    "http://public.example.com/hook",  # plain http in production
    "ftp://public.example.com/hook",
    "https://user:pass@public.example.com/hook",
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_ssrf_refusal_table(
    api_server: Callable[..., Server], figures: Figures, database_url: str
) -> None:
    api = api_server(resolver=ssrf_dns, allow_private_targets=False)
    admin = api.client(ADMIN_KEY)
    tenant = make_tenant(api, admin)
    end = log_end(api.ledger)
    for url in REFUSED_URLS:
        answer = tenant.writer.post("/v1/endpoints", json={"url": url, "event_types": ["*"]})
        assert answer.status_code == 422, (url, answer.status_code, answer.text)
        assert answer.json()["invalid_params"][0]["name"] == "url", url
    assert log_end(api.ledger) == end
    ok = tenant.writer.post(
        "/v1/endpoints", json={"url": "https://public.example.com/hook", "event_types": ["*"]}
    )
    assert ok.status_code == 201, ok.text
    # changing a good endpoint's URL to a private one is refused too
    moved = tenant.writer.patch(
        f"/v1/endpoints/{ok.json()['id']}", json={"url": "https://linklocal.example.com/x"}
    )
    assert moved.status_code == 422
    figures.record("security: SSRF target URLs refused", len(REFUSED_URLS) + 1, "urls")


def test_send_time_guard_refuses_a_name_that_turned_private() -> None:
    """Registered while the name resolved public; at send time it resolves to loopback: the
    sender's transport refuses before connecting (DNS rebinding)."""
    answers = {"flip.example.com": ["93.184.215.14"]}

    async def flipping(host: str, port: int) -> Sequence[str]:
        return answers[host]

    check = TargetCheck(allow_private=False, resolver=flipping)
    assert asyncio.run(check.check("https://flip.example.com/hook")) is True  # accepted
    answers["flip.example.com"] = ["127.0.0.1"]
    with pytest.raises(Problem):
        asyncio.run(check.check("https://flip.example.com/hook"))
    transport = GuardedTransport(TargetPolicy(allow_private=False, resolver=flipping))

    async def send() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.post("https://flip.example.com/hook", content=b"{}")

    with pytest.raises(RefusedTarget, match=r"127\.0\.0\.1"):
        asyncio.run(send())


# -- timing-safe comparison --


def test_keys_and_signatures_are_compared_with_compare_digest(
    api: Server, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every secret a request presents reaches `hmac.compare_digest` (as its hash, against the
    stored hash), and so does every webhook signature a consumer checks with our verifier."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    def compared(value: Any) -> bool:
        return any(value in pair for pair in calls)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    secret = _token(tenant.writer).split("_", 2)[2]  # jlk_<key id>_<secret>
    assert tenant.writer.get("/v1/jobs").status_code == 200
    assert compared(hash_secret(secret)), "the tenant key was not compared in constant time"
    assert api.client(ADMIN_KEY).get("/v1/tenants/" + tenant.id).status_code == 200
    admin_digest = hashlib.sha256(ADMIN_KEY.encode()).digest()
    assert compared(admin_digest), "the admin key was not compared in constant time"
    wrong = secret[:-2] + ("xx" if not secret.endswith("xx") else "yy")
    bad = "_".join(_token(tenant.writer).split("_", 2)[:2]) + "_" + wrong
    assert api.client(bad).get("/v1/jobs").status_code == 401
    assert compared(hash_secret(wrong)), "a wrong secret was not compared in constant time"
    calls.clear()
    signing_secret = signing.new_secret()
    headers = signing.webhook_headers([signing_secret], "msg_1", int(time.time()), b"{}")
    signing.verify(signing_secret, headers, b"{}", now=time.time())
    expected_signature = base64.b64decode(headers["webhook-signature"].split(",", 1)[1])
    assert compared(expected_signature), "signatures are not compared in constant time"


# -- request-rate and body-size limits --


def test_rate_limit_answers_429_per_key_and_per_ip(
    api_server: Callable[..., Server], figures: Figures, database_url: str
) -> None:
    api = api_server(rate_limit_per_second=0.5, rate_limit_burst=3)
    admin = api.client(ADMIN_KEY)
    answers = [admin.get("/v1/ops/stuck").status_code for _ in range(5)]
    assert answers[:3] == [200, 200, 200] and answers[3:] == [429, 429], answers
    limited = admin.get("/v1/ops/stuck")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"].endswith("/rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit-Limit"] == "3"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert int(limited.headers["RateLimit-Reset"]) >= 1
    # another key has its own bucket, and while the API has not accepted it, it also counts
    # against its address's bucket of unproven tokens (the admin key's first request took one)
    other = api.client("jlk_" + "1" * 32 + "_" + "B" * 43)
    statuses = [other.get("/v1/jobs").status_code for _ in range(4)]
    assert statuses[0] == 401 and statuses[-1] == 429 and set(statuses) == {401, 429}, statuses
    # so a fresh random token per request buys no fresh bucket (at most a refilled token)
    guesses = [
        api.client(f"jlk_{secrets.token_hex(16)}_{'C' * 43}").get("/v1/jobs").status_code
        for _ in range(5)
    ]
    assert guesses.count(401) <= 2 and guesses[-1] == 429, guesses
    assert all(api.client().get("/healthz").status_code == 200 for _ in range(10))
    # without a key: per client IP (the console login among them); nothing is written
    end = log_end(api.ledger)
    anonymous = api.client(follow_redirects=False)
    tries = [anonymous.post("/ui/login", data={"api_key": "wrong"}).status_code for _ in range(4)]
    assert tries == [401, 401, 401, 429], tries
    assert log_end(api.ledger) == end
    refused = answers.count(429) + 1 + statuses.count(429) + guesses.count(429) + 1
    figures.record(f"security: rate-limited requests refused ({store_of(database_url)})", refused)


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(2.0, 2, max_callers=3, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("k") == 0.0
    for n in range(10):
        buckets.take(f"other-{n}")
    assert len(buckets) == 3


def test_body_limit_and_rate_limit_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobledger.bootstrap import api_config
    from jobledger.settings import Settings, SettingsError

    env = {"LEDGER_RATE_LIMIT_PER_SECOND": "7.5", "LEDGER_RATE_LIMIT_BURST": "9"}
    config = api_config(Settings.from_env(env))
    assert (config.rate_limit_per_second, config.rate_limit_burst) == (7.5, 9)
    defaults = api_config(Settings.from_env({}))
    assert (defaults.rate_limit_per_second, defaults.rate_limit_burst) == (100.0, 1000)
    with pytest.raises(SettingsError, match="LEDGER_RATE_LIMIT_BURST"):
        Settings.from_env({"LEDGER_RATE_LIMIT_BURST": "0"})


def test_oversized_bodies_are_refused_on_every_writing_route(
    world: World, figures: Figures, database_url: str
) -> None:
    limit = 256 * 1024
    tried = 0
    for method, template in API_RULES:
        if method not in ("POST", "PATCH"):
            continue
        end = log_end(world.api.ledger)
        path = template.format(**world.ids)
        body = b'{"x": "' + b"a" * (limit + 10) + b'"}'
        answer = world.client("admin" if "tenants" in path else "a_writer").request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        tried += 1
        assert answer.status_code == 413, (method, template, answer.status_code)
        assert answer.json()["type"].endswith("/body-too-large")
        assert log_end(world.api.ledger) == end
    figures.record(f"security: oversized bodies refused ({store_of(database_url)})", tried)


# -- audit: tampering with tenancy and endpoint events --


@pytest.mark.parametrize("tamper", ["altered", "reordered", "removed", "truncated"])
def test_ledger_verify_detects_tampering_beyond_jobs(
    database_url: str, service: Service, tamper: str
) -> None:
    ledger = service.ledger
    from ledger.endpoint import EndpointSettings

    tenant = ledger.create_tenant("Audit", actor="admin:t").tenant
    tid = tenant.id
    for role in ("reader", "writer"):
        ledger.issue_key(tid, role=role, actor="admin:t")
    endpoint = ledger.register_endpoint(
        str(tid),
        EndpointSettings(url="https://hooks.example.com/a", event_types=("*",)).checked(),
        actor="admin:t",
    ).endpoint
    ledger.rotate_endpoint_secret(endpoint.id, tenant_id=str(tid), actor="admin:t")
    assert ledger.write_checkpoint() is not None
    assert run_cli(database_url, "verify").returncode == 0
    raw = RawLog(database_url)
    try:
        if tamper == "altered":
            state = raw.state(tid, 1)
            assert b"Audit" in state
            raw.set_state(tid, 1, state.replace(b"Audit", b"Audis"))
            target = (tid, 1)
        elif tamper == "reordered":
            raw.swap_positions(tid, 2, 3)
            target = (tid, 3)
        elif tamper == "removed":
            raw.delete(tid, 2)
            target = (tid, 3)
        else:  # the endpoint's last event: no gap in any chain, only the checkpoint tells
            last = len(ledger.recorder.select_events(endpoint.id))
            raw.delete(endpoint.id, last)
            target = None
    finally:
        raw.close()
    broken = run_cli(database_url, "verify", "--json")
    assert broken.returncode == 1, broken.stdout
    report = json.loads(broken.stdout)
    assert report["ok"] is False
    first = report["first_break"]
    if target is None:
        assert "truncated" in first["reason"]
    else:
        assert UUID(str(first.get("job_id") or first.get("aggregate_id"))) == target[0], first
        assert first["version"] == target[1], first
