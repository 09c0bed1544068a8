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


# -- allocation rules (issue 15 point 3) -----------------------------------------------------------


async def _two_stores(client) -> list[int]:
    from tests.helpers import create_store

    ids = []
    for name in ("live", "second"):
        store = await create_store(client, "sandbox", name=name, external_shop_id=f"shop-{name}",
                                   settings={"base_url": f"inproc://{name}", "poll_interval_s": 0})
        r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN,
                             json=[{"external_sku_key": "tea", "sku": "TEA-RULES"}])
        assert r.status_code == 200, r.text
        ids.append(store["id"])
    return ids


async def test_per_store_rules_a_lock_and_the_buffer_switch_are_kept_beside_mode_shares_and_caps(client):
    from datetime import datetime, timedelta, timezone

    await create_sku(client, "TEA-RULES")
    a, b = await _two_stores(client)
    until = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    body = {"mode": "shares", "shares": {str(b): 1}, "caps": {str(b): 300},
            "stores": {str(a): {"percent": 50, "min": 10, "max": 400, "buffer": 5, "delist_below": 3}},
            "lock": {"store_id": a, "units": 20, "until": until.isoformat()}, "sales_speed_buffer": False}
    r = await client.put("/v1/stock/TEA-RULES/allocation", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    stored = r.json()["allocation"]
    assert stored["stores"] == {str(a): {"percent": 50, "min": 10, "max": 400, "buffer": 5, "delist_below": 3}}
    assert stored["lock"]["store_id"] == a and datetime.fromisoformat(stored["lock"]["until"]) == until
    assert stored["sales_speed_buffer"] is False
    # Today's body still means what it meant, and the default is stored as null.
    r = await client.put("/v1/stock/TEA-RULES/allocation", json={"mode": "shares", "shares": {str(a): 1}}, headers=ADMIN)
    assert r.json()["allocation"] == {"mode": "shares", "shares": {str(a): 1}, "caps": {}}
    r = await client.put("/v1/stock/TEA-RULES/allocation", json={"mode": "shared"}, headers=ADMIN)
    assert r.json()["allocation"] is None


async def test_an_inconsistent_allocation_is_a_422_problem_and_changes_nothing(client):
    from datetime import datetime, timedelta, timezone

    await create_sku(client, "TEA-RULES")
    a, b = await _two_stores(client)
    good = {"mode": "shares", "shares": {str(a): 7, str(b): 3}}
    assert (await client.put("/v1/stock/TEA-RULES/allocation", json=good, headers=ADMIN)).status_code == 200
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    bad = [
        ({"mode": "shares", "stores": {str(a): {"percent": 60}, str(b): {"percent": 50}}}, "over 100"),
        ({"stores": {str(a): {"min": 10, "max": 5}}}, "min 10 is above max 5"),
        ({"stores": {str(a): {"percent": 10, "fixed": 5}}}, "give one"),
        ({"stores": {"999999": {"fixed": 5}}}, "no store"),
        ({"lock": {"store_id": 999999, "units": 5, "until": future}}, "lock.store_id"),
        ({"lock": {"store_id": a, "units": 5, "until": past}}, "already ended"),
        ({"lock": {"store_id": a, "units": 5, "until": "2026-12-01T20:00:00"}}, "timezone"),
        ({"stores": {str(a): {"percent": 101}}}, "100"),
        ({"stores": {str(a): {"buffer": -1}}}, "0"),
        ({"stores": {str(a): {"pct": 5}}}, "pct"),
        ({"sales_speed_buffer": "yes"}, "sales_speed_buffer"),
    ]
    for body, words in bad:
        r = await client.put("/v1/stock/TEA-RULES/allocation", json=body, headers=ADMIN)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert words in r.json()["detail"] or words in str(r.json().get("errors")), (body, r.json())
        assert (await stock(client, "TEA-RULES"))["allocation"] == {**good, "caps": {}}


async def test_the_openapi_document_describes_the_rules_with_an_example(client):
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    policy = schemas["AllocationPolicy"]
    assert {"mode", "shares", "caps", "stores", "lock", "sales_speed_buffer"} <= set(policy["properties"])
    assert policy["properties"]["sales_speed_buffer"]["default"] is True
    assert "description" in policy["properties"]["sales_speed_buffer"]
    assert any("stores" in example and "lock" in example for example in policy["examples"])
    rule = schemas["StoreAllocationRule"]["properties"]
    assert {"percent", "fixed", "min", "max", "buffer", "delist_below"} <= set(rule)
    assert all(rule[name].get("description") for name in rule)
