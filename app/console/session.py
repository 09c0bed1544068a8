"""Console sign-in: a signed session cookie and the CSRF token of its forms.

The cookie holds no token: it names the principal and the SHA-256 digest of the token it signed in
with, signed with an HMAC key derived from ``COOPSYNC_SECRET_KEY``. Every request checks the token
again (a revoked token ends its sessions at once) and takes its scopes from the database, as the API
does. The CSRF token is an HMAC of the session's random nonce, so a form from another session, or one
posted after the session ended, is refused (403) before anything is read from it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from app.config import Settings
from app.db import Database
from app.models import ApiToken
from app.security import Principal, expand_scopes, hash_token, same_secret

COOKIE = "coopsync_console"
LOGIN_COOKIE = "coopsync_console_login"  # the nonce the sign-in form's CSRF token is bound to
LANG_COOKIE = "coopsync_lang"
SESSION_TTL_S = 8 * 3600  # seconds a session lasts from sign-in
LOGIN_TTL_S = 3600  # seconds a sign-in form stays valid


def signing_key(settings: Settings) -> bytes:
    """A key for console cookies only, derived from the newest secret key (never the key itself)."""
    secret = settings.secret_key.get_secret_value().split(",")[0].strip() if settings.secret_key else ""
    if not secret:  # no key configured (some tests): a per-process key, so sessions end with the process
        secret = _PROCESS_SECRET
    return hashlib.sha256(b"coopsync-console-session-v1|" + secret.encode()).digest()


_PROCESS_SECRET = secrets.token_urlsafe(32)


def _sign(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def encode(key: bytes, payload: dict) -> str:
    # Unpadded: a cookie value with "=" would be sent quoted.
    data = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{data}.{_sign(key, data.encode())}"


def decode(key: bytes, value: str | None) -> dict | None:
    """The payload of a cookie this key signed and whose time is not up, else None."""
    if not value or "." not in value:
        return None
    data, signature = value.rsplit(".", 1)
    if not hmac.compare_digest(signature, _sign(key, data.encode())):  # timing-attack defence
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(data.encode() + b"=" * (-len(data) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
        return None
    return payload


def csrf_token(key: bytes, nonce: str) -> str:
    return _sign(key, f"csrf|{nonce}".encode())


def csrf_ok(key: bytes, nonce: str | None, given: str | None) -> bool:
    return bool(nonce and given) and hmac.compare_digest(csrf_token(key, nonce), given)


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    nonce: str
    csrf: str


async def principal_for_token(db: Database, settings: Settings, token: str) -> tuple[Principal, str] | None:
    """The principal a token acts as, and the digest the session keeps, as the API checks it."""
    token = token.strip()
    if not token:
        return None
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    if admin and same_secret(token, admin):
        return Principal(name="admin-token", scopes=expand_scopes(["admin"])), "admin:" + hash_token(token)
    digest = hash_token(token)
    principal = await _stored_principal(db, digest)
    return (principal, digest) if principal else None


async def _stored_principal(db: Database, digest: str) -> Principal | None:
    async with db.read() as session:
        row = (await session.execute(select(ApiToken).where(
            ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))).scalar_one_or_none()
    if row is None:
        return None
    return Principal(name=f"token:{row.id}:{row.name}"[:128], scopes=expand_scopes(row.scopes.split()))


def new_session_cookie(key: bytes, digest: str) -> str:
    return encode(key, {"th": digest, "n": secrets.token_urlsafe(16), "exp": int(time.time()) + SESSION_TTL_S})


async def load_session(db: Database, settings: Settings, key: bytes, cookie: str | None) -> ConsoleSession | None:
    """The session of a valid cookie whose token is still good, else None."""
    payload = decode(key, cookie)
    if payload is None:
        return None
    digest, nonce = str(payload.get("th", "")), str(payload.get("n", ""))
    if digest.startswith("admin:"):
        admin = settings.admin_token.get_secret_value() if settings.admin_token else None
        if not admin or not same_secret(digest, "admin:" + hash_token(admin)):
            return None  # the admin token was changed or removed: its sessions end
        principal = Principal(name="admin-token", scopes=expand_scopes(["admin"]))
    else:
        principal = await _stored_principal(db, digest)
        if principal is None:
            return None
    return ConsoleSession(principal, nonce, csrf_token(key, nonce))
