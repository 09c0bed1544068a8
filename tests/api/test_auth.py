"""Bearer tokens and scopes: 401 without or with a bad token, 403 with the wrong scope."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select

from app.models import ApiToken
from app.security import hash_token
from tests.helpers import ADMIN, create_sku


async def test_no_token_is_401_problem(client):
    r = await client.get("/v1/stock")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_bad_token_is_401(client):
    r = await client.get("/v1/stock", headers={"Authorization": "Bearer not-a-real-token"})
    assert r.status_code == 401


async def test_cli_token_is_stored_hashed_and_scoped(client, db, database_url, tmp_path):
    env = {**os.environ, "COOPSYNC_DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "app.cli", "token", "create", "--scope", "stock:read",
                          "--name", "warehouse"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    async with db.read() as session:
        rows = (await session.execute(select(ApiToken))).scalars().all()
    assert [r.token_hash for r in rows] == [hash_token(token)]
    assert token not in {r.token_hash for r in rows}
    reader = {"Authorization": f"Bearer {token}"}
    await create_sku(client, "TEA-AUTH")
    assert (await client.get("/v1/stock/TEA-AUTH", headers=reader)).status_code == 200
    r = await client.post("/v1/stock/receipts", json={"sku": "TEA-AUTH", "quantity": 1, "member_id": "m"},
                          headers=reader)
    assert r.status_code == 403
    assert r.json()["status"] == 403
    r = await client.post("/v1/stores", json={"platform": "sandbox", "name": "x"}, headers=reader)
    assert r.status_code == 403


async def test_revoked_token_is_refused(client, db):
    from app.models.base import utcnow
    from app.security import new_token

    token = new_token()
    async with db.transaction() as session:
        session.add(ApiToken(name="old", token_hash=hash_token(token), scopes="admin", revoked_at=utcnow()))
    r = await client.get("/v1/stock", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_admin_token_reaches_everything(client):
    assert (await client.get("/v1/stores", headers=ADMIN)).status_code == 200


def test_token_cli_refuses_unknown_scope():
    out = subprocess.run([sys.executable, "-m", "app.cli", "token", "create", "--scope", "root"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COOPSYNC_DATABASE_URL": "sqlite+aiosqlite:///:memory:"})
    assert out.returncode != 0
    assert "unknown scopes" in (out.stderr + out.stdout)


async def test_member_payouts_need_the_operator_scope(client, db):
    from app.security import new_token

    tokens = {}
    async with db.transaction() as session:
        for scopes in ("orders:read", "operator"):
            tokens[scopes] = new_token()
            session.add(ApiToken(name=scopes, token_hash=hash_token(tokens[scopes]), scopes=scopes))
    for path in ("/v1/settlements", "/v1/settlements/00000000-0000-0000-0000-000000000000"):
        reader = await client.get(path, headers={"Authorization": f"Bearer {tokens['orders:read']}"})
        assert reader.status_code == 403, path
        operator = await client.get(path, headers={"Authorization": f"Bearer {tokens['operator']}"})
        assert operator.status_code in (200, 404), path
