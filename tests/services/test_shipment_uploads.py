"""The shipment.upload job against each platform: an expired token parks the job (uncounted, the shipment stays
pending) until the store is authorised again; a Pinduoduo parcel reads the courier list on demand, waits for
re-authorisation and is uploaded once the store is connected again; retries use up their budget into dead."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from sqlalchemy import select

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus
from app.domain.reconcile import upsert_order
from app.models import Job, Shipment, Store
from app.services import shipments
from tests.helpers import ADMIN, create_sku, create_store, receive
from tests.shops import make_jobs_due, stock_of

PLATFORMS = {
    # platform: (credentials, settings, host, the platform's own "token expired" answer)
    "pinduoduo": ({"client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-old"},
                  {"base_url": "https://pdd.test/api/router"}, "pdd.test",
                  httpx.Response(200, json={"error_response": {"error_code": 10019, "error_msg": "access_token已过期",
                                                               "sub_code": "access_token_invalid"}})),
    "taobao": ({"app_key": "12345678", "app_secret": "top-secret", "session": "session-old"},
               {"base_url": "https://top.test/router/rest"}, "top.test",
               httpx.Response(200, json={"error_response": {"code": 27, "msg": "Invalid session",
                                                            "sub_code": "invalid-sessionkey"}})),
    "douyin": ({"app_key": "1234567890123456789", "app_secret": "testsecret", "access_token": "dy-old"},
               {"base_url": "https://douyin.test"}, "douyin.test",
               httpx.Response(200, json={"code": 40003, "msg": "access_token已过期",
                                         "sub_code": "isv.access-token-expired", "data": {}})),
    "shopify": ({"access_token": "shpat_old"}, {"base_url": "https://qinba-tea.myshopify.com"},
                "qinba-tea.myshopify.com",
                httpx.Response(401, json={"errors": "[API] Invalid API key or access token (unrecognized login or "
                                                    "wrong password)"})),
    "woocommerce": ({"consumer_key": "ck_old", "consumer_secret": "cs_old"}, {"base_url": "https://shop.example.test"},
                    "shop.example.test",
                    httpx.Response(401, json={"code": "woocommerce_rest_authentication_error",
                                              "message": "Invalid signature - provided signature does not match.",
                                              "data": {"status": 401}})),
}


async def _store_with_order(client, db, platform: str) -> tuple[dict, dict]:
    """A store of ``platform`` and one paid order of two units, taken in as a poll would."""
    credentials, settings, _, _ = PLATFORMS[platform]
    await create_sku(client, "GYNO-TEA-250G")
    await receive(client, "GYNO-TEA-250G", 10, "m-01")
    store = await create_store(client, platform, external_shop_id="qinba-tea.myshopify.com"
                               if platform == "shopify" else "12345", credentials=credentials,
                               settings={**settings, "poll_interval_s": 0})
    now = datetime(2024, 6, 1, 2, tzinfo=timezone.utc)
    snapshot = OrderSnapshot(platform=platform, external_id="240601-100000000000001", status=OrderStatus.PAID,
                             currency="CNY", total_minor=5990, updated_at=now, paid_at=now, lines=[
                                 OrderLineSnapshot(external_line_id="1200000000001", external_sku_key="1200000000001",
                                                   merchant_sku="GYNO-TEA-250G", quantity=2, unit_price_minor=2995,
                                                   total_minor=5990)])
    async with db.transaction() as session:
        result = await upsert_order(session, await session.get(Store, store["id"]), snapshot, via="poll")
    r = await client.get(f"/v1/orders/{result.order_id}", headers=ADMIN)
    return store, r.json()


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
async def test_an_expired_token_parks_the_upload_uncounted_until_the_store_is_authorised(platform, client, db, runner):
    store, order = await _store_with_order(client, db, platform)
    r = await client.put("/v1/carriers", headers=ADMIN, json=[{"code": "ZTO", "platforms": {platform: "ZTO-CODE"}}])
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/orders/{order['id']}/shipments", headers=ADMIN,
                          json={"carrier": "ZTO", "tracking_number": "ZT1000001"})
    assert r.status_code == 202, r.text
    shipment_id = r.json()["id"]
    assert await stock_of(client) == (8, 0)
    host, answer = PLATFORMS[platform][2], PLATFORMS[platform][3]
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host=host).mock(return_value=answer)
        await runner.run_until_idle()
        await make_jobs_due(db)
        await runner.run_until_idle()  # still waiting: the store was not authorised meanwhile
    async with db.read() as session:
        job = (await session.execute(select(Job).where(Job.name == "shipment.upload"))).scalar_one()
        shipment = await session.get(Shipment, shipment_id)
        stored = await session.get(Store, store["id"])
    assert job.status == "queued" and job.waiting_for == f"store-auth:{store['id']}" and job.attempts == 0
    assert (shipment.status, shipment.attempts) == ("pending", 0)
    assert "authorised again" in shipment.error
    assert stored.auth_status in ("expired", "revoked")


PDD_GATEWAY = "https://pdd.test/api/router"


class PddWarehouseGateway:
    """PDD with one order awaiting shipment, its courier list, and a token that can be expired."""

    def __init__(self) -> None:
        self.token = "token-new"
        self.order = {"order_sn": "240601-100000000000001", "order_status": 1, "confirm_status": 1,
                      "refund_status": 1, "tracking_number": "", "logistics_id": 0}
        self.calls: list[str] = []
        self.sends: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        self.calls.append(params["type"])
        if params["access_token"] != self.token:
            return httpx.Response(200, json={"error_response": {"error_code": 10019, "error_msg": "access_token已过期"}})
        if params["type"] == "pdd.logistics.companies.get":
            return httpx.Response(200, json={"logistics_companies_get_response": {"logistics_companies": [
                {"id": 44, "logistics_company": "顺丰速运", "code": "SF", "available": 1},
                {"id": 115, "logistics_company": "中通快递", "code": "ZTO", "available": 1}]}})
        if params["type"] == "pdd.order.information.get":
            return httpx.Response(200, json={"order_info_get_response": {"order_info": self.order}})
        if params["type"] == "pdd.logistics.online.send":
            self.sends.append(params)
            self.order.update(order_status=2, tracking_number=params["tracking_number"],
                              logistics_id=int(params["logistics_id"]))
            return httpx.Response(200, json={"logistics_online_send_response": {"is_success": True}})
        raise AssertionError(params["type"])


async def test_a_pdd_parcel_reads_the_courier_list_waits_for_authorisation_then_uploads(client, db, runner):
    store, order = await _store_with_order(client, db, "pinduoduo")
    gateway = PddWarehouseGateway()
    r = await client.post(f"/v1/orders/{order['id']}/shipments", headers=ADMIN,
                          json={"carrier": "zto", "tracking_number": "ZT1000001"})
    shipment_id = r.json()["id"]
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        await runner.run_until_idle()
        assert gateway.calls == ["pdd.logistics.companies.get"] and gateway.sends == []
        # The shop is authorised again: new credentials wake the parked upload.
        r = await client.patch(f"/v1/stores/{store['id']}", headers=ADMIN, json={"credentials": {
            "client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-new"}})
        assert r.status_code == 200, r.text
        await runner.run_until_idle()
    assert [(s["logistics_id"], s["tracking_number"]) for s in gateway.sends] == [("115", "ZT1000001")]
    r = await client.get(f"/v1/shipments/{shipment_id}", headers=ADMIN)
    body = r.json()
    assert (body["status"], body["attempts"], body["platform_ref"]) == ("uploaded", 1, "ZT1000001")
    r = await client.get("/v1/carriers", headers=ADMIN)
    zto = next(c for c in r.json()["items"] if c["code"] == "ZTO")
    assert zto["platforms"]["pinduoduo"] == {**zto["platforms"]["pinduoduo"], "company": "115",
                                             "company_name": "中通快递", "source": "platform"}


async def test_transient_failures_back_off_and_end_dead_after_the_budget(client, db, runner, monkeypatch):
    monkeypatch.setattr(shipments, "MAX_UPLOAD_ATTEMPTS", 3)
    store, order = await _store_with_order(client, db, "pinduoduo")
    await client.put("/v1/carriers", headers=ADMIN, json=[{"code": "ZTO", "platforms": {"pinduoduo": "115"}}])
    await client.patch(f"/v1/stores/{store['id']}", headers=ADMIN, json={"credentials": {
        "client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-new"}})
    r = await client.post(f"/v1/orders/{order['id']}/shipments", headers=ADMIN,
                          json={"carrier": "ZTO", "tracking_number": "ZT1000001"})
    shipment_id = r.json()["id"]
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(return_value=httpx.Response(503, text="busy"))
        for _ in range(5):
            await make_jobs_due(db)
            await runner.run_until_idle()
    r = await client.get(f"/v1/shipments/{shipment_id}", headers=ADMIN)
    body = r.json()
    assert (body["status"], body["attempts"]) == ("dead", 3) and "gave up after 3 attempts" in body["error"]
    assert [a["outcome"] for a in body["attempt_history"]] == ["retry", "retry", "dead"]
    r = await client.get("/v1/shipments", params={"status": "dead"}, headers=ADMIN)
    assert [s["id"] for s in r.json()["items"]] == [shipment_id]


async def test_a_pdd_exchange_replacement_ships_through_the_after_sale_and_moves_its_stock_once(client, db, runner):
    from app.domain.reconcile import apply_stock_effects
    from app.models import Order, OrderLine, Refund

    store, order = await _store_with_order(client, db, "pinduoduo")
    await client.put("/v1/carriers", headers=ADMIN, json=[{"code": "ZTO", "platforms": {"pinduoduo": "115"}}])
    await client.patch(f"/v1/stores/{store['id']}", headers=ADMIN, json={"credentials": {
        "client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-new"}})
    assert (await client.post(f"/v1/orders/{order['id']}/shipments", headers=ADMIN, json={
        "carrier": "ZTO", "tracking_number": "ZT1000001",
        "lines": [{"line_id": order["lines"][0]["id"], "quantity": 1}]})).status_code == 202
    # The buyer asked for an exchange of one unit; the after-sale's replacement line is due (as the
    # after-sales flow writes it: kind "replacement", no money).
    now = datetime(2024, 6, 5, tzinfo=timezone.utc)
    async with db.transaction() as session:
        held = await session.get(Order, order["id"], with_for_update=True)
        refund = Refund(store_id=store["id"], order_id=held.id, external_id="9100000003",
                        order_external_id=held.external_id, status="open", currency="CNY", amount_minor=0,
                        platform_updated_at=now, kind="exchange", replacement_status="due")
        session.add(refund)
        await session.flush()
        sold = (await session.execute(select(OrderLine).where(OrderLine.order_id == held.id))).scalar_one()
        session.add(OrderLine(order_id=held.id, line_no=2, kind="replacement", replacement_of_refund_id=refund.id,
                              replacement_of_line_id=sold.id, external_line_id=f"replacement:9100000003:{sold.external_line_id}",
                              external_sku_key=sold.external_sku_key, merchant_sku=sold.merchant_sku, sku_id=sold.sku_id,
                              quantity=1, unit_price_minor=0, discount_minor=0, total_minor=0))
        await session.flush()
        await apply_stock_effects(session, held)
    assert await stock_of(client) == (9, 2)  # one unit in the first parcel; one still due; the replacement
    r = await client.get(f"/v1/orders/{order['id']}", headers=ADMIN)
    sale, replacement = r.json()["lines"]
    r = await client.post(f"/v1/orders/{order['id']}/shipments", headers=ADMIN, json={
        "carrier": "ZTO", "tracking_number": "ZT2000001",
        "lines": [{"line_id": replacement["id"], "quantity": 1}, {"line_id": sale["id"], "quantity": 1}]})
    assert r.status_code == 422 and "parcel of its own" in r.json()["detail"]
    r = await client.post(f"/v1/orders/{order['id']}/shipments", headers=ADMIN, json={
        "carrier": "ZTO", "tracking_number": "ZT2000001", "lines": [{"line_id": replacement["id"], "quantity": 1}]})
    assert r.status_code == 202, r.text
    assert await stock_of(client) == (8, 1)
    exchanged: list[dict] = []
    gateway = PddWarehouseGateway()

    def pdd(request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if params["type"] == "pdd.refund.information.get":
            shown = {"merchant_exchange_trunk_number": exchanged[-1]["tracking_number"]} if exchanged else {}
            return httpx.Response(200, json={"refund_information_get_response": {
                "id": 9100000003, "after_sales_type": 3, "exchange_shipping_detail": shown}})
        if params["type"] == "pdd.refund.exchange.shipping":
            exchanged.append(json.loads(params["request"]))
            return httpx.Response(200, json={"response": {"result": {"succ": True, "message": ""}}})
        return gateway(request)

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=pdd)
        await runner.run_until_idle()
    assert exchanged == [{"after_sales_id": "9100000003", "order_sn": "240601-100000000000001", "shipping_id": 115,
                          "shipping_name": "中通快递", "tracking_number": "ZT2000001"}]
    r = await client.get("/v1/shipments", params={"order_id": order["id"]}, headers=ADMIN)
    assert [(s["tracking_number"], s["status"]) for s in r.json()["items"]] == [
        ("ZT1000001", "uploaded"), ("ZT2000001", "uploaded")]
    assert await stock_of(client) == (8, 1)
