"""The console over plain HTTP (no browser), against a real uvicorn: where it is mounted and the
cookie's flags behind a TLS proxy. The browser tests are in test_console.py."""

from __future__ import annotations

from api.app import create_app
from jobledger.bootstrap import Service, api_config, console_secret
from tests.e2e.conftest import ADMIN_KEY, Server, start_server

HTTPS = {"X-Forwarded-Proto": "https"}  # uvicorn trusts it from 127.0.0.1


def test_behind_https_the_session_cookie_is_secure(api: Server) -> None:
    client = api.client(follow_redirects=False)
    assert client.get("/ui/").headers["location"] == "/ui/login"
    assert client.get("/ui").headers["location"] == "/ui/"
    refused = client.post("/ui/login", data={"api_key": "wrong"}, headers=HTTPS)
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    signed = client.post("/ui/login", data={"api_key": ADMIN_KEY}, headers=HTTPS)
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    for flag in ("HttpOnly", "Path=/ui", "SameSite=strict", "Secure"):
        assert flag.lower() in cookie.lower(), (flag, cookie)
    assert ADMIN_KEY not in cookie
    value = cookie.split(";", 1)[0]
    page = client.get("/ui/", headers={**HTTPS, "Cookie": value})
    assert page.status_code == 200, page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    plain = client.post("/ui/login", data={"api_key": ADMIN_KEY})
    assert "secure" not in plain.headers["set-cookie"].lower()  # plain http on 127.0.0.1


def test_the_session_secret_comes_from_the_sealing_key(service: Service) -> None:
    secret = console_secret(service.settings)
    assert secret is not None and len(secret) == 32
    assert secret == console_secret(service.settings)  # every process derives the same
    assert api_config(service.settings).console_secret == secret


def test_without_read_models_there_is_no_console(service: Service) -> None:
    server = start_server(create_app(service.ledger, api_config(service.settings)), service.ledger)
    try:
        assert server.client().get("/ui/login").status_code == 404
    finally:
        server.stop()
