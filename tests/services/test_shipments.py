"""Shipments (发货回传) end to end on a sandbox shop: the stock moves once whichever of our shipment and the
platform's own "shipped" comes first, refusals write nothing, split parcels, retries, carriers, to-ship."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from app.models import Job, Order, Shipment, StockMovement
from tests.helpers import ADMIN, count_rows
from tests.shops import stock_of


async def _paid_order(shop, runner, quantity: int = 2) -> dict:
    """A buyer orders ``quantity`` on the sandbox shop; the webhook is applied; the order as we hold it."""
    sold = shop.market.sell("tea-250", quantity)
    await shop.deliver()
    await runner.run_until_idle()
    r = await shop.client.get("/v1/orders", params={"external_id": sold["id"]}, headers=ADMIN)
    [order] = r.json()["items"]
    return order


async def _ship(client, order: dict, tracking: str = "ZT1000001", carrier: str = "ZTO", lines=None, **headers):
    body = {"carrier": carrier, "tracking_number": tracking}
    if lines is not None:
        body["lines"] = lines
    return await client.post(f"/v1/orders/{order['id']}/shipments", json=body, headers={**ADMIN, **headers})


async def _ship_movements(db) -> int:
    return await count_rows(db, StockMovement, StockMovement.kind == "ship")


async def test_our_shipment_first_then_the_platform_shipped_webhook_drops_on_hand_once(shop, client, db, runner):
    order = await _paid_order(shop, runner)
    assert await stock_of(client) == (100, 2)
    r = await _ship(client, order)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["carrier"] == "ZTO" and body["tracking_number"] == "ZT1000001"
    assert body["lines"] == [{"line_id": order["lines"][0]["id"], "quantity": 2}]
    assert await stock_of(client) == (98, 0)  # the goods left with the parcel, before any upload
    shop.market.ship(order["external_id"])  # the platform marks it shipped on its own
    await shop.deliver()
    await runner.run_until_idle()
    assert await stock_of(client) == (98, 0)
    assert await _ship_movements(db) == 1
    r = await client.get(f"/v1/orders/{order['id']}", headers=ADMIN)
    assert r.json()["status"] == "shipped"
    [shipment] = r.json()["shipments"]
    assert shipment["status"] == "uploaded" and shipment["attempts"] == 1


async def test_the_platform_shipped_webhook_first_then_our_shipment_drops_on_hand_once(shop, client, db, runner):
    order = await _paid_order(shop, runner)
    shop.market.ship(order["external_id"])
    await shop.deliver()
    await runner.run_until_idle()
    assert await stock_of(client) == (98, 0)
    r = await _ship(client, order)
    assert r.status_code == 202, r.text
    await runner.run_until_idle()
    await shop.deliver()
    await runner.run_until_idle()
    assert await stock_of(client) == (98, 0)
    assert await _ship_movements(db) == 1
    r = await client.get(f"/v1/shipments/{r.json()['id']}", headers=ADMIN)
    assert r.json()["status"] == "uploaded"
    assert [a["outcome"] for a in r.json()["attempt_history"]] == ["uploaded"]
    assert shop.market.get_order(order["external_id"])["shipments"][0]["tracking_number"] == "ZT1000001"


async def test_split_parcels_move_their_own_units_and_the_platform_marking_all_shipped_moves_nothing_more(
        shop, client, db, runner):
    order = await _paid_order(shop, runner, quantity=3)
    line_id = order["lines"][0]["id"]
    r = await _ship(client, order, "ZT1000001", lines=[{"line_id": line_id, "quantity": 1}])
    assert r.status_code == 202, r.text
    assert await stock_of(client) == (99, 2)
    await runner.run_until_idle()
    # A platform that marks the whole order shipped after the first parcel: the other units stay reserved.
    shop.market.ship(order["external_id"])
    await shop.deliver()
    await runner.run_until_idle()
    assert await stock_of(client) == (99, 2)
    r = await _ship(client, order, "ZT1000002", lines=[{"line_id": line_id, "quantity": 2}])
    assert r.status_code == 202, r.text
    await runner.run_until_idle()
    assert await stock_of(client) == (97, 0)
    assert await _ship_movements(db) == 2
    r = await client.get(f"/v1/orders/{order['id']}", headers=ADMIN)
    assert [(s["tracking_number"], s["status"]) for s in r.json()["shipments"]] == [
        ("ZT1000001", "uploaded"), ("ZT1000002", "uploaded")]
    assert [s["tracking_number"] for s in shop.market.get_order(order["external_id"])["shipments"]] == [
        "ZT1000001", "ZT1000002"]


async def _nothing_written(db) -> None:
    assert await count_rows(db, Shipment) == 0
    assert await count_rows(db, Job, Job.name == "shipment.upload") == 0
    assert await _ship_movements(db) == 0


async def test_a_shipment_for_a_cancelled_order_is_refused_and_nothing_is_queued(shop, client, db, runner):
    order = await _paid_order(shop, runner)
    shop.market.cancel(order["external_id"])
    await shop.deliver()
    await runner.run_until_idle()
    r = await _ship(client, order)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "cancelled" in r.json()["detail"]
    await _nothing_written(db)


async def test_a_shipment_with_an_unknown_carrier_is_refused_and_nothing_is_queued(shop, client, db, runner):
    order = await _paid_order(shop, runner)
    r = await _ship(client, order, carrier="NOPE-EXPRESS")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "unknown carrier" in r.json()["detail"]
    await _nothing_written(db)
    assert await stock_of(client) == (100, 2)


async def test_a_shipment_of_more_than_the_line_has_is_refused_and_nothing_is_queued(shop, client, db, runner):
    order = await _paid_order(shop, runner)
    line_id = order["lines"][0]["id"]
    r = await _ship(client, order, lines=[{"line_id": line_id, "quantity": 3}])
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "2 unit(s) left to ship, not 3" in r.json()["detail"]
    r = await _ship(client, order, lines=[{"line_id": line_id + 1000, "quantity": 1}])
    assert r.status_code == 422 and "has no line" in r.json()["detail"]
    await _nothing_written(db)
    # What one parcel took cannot be shipped again by the next.
    assert (await _ship(client, order, "ZT1", lines=[{"line_id": line_id, "quantity": 2}])).status_code == 202
    r = await _ship(client, order, "ZT2", lines=[{"line_id": line_id, "quantity": 1}])
    assert r.status_code == 422 and "0 unit(s) left" in r.json()["detail"]
    assert await count_rows(db, Shipment) == 1


async def test_the_same_idempotency_key_answers_the_first_shipment_and_a_repeated_tracking_number_conflicts(
        shop, client, db, runner):
    order = await _paid_order(shop, runner)
    line_id = order["lines"][0]["id"]
    lines = [{"line_id": line_id, "quantity": 1}]
    first = await _ship(client, order, lines=lines, **{"Idempotency-Key": "parcel-1"})
    again = await _ship(client, order, lines=lines, **{"Idempotency-Key": "parcel-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    r = await _ship(client, order, lines=lines)
    assert r.status_code == 409 and "already has shipment" in r.json()["detail"]
    assert await count_rows(db, Shipment) == 1
    assert await stock_of(client) == (99, 1)


async def test_a_failed_shipment_shows_both_numbers_and_is_retried_by_an_operator(shop, client, db, runner):
    order = await _paid_order(shop, runner)
    # Someone shipped it on the platform with another waybill.
    shop.market.upload_shipment(order["external_id"], "SF999", "SF")
    await shop.deliver()
    await runner.run_until_idle()
    r = await _ship(client, order, "ZT1000001")
    shipment_id = r.json()["id"]
    await runner.run_until_idle()
    r = await client.get("/v1/shipments", params={"status": "failed"}, headers=ADMIN)
    [failed] = r.json()["items"]
    assert failed["id"] == shipment_id and "SF999" in failed["error"] and "ZT1000001" in failed["error"]
    assert await stock_of(client) == (98, 0)  # the goods left all the same
    r = await client.post(f"/v1/shipments/{shipment_id}/retry", headers=ADMIN)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    await runner.run_until_idle()
    r = await client.get(f"/v1/shipments/{shipment_id}", headers=ADMIN)
    assert r.json()["status"] == "failed" and len(r.json()["attempt_history"]) == 2
    uploaded = await _ship(client, await _paid_order(shop, runner), "ZT1000002")
    await runner.run_until_idle()
    r = await client.post(f"/v1/shipments/{uploaded.json()['id']}/retry", headers=ADMIN)
    assert r.status_code == 409


async def test_to_ship_lists_paid_orders_not_fully_shipped_oldest_ship_by_first(shop, client, db, runner):
    first = await _paid_order(shop, runner, 1)
    second = await _paid_order(shop, runner, 2)
    third = await _paid_order(shop, runner, 1)
    now = datetime.now(timezone.utc)
    async with db.transaction() as session:
        for order_id, ship_by in ((first["id"], now + timedelta(hours=30)), (second["id"], now + timedelta(hours=2))):
            (await session.get(Order, order_id)).ship_by = ship_by
    await _ship(client, third)  # fully in a parcel: nothing left to ship
    await _ship(client, second, lines=[{"line_id": second["lines"][0]["id"], "quantity": 1}])
    r = await client.get("/v1/orders", params={"to_ship": "true", "limit": 1}, headers=ADMIN)
    seen = [o["id"] for o in r.json()["items"]]
    while r.json()["next_cursor"]:
        r = await client.get("/v1/orders", params={"to_ship": "true", "limit": 1, "cursor": r.json()["next_cursor"]},
                             headers=ADMIN)
        seen += [o["id"] for o in r.json()["items"]]
    assert seen == [second["id"], first["id"]]
    r = await client.get("/v1/orders", params={"to_ship": "false"}, headers=ADMIN)
    assert [o["id"] for o in r.json()["items"]] == [third["id"]]


async def test_carriers_are_built_in_and_an_operator_maps_them_to_platform_codes(client):
    r = await client.get("/v1/carriers", headers=ADMIN)
    assert r.status_code == 200
    by_code = {c["code"]: c for c in r.json()["items"]}
    assert {"SF", "ZTO", "YTO", "STO", "YUNDA", "JD", "EMS", "JTSD", "DBL"} <= set(by_code)
    assert by_code["ZTO"]["platforms"]["taobao"]["company"] == "ZTO"
    assert "pinduoduo" not in by_code["ZTO"]["platforms"]  # read from PDD's own list, not guessed
    r = await client.put("/v1/carriers", headers=ADMIN, json=[
        {"code": "zto", "platforms": {"pinduoduo": "115", "taobao": None}},
        {"code": "QINBA-POST", "name": "秦巴乡邮", "tracking_url": "https://track.example/{number}"}])
    assert r.status_code == 200, r.text
    by_code = {c["code"]: c for c in r.json()["items"]}
    assert by_code["ZTO"]["platforms"]["pinduoduo"] == {**by_code["ZTO"]["platforms"]["pinduoduo"],
                                                         "company": "115", "source": "operator"}
    assert "taobao" not in by_code["ZTO"]["platforms"]
    assert by_code["QINBA-POST"]["name"] == "秦巴乡邮" and not by_code["QINBA-POST"]["builtin"]
    r = await client.put("/v1/carriers", headers=ADMIN, json=[{"code": "NEW-ONE"}])
    assert r.status_code == 422 and "needs a name" in r.json()["detail"]
    r = await client.put("/v1/carriers", headers=ADMIN, json=[{"code": "ZTO", "platforms": {"jd-mall": "x"}}])
    assert r.status_code == 422 and "no platform jd-mall" in r.json()["detail"]
