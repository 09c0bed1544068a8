"""After-sales through the service: a Shopify refunds/create applies while Shopify is unreachable (its
order refresh is a job of its own), and a Pinduoduo after-sale gets its kind from the detail call in a
follow-up job, its money at once."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import respx
from sqlalchemy import select

from adapters.signing import sign_wrapped_md5, signatures_equal
from app.models import Job, OrderLine, Refund
from tests.helpers import ADMIN, create_sku, create_store, receive
from tests.shops import SECRET, make_jobs_due, shopify_headers, stock_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SHOP = "qinba-tea.myshopify.com"


async def test_a_shopify_refund_applies_while_shopify_is_unreachable(client, db, runner):
    """refunds/create carries the whole refund: its restock and amount land at once; refetching its order
    is a separate best-effort job that keeps retrying without holding anything up."""
    for code in ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"):
        await create_sku(client, code)
        await receive(client, code, 10)
    store = await create_store(client, "shopify", external_shop_id=SHOP, webhook_secret=SECRET,
                               credentials={"access_token": "shpat_test"}, settings={"poll_interval_s": 0})
    order = json.dumps(json.loads((FIXTURES / "shopify" / "order_rest_single_shopify_python_api.json").read_text())
                       ["order"]).encode()
    # Legacy shape: restock true and no restock_type, i.e. the 2 unfulfilled units go back; 209.00 paid back.
    refund = json.dumps(json.loads((FIXTURES / "shopify" / "refund_rest_single_shopify_python_api.json").read_text())
                        ["refund"]).encode()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        shopify = mock.route(host=SHOP).mock(side_effect=httpx.ConnectError("Shopify is unreachable"))
        r = await client.post(f"/webhooks/shopify/{store['id']}", content=order,
                              headers=shopify_headers(order, "orders/create"))
        assert r.json()["status"] == "accepted"
        await runner.run_until_idle()
        assert [await stock_of(client, c) for c in ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")] == [(10, 1)] * 3
        r = await client.post(f"/webhooks/shopify/{store['id']}", content=refund,
                              headers=shopify_headers(refund, "refunds/create"))
        assert r.json()["status"] == "accepted"
        await runner.run_until_idle()
        await make_jobs_due(db)
        await runner.run_until_idle()
    assert [await stock_of(client, c) for c in ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")] == [
        (10, 0), (10, 1), (10, 0)]
    r = await client.get("/v1/orders", params={"external_id": "450789469"}, headers=ADMIN)
    [got] = r.json()["items"]
    assert got["refunded_minor"] == 20900
    assert [(x["external_id"], x["amount_minor"]) for x in got["refunds"]] == [("509562969", 20900)]
    r = await client.get("/v1/inbox", params={"status": "pending"}, headers=ADMIN)
    assert r.json()["items"] == []  # nothing waits on Shopify
    assert shopify.called  # the order refresh tried, and keeps trying on its own
    async with db.read() as session:
        refresh = (await session.execute(select(Job).where(Job.name == "orders.refresh"))).scalar_one()
    assert refresh.payload == {"store_id": store["id"], "external_id": "450789469"}
    assert refresh.status == "queued" and "unreachable" in (refresh.last_error or "")


PDD_GATEWAY = "https://pdd.test/api/router"
PDD_CREDS = {"client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-123"}


class PddGateway:
    """The order, one after-sale list row and its detail; checks every request's sign."""

    def __init__(self, refund: str, detail: str) -> None:
        self.order = json.loads((FIXTURES / "pinduoduo" / "order-240601-100000000000001.json").read_text())
        self.refund = json.loads((FIXTURES / "pinduoduo" / refund).read_text())
        self.detail = json.loads((FIXTURES / "pinduoduo" / detail).read_text())
        self.detail_down = False
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        assert signatures_equal(sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"},
                                                 PDD_CREDS["client_secret"]), params.get("sign"))
        kind = params["type"]
        self.calls.append(kind)
        if kind == "pdd.order.number.list.increment.get":
            return httpx.Response(200, json={"order_sn_increment_get_response": {
                "order_sn_list": [self.order] if params["page"] == "1" else [], "total_count": 1, "has_next": False}})
        if kind == "pdd.refund.list.increment.get":
            return httpx.Response(200, json={"refund_increment_get_response": {
                "refund_list": [self.refund] if params["page"] == "1" else [], "total_count": 1}})
        if kind == "pdd.refund.information.get":
            if self.detail_down:
                return httpx.Response(502)
            return httpx.Response(200, json={"refund_information_get_response": self.detail})
        if kind == "pdd.goods.quantity.update":
            return httpx.Response(200, json={"goods_quantity_update_response": {"is_success": True}})
        return httpx.Response(200, json={"error_response": {"error_code": 10001, "error_msg": f"no fake for {kind}"}})


async def _resync(client, store_id: int, resource: str) -> None:
    r = await client.post("/v1/resyncs", headers=ADMIN, json={
        "store_id": store_id, "resource": resource, "since": "2024-06-01T16:00:00+08:00",
        "until": "2024-06-10T18:00:00+08:00"})
    assert r.status_code == 202, r.text


async def test_a_pinduoduo_exchange_waits_for_its_kind_then_reserves_its_replacement(client, db, runner):
    await create_sku(client, "QB-MAOJIAN-250G", "Qinba Maojian 250 g")
    await receive(client, "QB-MAOJIAN-250G", 10, "m-03")
    store = await create_store(client, "pinduoduo", external_shop_id="mall-1", credentials=PDD_CREDS,
                               settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
    gateway = PddGateway("refund-9100000003.json", "refund-information-9100000003.json")
    gateway.detail_down = True
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        await _resync(client, store["id"], "orders")
        await _resync(client, store["id"], "refunds")
        await runner.run_until_idle()
        assert await stock_of(client, "QB-MAOJIAN-250G") == (8, 0)
        # The after-sale is in, with its money; its kind (and so its replacement) waits for the detail call.
        r = await client.get("/v1/refunds", headers=ADMIN)
        [refund] = r.json()["items"]
        assert (refund["kind"], refund["kind_pending"], refund["amount_minor"]) == (None, True, 0)
        async with db.read() as session:
            detail = (await session.execute(select(Job).where(Job.name == "refunds.detail"))).scalar_one()
        assert detail.status == "queued" and detail.attempts == 1  # the platform failed; it retries
        gateway.detail_down = False
        await make_jobs_due(db)
        await runner.run_until_idle()
    assert gateway.calls.count("pdd.refund.information.get") >= 2  # refused (with in-call retries), then answered
    r = await client.get("/v1/refunds", headers=ADMIN)
    [refund] = r.json()["items"]
    assert (refund["kind"], refund["kind_pending"], refund["replacement_status"]) == ("exchange", False, "due")
    assert await stock_of(client, "QB-MAOJIAN-250G") == (8, 1)  # the replacement is reserved
    async with db.read() as session:
        [line] = (await session.execute(select(OrderLine).where(OrderLine.kind == "replacement"))).scalars().all()
        held = (await session.execute(select(Refund))).scalar_one()
    assert (line.replacement_of_refund_id, line.quantity, line.total_minor) == (held.id, 1, 0)
    r = await client.get(f"/v1/orders/{line.order_id}", headers=ADMIN)
    kinds = [(x["kind"], x["reserved"]) for x in r.json()["lines"]]
    assert kinds == [("sale", 0), ("replacement", 1)]
