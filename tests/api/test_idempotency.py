"""Idempotency-Key on writes: replay, 422 on another body, 409 while in flight."""

from __future__ import annotations

import asyncio

from app.models import IdempotencyRecord
from tests.helpers import ADMIN, create_sku, ledger_state


async def test_same_key_other_body_is_422_and_writes_nothing(client, db):
    await create_sku(client, "TEA-I")
    h = {**ADMIN, "Idempotency-Key": "k-1"}
    r = await client.post("/v1/stock/receipts", json={"sku": "TEA-I", "quantity": 5, "member_id": "m-01"}, headers=h)
    assert r.status_code == 201
    before = await ledger_state(db, "TEA-I")
    r = await client.post("/v1/stock/receipts", json={"sku": "TEA-I", "quantity": 6, "member_id": "m-01"}, headers=h)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await ledger_state(db, "TEA-I") == before


async def test_key_in_flight_is_409(client, db):
    await create_sku(client, "TEA-F")
    # A first request holding the key (as if it were still running).
    async with db.transaction() as session:
        session.add(IdempotencyRecord(principal="admin-token", key="k-busy", method="POST",
                                      path="/v1/stock/receipts", request_hash="x" * 64, status="in_flight"))
    body = {"sku": "TEA-F", "quantity": 1, "member_id": "m-01"}
    from app.api.idempotency import request_fingerprint
    import orjson

    async with db.transaction() as session:
        record = await session.get(IdempotencyRecord, 1)
        record.request_hash = request_fingerprint("POST", "/v1/stock/receipts", orjson.dumps(body))
    r = await client.post("/v1/stock/receipts", json=body, headers={**ADMIN, "Idempotency-Key": "k-busy"})
    assert r.status_code == 409
    assert await ledger_state(db, "TEA-F") == (0, 0, 0)


async def test_concurrent_requests_with_one_key_write_once(client, db):
    await create_sku(client, "TEA-C")
    body = {"sku": "TEA-C", "quantity": 4, "member_id": "m-01"}
    h = {**ADMIN, "Idempotency-Key": "k-race"}
    answers = await asyncio.gather(*[client.post("/v1/stock/receipts", json=body, headers=h) for _ in range(6)])
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {201, 409}
    assert 201 in codes
    _, on_hand, _ = await ledger_state(db, "TEA-C")
    assert on_hand == 4


async def test_failed_request_frees_its_key(client, db):
    h = {**ADMIN, "Idempotency-Key": "k-fail"}
    r = await client.post("/v1/stock/receipts", json={"sku": "LATER", "quantity": 2, "member_id": "m"}, headers=h)
    assert r.status_code == 422
    await create_sku(client, "LATER")
    r = await client.post("/v1/stock/receipts", json={"sku": "LATER", "quantity": 2, "member_id": "m"}, headers=h)
    assert r.status_code == 201
    assert (await ledger_state(db, "LATER"))[1] == 2


async def test_sku_creation_replays_with_key(client, db):
    h = {**ADMIN, "Idempotency-Key": "sku-1"}
    a = await client.post("/v1/skus", json={"sku": "S-1", "name": "one"}, headers=h)
    b = await client.post("/v1/skus", json={"sku": "S-1", "name": "one"}, headers=h)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()


async def test_a_retry_that_slips_past_the_idempotency_record_still_receives_once(client, db):
    """Even if the record is gone (a request outlived the in-flight window), the ledger's cause key,
    derived from the Idempotency-Key, refuses the second application."""
    from sqlalchemy import delete

    await create_sku(client, "TEA-SLIP")
    body = {"sku": "TEA-SLIP", "quantity": 7, "member_id": "m-01"}
    h = {**ADMIN, "Idempotency-Key": "slip-1"}
    first = await client.post("/v1/stock/receipts", json=body, headers=h)
    async with db.transaction() as session:
        await session.execute(delete(IdempotencyRecord))
    again = await client.post("/v1/stock/receipts", json=body, headers=h)
    assert first.status_code == again.status_code == 201
    assert again.json()["movement"]["id"] == first.json()["movement"]["id"]
    _, on_hand, _ = await ledger_state(db, "TEA-SLIP")
    assert on_hand == 7
