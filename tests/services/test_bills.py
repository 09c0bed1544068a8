"""Bills through the service: Douyin's settlement rows pulled by a ``bills`` resync make the statement's net
what the platform paid; a Pinduoduo bill file uploaded twice makes one set of fees, a malformed one is a
422 naming line and column with nothing imported; the payout report names what differs; the scheduled
pull moves its cursor. Payloads: tests/fixtures (hand-made, see their SOURCES.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import respx
from sqlalchemy import select

from adapters.douyin.client import sign as douyin_sign
from adapters.douyin.mapping import order_from_douyin
from adapters.pinduoduo import mapping as pdd
from adapters.signing import sign_wrapped_md5, signatures_equal
from app.domain.reconcile import upsert_order
from app.models import BillEntry, BillImport, Store, SyncCursor
from app.services.bills import schedule_bill_pulls
from tests.helpers import ADMIN, count_rows, create_sku, create_store, receive

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DY_BASE = "https://douyin.test"
DY_CREDS = {"app_key": "1234567890123456789", "app_secret": "testsecret", "access_token": "dy-token"}
PDD_GATEWAY = "https://pdd.test/api/router"
PDD_CREDS = {"client_id": "coop-client", "client_secret": "coop-secret", "access_token": "token-123"}
BILL = (FIXTURES / "pinduoduo" / "bill-2024-06-03.csv").read_bytes()  # hand-made
CSV = {**ADMIN, "Content-Type": "text/csv"}


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


async def take_in(db, store_id: int, snapshot) -> None:
    async with db.transaction() as session:
        await upsert_order(session, await session.get(Store, store_id), snapshot, via="poll")


class DouyinSettlement:
    """The Douyin gateway's /order/getSettleBillDetailV3, every request's sign checked."""

    def __init__(self, answer: dict) -> None:
        self.answer = answer
        self.params: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        q = dict(request.url.params)
        expected = douyin_sign(DY_CREDS["app_key"], DY_CREDS["app_secret"], q["method"], request.content.decode(),
                               q["timestamp"], q["v"])
        if q.get("sign") != expected or q["method"] != "order.getSettleBillDetailV3":
            return httpx.Response(200, json={"code": 40003, "sub_code": "isv.signature-invalid", "msg": "签名无效"})
        self.params.append(json.loads(request.content))
        return httpx.Response(200, json={"code": 10000, "msg": "success", "data": self.answer})


async def test_douyin_settlement_rows_make_the_statement_net_what_the_platform_paid(client, db, runner):
    await create_sku(client, "FUNGUS-100G", "black fungus 100 g")
    await receive(client, "FUNGUS-100G", 1, member_id="m-01")
    await receive(client, "FUNGUS-100G", 5, member_id="m-02")
    store = await create_store(client, "douyin", external_shop_id="12345", credentials=DY_CREDS, settings={
        "base_url": DY_BASE, "poll_interval_s": 0, "return_window_days": 0})
    await take_in(db, store["id"], order_from_douyin(load("douyin/order-6920000000000000002.json")))
    r = await client.get("/v1/orders", params={"store_id": store["id"]}, headers=ADMIN)
    [order] = r.json()["items"]
    # Douyin reports fees: with no actual fee and no rate the order waits, and says so.
    assert (order["platform_fee_minor"], order["fee_source"], order["awaiting_fee"]) == (None, None, True)
    r = await client.post("/v1/settlements/run", headers=ADMIN)
    assert r.status_code == 200 and r.json()["items"] == []

    settled = load("douyin/settle-bill-6920000000000000002.json")
    gateway = DouyinSettlement(settled)
    r = await client.post("/v1/resyncs", headers=ADMIN, json={
        "store_id": store["id"], "resource": "bills", "since": "2023-11-25T00:00:00+08:00",
        "until": "2023-11-26T00:00:00+08:00"})
    assert r.status_code == 202, r.text
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host="douyin.test").mock(side_effect=gateway)
        await runner.run_until_idle()
    r = await client.get(f"/v1/resyncs/{r.json()['id']}", headers=ADMIN)
    assert r.json()["status"] == "succeeded" and r.json()["progress"]["created"] == 1, r.json()
    assert [(p["start_time"], p["end_time"]) for p in gateway.params] == [("2023-11-25 00:00:00", "2023-11-26 00:00:00")]

    r = await client.get(f"/v1/orders/{order['id']}", headers=ADMIN)
    assert (r.json()["platform_fee_minor"], r.json()["fee_source"], r.json()["subsidy_minor"]) == (599, "platform", 500)
    r = await client.post("/v1/settlements/run", headers=ADMIN)
    assert r.status_code == 201, r.text
    [statement] = r.json()["items"]
    paid = sum(row["settle_amount"] for row in settled["data"])
    assert statement["net_minor"] == paid == 3891  # what the platform paid, to the fen
    assert (statement["gross_minor"], statement["refunds_minor"], statement["platform_fees_minor"]) == (4490, 0, 599)
    assert (statement["subsidies_minor"], statement["platform_fees_actual_minor"],
            statement["platform_fees_estimated_minor"]) == (500, 599, 0)
    assert sum(s["net_minor"] for s in statement["member_shares"]) == paid
    assert {s["member_id"] for s in statement["member_shares"]} == {"m-01"}  # first in, first out
    [line] = statement["orders"]
    assert (line["kind"], line["fee_source"], line["subsidy_minor"]) == ("sale", "platform", 500)

    r = await client.get(f"/v1/stores/{store['id']}/payouts", params={"period": "2023-11"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["in_balance"] and report["timezone"] == "Asia/Shanghai"
    [payout] = report["orders"]
    assert (payout["paid_minor"], payout["computed_minor"], payout["differences"]) == (paid, paid, [])


async def pdd_store(client, db, **settings) -> dict:
    store = await create_store(client, "pinduoduo", external_shop_id="mall-1", credentials=PDD_CREDS,
                               settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0, **settings})
    received = {**load("pinduoduo/order-240601-100000000000001.json"), "order_status": 3,
                "receive_time": "2024-06-02 10:00:00", "updated_at": "2024-06-02 10:00:00"}
    await take_in(db, store["id"], pdd.map_order(received))
    return store


async def test_a_pinduoduo_bill_uploaded_twice_makes_one_set_of_fees(client, db):
    store = await pdd_store(client, db)
    url = f"/v1/stores/{store['id']}/bills"
    r = await client.post(url, params={"name": "bill-2024-06-03.csv"}, content=BILL, headers=CSV)
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["lines"], first["new_lines"], first["matched"], first["duplicate"]) == (6, 6, 4, False)
    assert sorted(str(l["order_external_id"]) for l in first["unmatched"]) == ["240699-100000000000009", "None"]
    r = await client.get("/v1/orders", params={"store_id": store["id"]}, headers=ADMIN)
    [order] = r.json()["items"]
    assert (order["platform_fee_minor"], order["fee_source"], order["subsidy_minor"]) == (635, "bill", 300)

    # The same file again: the first import's answer, nothing written.
    r = await client.post(url, content=BILL, headers=CSV)
    assert r.status_code == 200 and r.json()["duplicate"] and r.json()["id"] == first["id"]
    # The same bill saved again in GB18030 (another file): every line is held already.
    r = await client.post(url, content=BILL.decode().encode("gb18030"), headers=CSV)
    assert r.status_code == 201 and (r.json()["new_lines"], r.json()["duplicate_lines"]) == (0, 6)
    assert await count_rows(db, BillEntry) == 6
    r = await client.get(f"/v1/orders/{order['id']}", headers=ADMIN)
    assert (r.json()["platform_fee_minor"], r.json()["subsidy_minor"]) == (635, 300)
    r = await client.get(f"/v1/stores/{store['id']}/bill-lines", params={"unmatched": "true"}, headers=ADMIN)
    assert len(r.json()["items"]) == 2
    r = await client.get(url, headers=ADMIN)
    assert [b["new_lines"] for b in r.json()["items"]] == [0, 6]


async def test_a_malformed_bill_is_422_naming_line_and_column_and_nothing_is_imported(client, db):
    store = await pdd_store(client, db)
    bad = BILL.decode().replace("0.00,5.99,多多进宝佣金", "0.00,5.9.9,多多进宝佣金", 1).encode()
    r = await client.post(f"/v1/stores/{store['id']}/bills", content=bad, headers=CSV)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert (problem["line"], problem["column"]) == (5, "支出金额（-元）")
    assert "line 5" in problem["detail"] and "支出金额（-元）" in problem["detail"] and "nothing" in problem["detail"]
    assert await count_rows(db, BillEntry) == 0 and await count_rows(db, BillImport) == 0
    r = await client.get("/v1/orders", params={"store_id": store["id"]}, headers=ADMIN)
    assert r.json()["items"][0]["platform_fee_minor"] is None

    r = await client.post(f"/v1/stores/{store['id']}/bills", content="订单号,金额\n1,2\n".encode(), headers=CSV)
    assert r.status_code == 422 and (r.json()["line"], r.json()["column"]) == (1, "商户订单号")
    # A platform with no built-in mapping needs the store's own.
    sandbox = await create_store(client, "sandbox")
    r = await client.post(f"/v1/stores/{sandbox['id']}/bills", content=BILL, headers=CSV)
    assert r.status_code == 422 and "bill_columns" in r.json()["detail"]


async def test_the_payout_report_names_the_fee_difference_until_the_next_statement_adjusts_it(client, db):
    store = await pdd_store(client, db, fee_rate_bp=100, fee_wait_days=0, return_window_days=0)
    r = await client.post("/v1/settlements/run", headers=ADMIN)
    [first] = r.json()["items"]
    assert (first["platform_fees_minor"], first["platform_fees_estimated_minor"], first["subsidies_minor"]) == (
        60, 60, 300)  # 1 % of 59.90; the platform's part of the discount from the order itself
    r = await client.post(f"/v1/stores/{store['id']}/bills", content=BILL, headers=CSV)
    assert r.status_code == 201

    r = await client.get(f"/v1/stores/{store['id']}/payouts", params={"period": "2024-06"}, headers=ADMIN)
    report = r.json()
    assert not report["in_balance"]
    [payout] = report["orders"]
    assert [(d["kind"], d["platform_minor"], d["statements_minor"]) for d in payout["differences"]] == [
        ("fee", 635, 60)]
    assert (payout["paid_minor"], payout["computed_minor"], payout["difference_minor"]) == (5655, 6230, -575)
    assert sorted(str(l["order_external_id"]) for l in report["unmatched"]) == ["240699-100000000000009", "None"]

    r = await client.post("/v1/settlements/run", headers=ADMIN)
    [second] = r.json()["items"]
    [adjustment] = second["orders"]
    assert (adjustment["kind"], adjustment["platform_fees_minor"], adjustment["net_minor"]) == ("fee_adjustment", 575, -575)
    r = await client.get(f"/v1/stores/{store['id']}/payouts", params={"period": "2024-06"}, headers=ADMIN)
    [payout] = r.json()["orders"]
    assert payout["differences"] == [] and payout["paid_minor"] == payout["computed_minor"] == 5655
    r = await client.get(f"/v1/stores/{store['id']}/payouts", params={"period": "2024-13"}, headers=ADMIN)
    assert r.status_code == 422


async def test_bills_resyncs_need_a_platform_that_has_them(client):
    store = await create_store(client, "sandbox")
    r = await client.post("/v1/resyncs", headers=ADMIN, json={
        "store_id": store["id"], "resource": "bills", "since": "2024-06-01T00:00:00Z", "until": "2024-06-02T00:00:00Z"})
    assert r.status_code == 422 and "cannot resync bills" in r.json()["detail"]


async def test_the_scheduled_pull_reads_a_day_ago_and_moves_its_cursor(client, db, runner, settings):
    await create_store(client, "pinduoduo", external_shop_id="mall-1", credentials=PDD_CREDS,
                       settings={"base_url": PDD_GATEWAY, "poll_interval_s": 300})
    now = datetime.now(timezone.utc)
    async with db.transaction() as session:
        await schedule_bill_pulls(session, now, settings)
    asked: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        assert signatures_equal(sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"},
                                                 PDD_CREDS["client_secret"]), params["sign"])
        asked.append(params["bill_date"])
        return httpx.Response(200, json={"finance_balance_daily_bill_url_get_response": {
            "download_url": f"https://files.pdd.test/{params['bill_date']}.csv"}})

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        mock.get(url__startswith="https://files.pdd.test/").respond(200, content=BILL)
        await runner.run_until_idle()
    assert asked  # each Beijing day of the last three whose bill is complete
    assert await count_rows(db, BillEntry) == 6  # the same file every day: its lines once
    async with db.read() as session:
        cursor = (await session.execute(select(SyncCursor).where(SyncCursor.stream == "bills"))).scalar_one()
    assert cursor.high_water is not None and cursor.last_error is None
    async with db.transaction() as session:  # pulled just now: nothing queued again
        await schedule_bill_pulls(session, now, settings)
    with respx.mock(assert_all_mocked=True):
        assert await runner.run_until_idle() == 0
