"""A real uvicorn server on 127.0.0.1 serving the API over the real service, on both stores.

- `api_server(**overrides)` (factory fixture): starts `create_app(...)` under uvicorn
  (`tests.fakes.server`) in a background thread on a free port, over the `service` fixture's
  ledger (so on SQLite and on PostgreSQL through `database_url`); stopped when the test ends.
  Overrides: `reads`, `webhook_reads`, `webhook_tester`, `resolver` (default `fake_dns`: no
  test asks real DNS), `config` fields.
- `api`: the default server; `admin`, `tenant`: an httpx client with the bootstrap admin key,
  and a tenant made through the API with a writer and a reader client.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.config import ApiConfig
from api.reads import ProjectionJobReads
from api.webhook_reads import WebhookReads
from jobledger.bootstrap import Service, api_config
from jobledger.read_models import ReadModels
from ledger.application import JobLedger
from tests.fakes.server import ThreadServer, config, serve_in_thread, stop_thread

ADMIN_KEY = "test-admin-key-0123456789"
# Host names the e2e servers resolve (`fake_dns`); any other name does not resolve.
FAKE_DNS = {
    "hooks.example.com": ["93.184.215.14"],
    "internal.example.com": ["10.0.0.7"],
    "mixed.example.com": ["93.184.215.14", "127.0.0.1"],
}


async def fake_dns(host: str, port: int) -> Sequence[str]:
    try:
        return FAKE_DNS[host.lower().rstrip(".")]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve") from None


@dataclass
class Server:
    base_url: str
    ledger: JobLedger
    uvicorn: ThreadServer
    thread: threading.Thread
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        stop_thread(self.uvicorn, self.thread, "the API")


def start_server(app: Any, ledger: JobLedger) -> Server:
    server = ThreadServer(config(app, lifespan="on"))
    base_url, thread = serve_in_thread(server, "the API")
    return Server(base_url, ledger, server, thread)


@pytest.fixture
def api_server(service: Service) -> Iterator[Callable[..., Server]]:
    """By default the app reads status and lists from the projections, as `ledger serve` does,
    with the read models following the log in background threads."""
    started: list[Server] = []
    read_models: list[ReadModels] = []

    def make(
        reads: Any = None,
        *,
        webhook_reads: Any = None,
        webhook_tester: Any = None,
        resolver: Any = fake_dns,
        **config_overrides: Any,
    ) -> Server:
        config: ApiConfig = replace(
            api_config(replace(service.settings, admin_key=ADMIN_KEY)), **config_overrides
        )
        if reads is None:
            models = ReadModels(service)
            models.start()
            read_models.append(models)
            # strong: these tests read right after writing without passing min_position;
            # eventual reads and min_position are tested in test_api_read_your_writes.py
            reads = ProjectionJobReads(service.ledger, models.store, models.waiter, strong=True)
            webhook_reads = WebhookReads(service.ledger, models.store, strong=True)
            for name, waiter in webhook_reads.waiters.items():
                models.runners[name].position_changed.append(waiter.advanced)
        app = create_app(
            service.ledger,
            config,
            reads,
            webhook_reads=webhook_reads,
            webhook_tester=webhook_tester,
            resolver=resolver,
        )
        server = start_server(app, service.ledger)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    for models in read_models:
        models.close()


@pytest.fixture
def api(api_server: Callable[..., Server]) -> Server:
    return api_server()


@pytest.fixture
def admin(api: Server) -> httpx.Client:
    return api.client(ADMIN_KEY)


@dataclass
class Tenant:
    id: str
    writer: httpx.Client
    reader: httpx.Client
    writer_key_id: str
    reader_key_id: str


def make_tenant(api: Server, admin: httpx.Client, name: str = "Acme") -> Tenant:
    created = admin.post("/v1/tenants", json={"name": name})
    assert created.status_code == 201, created.text
    body = created.json()
    reader = admin.post(f"/v1/tenants/{body['id']}/keys", json={"role": "reader"})
    assert reader.status_code == 201, reader.text
    return Tenant(
        id=body["id"],
        writer=api.client(body["key"]["token"]),
        reader=api.client(reader.json()["token"]),
        writer_key_id=body["key"]["id"],
        reader_key_id=reader.json()["id"],
    )


@pytest.fixture
def tenant(api: Server, admin: httpx.Client) -> Tenant:
    return make_tenant(api, admin)


def job_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": "acct-1",
        "board_id": "board-1",
        "pin": {
            "title": "A cat",
            "description": "A very good cat.",
            "link": "https://example.com/cat",
            "alt_text": "a cat on a mat",
            "media_source": {
                "source_type": "image_url",
                "url": "https://images.example.com/cat.png",
            },
        },
    }
    body.update(overrides)
    return body


def log_end(ledger: JobLedger) -> int:
    return int(ledger.recorder.max_notification_id() or 0)
