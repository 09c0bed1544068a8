"""Stock routes of the REST contract: skus, receipts, adjustments, movements, pagination."""

from __future__ import annotations

from tests.helpers import ADMIN, create_sku, ledger_state, receive, stock


async def test_readme_walkthrough_same_idempotency_key_receives_once(client):
    await create_sku(client, "GYNO-TEA-250G")
    headers = {**ADMIN, "Idempotency-Key": "delivery-2026-11-29-m01"}
    body = {"sku": "GYNO-TEA-250G", "quantity": 100, "member_id": "m-01"}
    first = await client.post("/v1/stock/receipts", json=body, headers=headers)
    second = await client.post("/v1/stock/receipts", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    current = await stock(client, "GYNO-TEA-250G")
    assert (current["on_hand"], current["reserved"], current["available"]) == (100, 0, 100)


async def test_receipt_answers_movement_and_new_on_hand(client):
    await create_sku(client, "HONEY-500G", "Wild honey")
    await receive(client, "HONEY-500G", 30, "m-07")
    body = await receive(client, "HONEY-500G", 12, "m-08", lot_ref="lot-2026-11")
    assert body["on_hand"] == 42
    assert body["movement"]["kind"] == "receipt"
    assert body["movement"]["member_id"] == "m-08"
    assert body["movement"]["on_hand_after"] == 42


async def test_adjustment_changes_on_hand_and_refuses_going_below_zero(client, db):
    await create_sku(client, "FUNGUS-100G")
    await receive(client, "FUNGUS-100G", 10)
    r = await client.post("/v1/stock/adjustments", json={"sku": "FUNGUS-100G", "delta": -3, "reason": "stocktake"},
                          headers=ADMIN)
    assert r.status_code == 201 and r.json()["on_hand"] == 7
    before = await ledger_state(db, "FUNGUS-100G")
    r = await client.post("/v1/stock/adjustments", json={"sku": "FUNGUS-100G", "delta": -8, "reason": "stocktake"},
                          headers=ADMIN)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await ledger_state(db, "FUNGUS-100G") == before


async def test_movements_are_newest_first_and_paginate(client):
    await create_sku(client, "TEA-A")
    for quantity in range(1, 6):
        await receive(client, "TEA-A", quantity)
    seen = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/stock/TEA-A/movements", params=params, headers=ADMIN)
        assert r.status_code == 200
        page = r.json()
        seen += [m["on_hand_delta"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


async def test_sku_and_stock_lists_paginate_with_opaque_cursor(client):
    for i in range(5):
        await create_sku(client, f"SKU-{i}")
    r = await client.get("/v1/skus", params={"limit": 3}, headers=ADMIN)
    page1 = r.json()
    assert [s["sku"] for s in page1["items"]] == ["SKU-0", "SKU-1", "SKU-2"]
    r = await client.get("/v1/stock", params={"limit": 3, "cursor": page1["next_cursor"]}, headers=ADMIN)
    page2 = r.json()
    assert [s["sku"] for s in page2["items"]] == ["SKU-3", "SKU-4"]
    assert page2["next_cursor"] is None
    assert set(page2["items"][0]) >= {"sku", "name", "on_hand", "reserved", "available", "updated_at", "listings"}


async def test_duplicate_sku_is_a_conflict(client):
    await create_sku(client, "DUP-1")
    r = await client.post("/v1/skus", json={"sku": "DUP-1", "name": "again"}, headers=ADMIN)
    assert r.status_code == 409
    assert r.json()["status"] == 409


async def test_unknown_sku_stock_is_404_problem(client):
    r = await client.get("/v1/stock/NOPE", headers=ADMIN)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
