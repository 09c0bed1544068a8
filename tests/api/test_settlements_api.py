"""Settlements over the API, end to end: a run, a receiver that fails twice, one statement per currency."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import respx

from app.domain.signing import verify
from tests.domain.test_settlement import T0, deliver_order, refund_order
from tests.services.test_dividends import SECRET, URL, drain
from tests.helpers import ADMIN, create_sku, create_store, receive


async def test_done_when_one_statement_per_currency_after_503_503_200(client, db, runner):
    store = await create_store(client, "sandbox", settings={"return_window_days": 0, "fee_rate_bp": 300})
    await create_sku(client, "TEA-250G", "Gynostemma tea 250 g")
    await create_sku(client, "HONEY-500G", "Wild honey 500 g")
    await receive(client, "TEA-250G", 4, member_id="hh-wang")
    await receive(client, "TEA-250G", 10, member_id="hh-li")
    await receive(client, "HONEY-500G", 6, member_id="hh-zhao")
    await deliver_order(db, store["id"], "CN-1", [("TEA-250G", 6, 5994), ("HONEY-500G", 1, 3800)])
    await deliver_order(db, store["id"], "CN-2", [("TEA-250G", 2, 1998)], fee=40)
    await deliver_order(db, store["id"], "US-1", [("HONEY-500G", 2, 2599)], currency="USD")
    # Partly refunded: one tea unit came back, and a money-only goodwill refund on the honey.
    await refund_order(db, store["id"], "CN-1", "RF-1", 999, at=T0, lines=[(0, 1, 999, "return")])
    await refund_order(db, store["id"], "US-1", "RF-2", 300, currency="USD", at=T0)

    r = await client.get("/v1/dividend-deliveries", headers=ADMIN)
    assert r.json()["items"] == []
    r = await client.post("/v1/settlements/run", headers=ADMIN | {"Idempotency-Key": "run-1"})
    assert r.status_code == 201, r.text
    created = {s["currency"]: s for s in r.json()["items"]}
    assert sorted(created) == ["CNY", "USD"]
    assert all(s["delivery"] == {"status": "pending", "attempts": 0, "delivered_at": None} for s in created.values())
    replay = await client.post("/v1/settlements/run", headers=ADMIN | {"Idempotency-Key": "run-1"})
    assert replay.json() == r.json() and replay.headers.get("Idempotent-Replayed") == "true"
    r = await client.get("/v1/dividend-deliveries", params={"status": "pending"}, headers=ADMIN)
    assert {i["id"] for i in r.json()["items"]} == {s["id"] for s in created.values()}

    seen: Counter[str] = Counter()
    held: dict[str, bytes] = {}  # what the receiver keeps: one body per key, as a deduping receiver does

    def receiver(request: httpx.Request) -> httpx.Response:
        verify(SECRET, dict(request.headers), request.content)
        key = request.headers["Idempotency-Key"]
        seen[key] += 1
        if seen[key] <= 2:
            return httpx.Response(503, text="maintenance")
        held.setdefault(key, request.content)
        return httpx.Response(200, json={"accepted": key})

    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=receiver)
        await drain(runner, db)

    assert seen == {s["id"]: 3 for s in created.values()}
    statements = {json.loads(body)["currency"]: json.loads(body) for body in held.values()}
    assert sorted(statements) == ["CNY", "USD"]  # exactly one statement per currency
    for currency, body in statements.items():
        assert body["net_minor"] == body["gross_minor"] - body["refunds_minor"] - body["platform_fees_minor"]
        assert sum(s["net_minor"] for s in body["member_shares"]) == body["net_minor"]
        assert "delivery" not in body

    cny, usd = statements["CNY"], statements["USD"]
    assert (cny["gross_minor"], cny["refunds_minor"]) == (5994 + 3800 + 1998, 999)
    assert cny["platform_fees_minor"] == 294 + 40  # 3 % of 97.94 rounds to 2.94; CN-2's fee is reported
    assert {o["external_id"] for o in cny["orders"]} == {"CN-1", "CN-2"}
    assert (usd["gross_minor"], usd["refunds_minor"], usd["platform_fees_minor"]) == (2599, 300, 78)
    assert {s["member_id"] for s in usd["member_shares"]} == {"hh-zhao"}

    r = await client.get("/v1/settlements", headers=ADMIN)
    assert r.status_code == 200
    listed = {s["currency"]: s for s in r.json()["items"]}
    for currency, body in statements.items():
        api = dict(listed[currency])
        delivery = api.pop("delivery")
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3 and delivery["delivered_at"]
        api.pop("run_id")
        assert api == body  # the API and the receiver agree to the fen
        one = await client.get(f"/v1/settlements/{body['id']}", headers=ADMIN)
        assert one.status_code == 200 and one.json()["delivery"]["status"] == "delivered"

    r = await client.get("/v1/dividend-deliveries", params={"status": "delivered"}, headers=ADMIN)
    items = r.json()["items"]
    assert len(items) == 2 and all(i["attempts"] == 3 and i["last_attempt"]["status_code"] == 200 for i in items)
    r = await client.get(f"/v1/dividend-deliveries/{items[0]['id']}", headers=ADMIN)
    assert [a["status_code"] for a in r.json()["attempt_history"]] == [503, 503, 200]

    again = await client.post("/v1/settlements/run", headers=ADMIN)
    assert again.status_code == 200 and again.json()["items"] == []


async def test_lists_paginate_and_routes_need_a_token(client, db):
    store = await create_store(client, "sandbox", settings={"return_window_days": 0})
    for n, currency in enumerate(["CNY", "USD", "EUR"]):
        await deliver_order(db, store["id"], f"P-{n}", [("NOT-BOUND", 1, 100 + n)], currency=currency)
    r = await client.post("/v1/settlements/run", headers=ADMIN)
    assert r.status_code == 201 and len(r.json()["items"]) == 3

    ids, cursor = [], None
    while True:
        r = await client.get("/v1/settlements", params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                             headers=ADMIN)
        assert r.status_code == 200
        ids += [s["id"] for s in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(ids) == sorted(s["id"] for s in (await client.get("/v1/settlements", headers=ADMIN)).json()["items"])
    assert len(set(ids)) == 3
    r = await client.get("/v1/settlements", params={"currency": "usd"}, headers=ADMIN)
    assert [s["currency"] for s in r.json()["items"]] == ["USD"]

    r = await client.get("/v1/settlements", params={"cursor": "garbage!"}, headers=ADMIN)
    assert r.status_code == 400
    assert (await client.get("/v1/dividend-deliveries", params={"status": "lost"}, headers=ADMIN)).status_code == 400
    assert (await client.get("/v1/settlements/nope", headers=ADMIN)).status_code == 404
    assert (await client.post("/v1/settlements/run")).status_code == 401
    assert (await client.get("/v1/settlements")).status_code == 401
    assert (await client.get("/v1/dividend-deliveries")).status_code == 401
