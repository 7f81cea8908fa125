"""Console sessions and CSRF tokens: pure functions of a server secret, a key id and the time.

A session cookie is `<key_id>.<expires unix seconds>.<session id>.<mac>`, where `mac` is the
unpadded base64url of HMAC-SHA256(secret, "session|key_id|expires|session id"). It names the
API key that signed in, never holds the key itself, and stops being valid at `expires`; the
console still re-checks the key on every request (a revoked key is signed out at once).
A CSRF token is HMAC-SHA256(secret, "csrf|session id"), so it is bound to one session and
checked in constant time.

This module must never read a clock, a store or the request: callers pass `now`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SESSION_SECONDS = 8 * 3600
_KEY_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class Session:
    key_id: str
    expires: int  # unix seconds
    session_id: str


def new_session(key_id: str, *, now: float, lifetime: int = SESSION_SECONDS) -> Session:
    return Session(key_id, int(now) + lifetime, secrets.token_urlsafe(18))


def sign_session(secret: bytes, session: Session) -> str:
    if not _KEY_ID.fullmatch(session.key_id) or not _SESSION_ID.fullmatch(session.session_id):
        raise ValueError("a session's key id and session id must be plain tokens")
    body = f"{session.key_id}.{session.expires}.{session.session_id}"
    return f"{body}.{_mac(secret, 'session', body.replace('.', '|'))}"


def read_session(secret: bytes, cookie: str | None, *, now: float) -> Session | None:
    """The session a cookie carries, or None when it is missing, forged, altered or expired."""
    if not cookie:
        return None
    parts = cookie.split(".")
    if len(parts) != 4:
        return None
    key_id, expires_text, session_id, mac = parts
    if not (expires_text.isdigit() and len(expires_text) <= 12):
        return None
    expected = _mac(secret, "session", f"{key_id}|{expires_text}|{session_id}")
    if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogateescape")):
        return None
    if int(expires_text) <= now:
        return None
    return Session(key_id, int(expires_text), session_id)


def csrf_token(secret: bytes, session: Session) -> str:
    return _mac(secret, "csrf", session.session_id)


def csrf_ok(secret: bytes, session: Session, token: str | None) -> bool:
    """Constant-time check of a form's token against the session's."""
    if not token:
        return False
    expected = csrf_token(secret, session).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogateescape"))


def _mac(secret: bytes, label: str, message: str) -> str:
    digest = hmac.new(secret, f"{label}|{message}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
