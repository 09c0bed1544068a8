"""Chinese marketplaces end to end through the service, against fake gateways that enforce the real
signing: an operator adds a Pinduoduo store, binds its skus, sees orders and refunds arrive and its
stock pushed; an expired token shows on the store; a Douyin push fetches the order it names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import respx
from sqlalchemy import select

from adapters.douyin.client import sign as douyin_sign
from adapters.signing import sign_wrapped_md5, signatures_equal
from app.models import Listing
from tests.helpers import ADMIN, create_sku, create_store, receive
from tests.shops import stock_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PDD_GATEWAY = "https://pdd.test/api/router"
PDD_CREDS = {"client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-123"}


def _pdd_error(code: int, msg: str, sub_code: str = "") -> dict:
    return {"error_response": {"error_code": code, "error_msg": msg, "sub_code": sub_code, "request_id": "r"}}


class PddGateway:
    """Checks the MD5 sign of every request (secret on both ends) and answers like PDD."""

    def __init__(self) -> None:
        self.orders = [json.loads((FIXTURES / "pinduoduo" / name).read_text()) for name in
                       ("order-240601-100000000000001.json", "order-240602-100000000000002.json")]
        self.refunds = [json.loads((FIXTURES / "pinduoduo" / "refund-9100000001.json").read_text())]
        self.refund_info = json.loads((FIXTURES / "pinduoduo" / "refund-information-9100000001.json").read_text())
        self.stock_updates: list[tuple[str, str, int]] = []
        self.bad_signs = 0
        self.token_expired = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if not signatures_equal(sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"},
                                                 PDD_CREDS["client_secret"]), params.get("sign")):
            self.bad_signs += 1
            return httpx.Response(200, json=_pdd_error(10016, "签名错误", "sign_error"))
        if self.token_expired:
            return httpx.Response(200, json=_pdd_error(10019, "access_token已过期", "access_token_invalid"))
        kind = params["type"]
        if kind == "pdd.order.number.list.increment.get":
            start, end = int(params["start_updated_at"]), int(params["end_updated_at"])
            from adapters.units import from_beijing

            hits = [o for o in self.orders if start <= from_beijing(o["updated_at"]).timestamp() <= end]
            return httpx.Response(200, json={"order_sn_increment_get_response": {
                "order_sn_list": hits if params["page"] == "1" else [], "total_count": len(hits), "has_next": False}})
        if kind == "pdd.order.information.get":
            order = next(o for o in self.orders if o["order_sn"] == params["order_sn"])
            return httpx.Response(200, json={"order_info_get_response": {"order_info": order}})
        if kind == "pdd.refund.list.increment.get":
            return httpx.Response(200, json={"refund_increment_get_response": {
                "refund_list": self.refunds if params["page"] == "1" else [], "total_count": len(self.refunds)}})
        if kind == "pdd.refund.information.get":
            return httpx.Response(200, json={"refund_information_get_response": self.refund_info})
        if kind == "pdd.goods.quantity.update":
            # update_type 1 sets the figure, 2 adds to it (issue 17: changes after the first go out as deltas).
            before = {sku: qty for _, sku, qty in self.stock_updates}.get(params["sku_id"], 0)
            quantity = int(params["quantity"]) + (before if params["update_type"] == "2" else 0)
            assert params["update_type"] in ("1", "2")
            self.stock_updates.append((params["goods_id"], params["sku_id"], quantity))
            return httpx.Response(200, json={"goods_quantity_update_response": {"is_success": True}})
        return httpx.Response(200, json=_pdd_error(10001, f"no fake for {kind}"))


async def _resync(client, store_id, resource, since="2024-06-01T00:00:00+08:00", until="2024-06-04T00:00:00+08:00"):
    r = await client.post("/v1/resyncs", json={"store_id": store_id, "resource": resource, "since": since,
                                               "until": until}, headers=ADMIN)
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def test_operator_adds_a_pinduoduo_store_binds_skus_and_sees_orders_refunds_and_stock(client, runner):
    await create_sku(client, "QINBA-MAOJIAN", "Qinba Maojian green tea 250 g")
    await create_sku(client, "QINBA-HONEY", "Qinba wild honey")
    await receive(client, "QINBA-MAOJIAN", 50, "m-03")
    await receive(client, "QINBA-HONEY", 20, "m-04")
    store = await create_store(client, "pinduoduo", name="秦巴茶叶拼多多店", external_shop_id="mall-1",
                               credentials=PDD_CREDS, settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
    r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN, json=[
        {"external_sku_key": "1200000000001", "sku": "QINBA-MAOJIAN",
         "listing_ref": {"goods_id": "388000000001", "sku_id": "1200000000001"}},
        {"external_sku_key": "1200000000002", "sku": "QINBA-HONEY",
         "listing_ref": {"goods_id": "388000000002", "sku_id": "1200000000002"}}])
    assert r.status_code == 200
    gateway = PddGateway()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        orders_job = await _resync(client, store["id"], "orders")
        refunds_job = await _resync(client, store["id"], "refunds")
        await runner.run_until_idle()
    assert gateway.bad_signs == 0
    for job in (orders_job, refunds_job):
        r = await client.get(f"/v1/resyncs/{job}", headers=ADMIN)
        assert r.json()["status"] == "succeeded", r.json()
        assert r.json()["progress"]["windows"] == 3 * 48  # three days in PDD's 30-minute windows
    r = await client.get("/v1/orders", params={"store_id": store["id"]}, headers=ADMIN)
    by_id = {o["external_id"]: o for o in r.json()["items"]}
    shipped = by_id["240601-100000000000001"]
    assert (shipped["status"], shipped["total_minor"], shipped["currency"]) == ("shipped", 5990, "CNY")
    assert shipped["lines"][0]["sku"] == "QINBA-MAOJIAN"
    assert by_id["240602-100000000000002"]["status"] == "cancelled"
    r = await client.get("/v1/refunds", headers=ADMIN)
    [refund] = r.json()["items"]
    assert (refund["external_id"], refund["status"], refund["amount_minor"]) == ("9100000001", "succeeded", 19900)
    assert await stock_of(client, "QINBA-MAOJIAN") == (48, 0)
    assert await stock_of(client, "QINBA-HONEY") == (20, 0)
    # Each binding and each change queued a push; the last figure each listing received is its available stock.
    pushed = {sku_id: qty for _, sku_id, qty in gateway.stock_updates}
    # The 2 units the shop sold itself were taken off its count by PDD: nothing is pushed for them
    # (a delta would keep them anyway), so the shop shows 50 - 2 = 48, the available stock.
    assert pushed == {"1200000000001": 50, "1200000000002": 20}
    r = await client.get("/v1/stock/QINBA-MAOJIAN", headers=ADMIN)
    assert r.json()["listings"][0]["pushed_quantity"] == 50  # less the 2 sold since: 48 on the shop


async def test_an_expired_pinduoduo_token_shows_on_the_store(client, runner):
    store = await create_store(client, "pinduoduo", external_shop_id="mall-1", credentials=PDD_CREDS,
                               settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
    gateway = PddGateway()
    gateway.token_expired = True
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        job = await _resync(client, store["id"], "orders")
        await runner.run_until_idle()
    r = await client.get(f"/v1/resyncs/{job}", headers=ADMIN)
    # No refresh token to renew it with: the resync waits for a human, it does not fail.
    assert r.json()["status"] == "running" and "authorised again" in r.json()["error"]
    r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
    assert r.json()["auth_status"] == "expired" and r.json()["auth"]["status"] == "expired"
    assert "authorise the store again" in r.json()["auth"]["error"]


DY_BASE = "https://douyin.test"
DY_CREDS = {"app_key": "1234567890123456789", "app_secret": "testsecret", "access_token": "dy-token"}


async def test_douyin_push_is_verified_answered_and_fetches_the_order(client, db, runner):
    await create_sku(client, "QINBA-FUNGUS", "black fungus")
    await receive(client, "QINBA-FUNGUS", 30)
    store = await create_store(client, "douyin", external_shop_id="12345", credentials=DY_CREDS,
                               webhook_secret="testsecret", settings={"base_url": DY_BASE, "poll_interval_s": 0})
    detail = json.loads((FIXTURES / "douyin" / "order-6920000000000000001.json").read_text())
    body = json.dumps([{"tag": "101", "msg_id": "m-1", "data": json.dumps({"p_id": int(detail["order_id"]),
                                                                             "shop_id": 12345})}]).encode()
    sign = hashlib.md5(DY_CREDS["app_key"].encode() + body + DY_CREDS["app_secret"].encode()).hexdigest()
    headers = {"app-id": DY_CREDS["app_key"], "event-sign": sign, "Content-Type": "application/json"}
    r = await client.post(f"/webhooks/douyin/{store['id']}", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"code": 0, "msg": "success"}
    r = await client.post(f"/webhooks/douyin/{store['id']}", content=body, headers={**headers, "event-sign": "0" * 32})
    assert r.status_code == 401
    calls = []

    def gateway(request: httpx.Request) -> httpx.Response:
        q = dict(request.url.params)
        expected = douyin_sign(DY_CREDS["app_key"], DY_CREDS["app_secret"], q["method"], request.content.decode(),
                               q["timestamp"], q["v"])
        if q.get("sign") != expected:
            return httpx.Response(200, json={"code": 40003, "sub_code": "isv.signature-invalid", "msg": "签名无效"})
        calls.append(q["method"])
        return httpx.Response(200, json={"code": 10000, "msg": "success", "data": {"shop_order_detail": detail}})

    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host="douyin.test").mock(side_effect=gateway)
        await runner.run_until_idle()
    assert calls == ["order.orderDetail"]
    r = await client.get("/v1/orders", params={"store_id": store["id"]}, headers=ADMIN)
    [order] = r.json()["items"]
    assert order["external_id"] == detail["order_id"] and order["total_minor"] == detail["order_amount"]
    async with db.read() as session:
        keys = set((await session.execute(select(Listing.external_sku_key))).scalars())
    assert keys  # the lines' listings are known, ready to bind


async def test_a_douyin_notice_for_an_order_not_visible_yet_waits_then_fails_replayable(client, db, runner):
    from sqlalchemy import text

    from app.models import InboxItem, Job
    from tests.shops import make_jobs_due

    store = await create_store(client, "douyin", external_shop_id="12345", credentials=DY_CREDS,
                               webhook_secret="testsecret", settings={"base_url": DY_BASE, "poll_interval_s": 0})
    body = json.dumps([{"tag": "101", "msg_id": "m-9", "data": json.dumps({"p_id": 42, "shop_id": 12345})}]).encode()
    sign = hashlib.md5(DY_CREDS["app_key"].encode() + body + DY_CREDS["app_secret"].encode()).hexdigest()
    r = await client.post(f"/webhooks/douyin/{store['id']}", content=body,
                          headers={"app-id": DY_CREDS["app_key"], "event-sign": sign})
    assert r.status_code == 200

    def empty_detail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 10000, "msg": "success", "data": {}})

    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host="douyin.test").mock(side_effect=empty_detail)
        await runner.run_until_idle()
        async with db.read() as session:
            row = (await session.execute(select(InboxItem))).scalar_one()
            job = (await session.execute(select(Job).where(Job.name == "inbox.apply"))).scalar_one()
        assert row.status == "pending" and job.status == "queued" and "cannot show order 42" in job.last_error
        async with db.transaction() as session:  # an hour and more later, still nothing to see
            await session.execute(text("UPDATE job SET created_at = :t"),
                                  {"t": "2020-01-01 00:00:00" if db.engine.dialect.name == "sqlite"
                                   else __import__("datetime").datetime(2020, 1, 1, tzinfo=__import__("datetime").timezone.utc)})
        await make_jobs_due(db)
        await runner.run_until_idle()
    r = await client.get("/v1/inbox", params={"status": "failed"}, headers=ADMIN)
    [failed] = r.json()["items"]
    assert "gave up waiting" in failed["error"]
