"""Console sessions and CSRF tokens (`api.console.session`): signing, expiry, tampering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.console.charts import jobs_per_hour, latency_by_endpoint
from api.console.session import (
    Session,
    csrf_ok,
    csrf_token,
    new_session,
    read_session,
    sign_session,
)
from delivery.crypto import SecretBox

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def test_a_signed_session_reads_back_until_it_expires() -> None:
    session = new_session("0b7c6f0e-1d2a-4a8e-9c8f-0a1b2c3d4e5f", now=NOW, lifetime=600)
    cookie = sign_session(SECRET, session)
    assert read_session(SECRET, cookie, now=NOW) == session
    assert read_session(SECRET, cookie, now=NOW + 599) == session
    assert read_session(SECRET, cookie, now=NOW + 600) is None  # expired


def test_the_cookie_holds_the_key_id_never_a_key() -> None:
    session = new_session("bootstrap-admin", now=NOW)
    cookie = sign_session(SECRET, session)
    key_id, expires, session_id, _mac = cookie.split(".")
    assert (key_id, int(expires), session_id) == (
        "bootstrap-admin",
        session.expires,
        session.session_id,
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.replace("bootstrap-admin", "0b7c6f0e-1d2a-4a8e-9c8f-0a1b2c3d4e5f"),
        lambda c: ".".join(
            [*c.split(".")[:1], str(int(c.split(".")[1]) + 3600), *c.split(".")[2:]]
        ),
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),
        lambda c: c.rsplit(".", 1)[0],
        lambda c: c + ".x",
        lambda c: "",
    ],
)
def test_an_altered_cookie_is_refused(change: object) -> None:
    cookie = sign_session(SECRET, new_session("bootstrap-admin", now=NOW))
    assert callable(change)
    assert read_session(SECRET, change(cookie), now=NOW) is None


def test_another_secret_does_not_accept_the_cookie() -> None:
    cookie = sign_session(SECRET, new_session("bootstrap-admin", now=NOW))
    assert read_session(b"t" * 32, cookie, now=NOW) is None
    assert read_session(SECRET, None, now=NOW) is None


def test_key_ids_with_separators_are_refused_when_signing() -> None:
    with pytest.raises(ValueError, match="plain tokens"):
        sign_session(SECRET, Session("a.b", int(NOW) + 10, "x" * 24))


def test_csrf_tokens_are_bound_to_the_session() -> None:
    one = new_session("bootstrap-admin", now=NOW)
    two = new_session("bootstrap-admin", now=NOW)
    token = csrf_token(SECRET, one)
    assert csrf_ok(SECRET, one, token)
    assert not csrf_ok(SECRET, two, token)  # another session's token
    assert not csrf_ok(SECRET, one, None)
    assert not csrf_ok(SECRET, one, "")
    assert not csrf_ok(SECRET, one, token[:-1])
    assert not csrf_ok(b"t" * 32, one, token)
    assert not csrf_ok(SECRET, one, "é" + token[1:])  # non-ASCII does not raise


def test_the_console_secret_is_derived_per_label() -> None:
    box = SecretBox(bytes(range(32)))
    assert box.derive("console") == box.derive("console")
    assert box.derive("console") != box.derive("other")
    assert len(box.derive("console")) == 32
    assert box.derive("console") != SecretBox(bytes(32)).derive("console")


def test_charts_are_labelled_and_escape_text() -> None:
    hour = datetime(2026, 1, 1, 10, tzinfo=UTC)
    svg = jobs_per_hour(
        [(hour, {"published": 3, "queued": 1})], ["queued", "published"], chart_id="c"
    )
    assert 'role="img"' in svg and '<title id="c-t">' in svg and "4 jobs created" in svg
    latency = latency_by_endpoint([("https://x.test/<script>", 12.0, None)], chart_id="l")
    assert "<script>" not in latency and "&lt;script&gt;" in latency
    assert "p50 12 ms" in latency and "p95: no attempts" in latency
