"""API tokens for admins: listed without their secret, revoked at once, last use noted once a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.models import ApiToken
from app.models.base import utcnow
from app.security import hash_token, new_token
from tests.helpers import ADMIN


async def add_token(db, name: str, scopes: str = "admin", **fields) -> tuple[int, str]:
    token = new_token()
    async with db.transaction() as session:
        row = ApiToken(name=name, token_hash=hash_token(token), scopes=scopes, **fields)
        session.add(row)
        await session.flush()
        return row.id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_list_has_names_scopes_and_times_never_the_token_or_its_hash(client, db):
    first_id, first = await add_token(db, "warehouse", "stock:read stock:write")
    second_id, second = await add_token(db, "console", "operator")
    r = await client.get("/v1/tokens", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    assert [(t["id"], t["name"], t["scopes"]) for t in body["items"]] == [
        (first_id, "warehouse", ["stock:read", "stock:write"]), (second_id, "console", ["operator"])]
    for item in body["items"]:
        assert set(item) == {"id", "name", "scopes", "created_at", "last_used_at", "revoked_at"}
        assert item["created_at"] and item["last_used_at"] is None and item["revoked_at"] is None
    for secret in (first, second, hash_token(first), hash_token(second)):
        assert secret not in r.text


async def test_the_list_is_paginated(client, db):
    ids = [(await add_token(db, f"t{i}"))[0] for i in range(5)]
    seen, cursor = [], None
    while True:
        r = await client.get("/v1/tokens", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                             headers=ADMIN)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) <= 2
        seen += [t["id"] for t in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert (await client.get("/v1/tokens", params={"limit": 0}, headers=ADMIN)).status_code == 422
    assert (await client.get("/v1/tokens", params={"cursor": "not-ours"}, headers=ADMIN)).status_code == 400


@pytest.mark.parametrize("scopes", ["operator", "stock:write orders:read"])
async def test_tokens_need_the_admin_scope(client, db, scopes):
    _, token = await add_token(db, "narrow", scopes)
    victim, _ = await add_token(db, "victim")
    assert (await client.get("/v1/tokens", headers=bearer(token))).status_code == 403
    assert (await client.delete(f"/v1/tokens/{victim}", headers=bearer(token))).status_code == 403
    assert (await client.get("/v1/tokens")).status_code == 401
    assert (await client.delete(f"/v1/tokens/{victim}")).status_code == 401
    r = await client.get("/v1/tokens", headers=ADMIN)
    assert [t["revoked_at"] for t in r.json()["items"]] == [None, None]


async def test_a_revoked_token_is_refused_at_once(client, db):
    token_id, token = await add_token(db, "leaked", "admin")
    assert (await client.get("/v1/stock", headers=bearer(token))).status_code == 200
    r = await client.delete(f"/v1/tokens/{token_id}", headers=ADMIN)
    assert r.status_code == 204 and r.content == b""
    r = await client.get("/v1/stock", headers=bearer(token))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"].startswith("Bearer")
    listed = (await client.get("/v1/tokens", headers=ADMIN)).json()["items"]
    revoked_at = listed[0]["revoked_at"]
    assert revoked_at is not None
    # Revoking again changes nothing: still revoked, at the first time.
    assert (await client.delete(f"/v1/tokens/{token_id}", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/tokens", headers=ADMIN)).json()["items"][0]["revoked_at"] == revoked_at


async def test_a_token_can_revoke_itself(client, db):
    token_id, token = await add_token(db, "self", "admin")
    assert (await client.delete(f"/v1/tokens/{token_id}", headers=bearer(token))).status_code == 204
    assert (await client.get("/v1/tokens", headers=bearer(token))).status_code == 401


@pytest.mark.parametrize("token_id", ["999999", str(2**63 - 1), str(2**63), "0", "-1", str(10**30)])
async def test_revoking_an_unknown_token_is_404(client, db, token_id):
    r = await client.delete(f"/v1/tokens/{token_id}", headers=ADMIN)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_last_use_is_written_at_most_once_a_minute(client, db, monkeypatch):
    from app.api import deps

    writes = []
    note_use = deps._note_use

    async def counting(*args):
        writes.append(args)
        await note_use(*args)

    monkeypatch.setattr(deps, "_note_use", counting)
    token_id, token = await add_token(db, "busy", "stock:read")

    async def last_used():
        items = (await client.get("/v1/tokens", headers=ADMIN)).json()["items"]
        return next(t["last_used_at"] for t in items if t["id"] == token_id)

    assert await last_used() is None
    for _ in range(5):
        assert (await client.get("/v1/stock", headers=bearer(token))).status_code == 200
    assert len(writes) == 1  # the first request wrote it; the next four found it fresh
    first = await last_used()
    assert first is not None

    # A minute later, the next request writes it again (once).
    async with db.transaction() as session:
        await session.execute(update(ApiToken).where(ApiToken.id == token_id)
                              .values(last_used_at=utcnow() - timedelta(seconds=61)))
    for _ in range(3):
        assert (await client.get("/v1/stock", headers=bearer(token))).status_code == 200
    assert len(writes) == 2
    assert await last_used() > first


async def test_a_token_used_by_two_replicas_at_once_is_written_once(db):
    """The write is conditional: a replica that lost the race writes nothing."""
    from app.api.deps import _note_use

    token_id, _ = await add_token(db, "raced", "stock:read")
    now = utcnow()
    await _note_use(db, token_id, now)
    await _note_use(db, token_id, now + timedelta(seconds=5))  # another replica, a moment later
    async with db.read() as session:
        assert (await session.get(ApiToken, token_id)).last_used_at == now


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COOPSYNC_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "app.cli", "token", *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_cli_lists_and_revokes_tokens(client, db, database_url):
    out = _cli(database_url, "create", "--scope", "stock:read", "--name", "warehouse")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert (await client.get("/v1/stock", headers=bearer(token))).status_code == 200

    listing = _cli(database_url, "list")
    assert listing.returncode == 0, listing.stderr
    assert "warehouse" in listing.stdout and "stock:read" in listing.stdout
    assert token not in listing.stdout + listing.stderr
    assert hash_token(token) not in listing.stdout + listing.stderr
    token_id = (await client.get("/v1/tokens", headers=ADMIN)).json()["items"][0]["id"]
    assert f"{token_id} " in listing.stdout or f" {token_id} " in listing.stdout

    revoked = _cli(database_url, "revoke", str(token_id))
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/v1/stock", headers=bearer(token))).status_code == 401
    after = _cli(database_url, "list")
    assert after.returncode == 0 and after.stdout.count(str(utcnow().year)) >= 3  # created, used, revoked
    assert (await client.get("/v1/tokens", headers=ADMIN)).json()["items"][0]["revoked_at"] is not None

    unknown = _cli(database_url, "revoke", "999999")
    assert unknown.returncode == 1
    assert "no token 999999" in unknown.stderr


def test_cli_refuses_a_name_longer_than_the_column(database_url):
    out = _cli(database_url, "create", "--scope", "stock:read", "--name", "n" * 129)
    assert out.returncode != 0
    assert "1 to 128 characters" in out.stdout + out.stderr
