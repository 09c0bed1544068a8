"""Douyin shipment upload against the signing fake gateway: /order/logisticsAdd for a whole order (read
first: it has no idempotency key), /order/logisticsAddMultiPack with ``request_id`` for split parcels, and
the read-back of /order/orderDetail after "already shipped" (60110, 70023).

The order is the hand-made fixture order-6920000000000000001.json (tests/fixtures/douyin/SOURCES.md); the
answers of the shipping calls are hand-made from the official SDK's request/response models and the error
tables of operations.md 1.3."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
import respx

from adapters.base import ShipmentLine, ShipmentUpload
from adapters.errors import AuthExpiredError, TransientError
from douyin_fakes import BASE_URL, fail, load, ok

ORDER_ID = "6920000000000000001"
LINES = (("6920000000000000011", 2), ("6920000000000000012", 1))
ALREADY_SHIPPED = (50002, "isv.business-failed:60110", "订单已发货，不允许再次执行发货")


class DouyinShop:
    """The order as Douyin holds it, changed by the shipping calls; ``request_id`` answers are remembered."""

    def __init__(self, gateway) -> None:
        self.order = copy.deepcopy(load("order-6920000000000000001.json"))
        self.order.update(order_status=2, logistics_info=[])
        self.by_request: dict[str, dict] = {}
        self.packs = 0
        gateway.on("order.orderDetail", lambda p: ok({"shop_order_detail": copy.deepcopy(self.order)}))
        gateway.on("order.logisticsAdd", self.add)
        gateway.on("order.logisticsAddMultiPack", self.multi_pack)

    def _ship(self, number: str, company: str, lines: list[tuple[str, int]]) -> None:
        self.packs += 1
        self.order["logistics_info"].append({"tracking_no": number, "company": company, "delivery_id": f"P{self.packs}",
                                             "product_info": [{"sku_order_id": i, "product_count": n} for i, n in lines]})
        shipped = {i for p in self.order["logistics_info"] for i in (x["sku_order_id"] for x in p["product_info"])}
        self.order["order_status"] = 3 if shipped >= {i for i, _ in LINES} else 101

    def add(self, params):
        assert set(params) == {"order_id", "company_code", "logistics_code"}
        if self.order["order_status"] != 2:
            return fail(*ALREADY_SHIPPED)
        self._ship(params["logistics_code"], params["company_code"], list(LINES))
        return ok({})

    def multi_pack(self, params):
        assert params["request_id"], "logisticsAddMultiPack needs request_id (50050)"
        if params["request_id"] in self.by_request:
            return self.by_request[params["request_id"]]  # idempotent: the first success again
        [pack] = params["pack_list"]
        lines = [(s["shipped_order_id"], s["shipped_num"]) for s in pack["shipped_order_info"]]
        self._ship(pack["logistics_code"], pack["company_code"], lines)
        answer = ok({"pack_list": [{"pack_id": f"P{self.packs}", "logistics_code": pack["logistics_code"],
                                    "shipped_order_info": pack["shipped_order_info"]}]})
        self.by_request[params["request_id"]] = answer
        return answer


@pytest.fixture
def shop(gateway) -> DouyinShop:
    return DouyinShop(gateway)


@pytest.fixture
def router(gateway):
    with respx.mock(assert_all_mocked=True, base_url=BASE_URL) as mock:
        mock.route(host="douyin-gateway.test").mock(side_effect=gateway)
        yield mock


def upload(number="ZT1000001", lines=LINES, *, whole=True, reference="coopsync-shipment-5", others=()):
    return ShipmentUpload(
        reference=reference, order_external_id=ORDER_ID, carrier="ZTO", company="zhongtong", tracking_number=number,
        lines=tuple(ShipmentLine(external_line_id=i, quantity=n, line_quantity=n) for i, n in lines),
        shipped_at=datetime(2024, 6, 1, tzinfo=timezone.utc), whole_order=whole, other_tracking_numbers=others)


async def test_a_whole_order_is_read_then_shipped_with_logistics_add(adapter, gateway, shop, router):
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", False)
    assert gateway.methods() == ["order.orderDetail", "order.logisticsAdd"]
    assert gateway.calls[1][1] == {"order_id": ORDER_ID, "company_code": "zhongtong", "logistics_code": "ZT1000001"}
    assert gateway.rejected == 0


async def test_a_lost_answer_then_the_retry_leaves_one_shipment_on_douyin(adapter, gateway, shop, router, sleeps):
    applied = shop.add

    def lost(params):  # shipped, but the gateway answers a service error
        applied(params)
        return fail(20000, "isp.service-error:10005", "服务繁忙")

    gateway.on("order.logisticsAdd", lost)
    with pytest.raises(TransientError):  # not repeated blind: logisticsAdd has no idempotency key
        await adapter.upload_shipment(upload())
    assert gateway.methods() == ["order.orderDetail", "order.logisticsAdd"] and sleeps == []
    gateway.calls.clear()
    result = await adapter.upload_shipment(upload())  # the job's retry reads the order first
    assert (result.status, result.already) == ("uploaded", True)
    assert gateway.methods() == ["order.orderDetail"] and len(shop.order["logistics_info"]) == 1


async def test_already_shipped_refused_by_douyin_is_judged_by_reading_the_order(adapter, gateway, shop, router):
    # Shipped between our read and our send (another attempt of ours whose answer was lost): 60110.
    def shipped_meanwhile(params):
        shop._ship("ZT1000001", "zhongtong", list(LINES))
        return fail(*ALREADY_SHIPPED)

    gateway.on("order.logisticsAdd", shipped_meanwhile)
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True)
    assert gateway.methods() == ["order.orderDetail", "order.logisticsAdd", "order.orderDetail"]


async def test_a_split_parcel_repeated_with_its_request_id_ships_once(adapter, gateway, shop, router):
    first = await adapter.upload_shipment(upload("ZT1000001", LINES[:1], whole=False))
    again = await adapter.upload_shipment(upload("ZT1000001", LINES[:1], whole=False))
    assert first.status == again.status == "uploaded" and first.platform_ref == again.platform_ref == "P1"
    assert gateway.methods() == ["order.logisticsAddMultiPack", "order.logisticsAddMultiPack"]
    request = gateway.calls[0][1]
    assert request["request_id"] == "coopsync-shipment-5"
    assert request["pack_list"] == [{"shipped_order_info": [{"shipped_order_id": LINES[0][0], "shipped_num": 2}],
                                     "logistics_code": "ZT1000001", "company_code": "zhongtong"}]
    second = await adapter.upload_shipment(upload("ZT1000002", LINES[1:], whole=False, reference="coopsync-shipment-6",
                                                  others=("ZT1000001",)))
    assert second.status == "uploaded" and shop.order["order_status"] == 3
    assert [p["tracking_no"] for p in shop.order["logistics_info"]] == ["ZT1000001", "ZT1000002"]


async def test_already_shipped_with_our_number_is_uploaded_without_a_send(adapter, gateway, shop, router):
    shop._ship("ZT1000001", "zhongtong", list(LINES))
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True) and gateway.methods() == ["order.orderDetail"]


async def test_already_shipped_with_another_number_fails_with_both_numbers(adapter, gateway, shop, router):
    shop._ship("SF1000000000001", "shunfeng", list(LINES[:1]))
    result = await adapter.upload_shipment(upload())
    assert result.status == "failed" and "SF1000000000001" in result.error and "ZT1000001" in result.error
    # A split parcel meets 60110 from the platform and is judged by reading the order back.
    gateway.on("order.logisticsAddMultiPack", lambda p: fail(*ALREADY_SHIPPED))
    result = await adapter.upload_shipment(upload("ZT1000009", LINES[:1], whole=False))
    assert result.status == "failed" and "SF1000000000001" in result.error


async def test_transient_errors_and_risk_review_are_left_to_the_job(adapter, gateway, shop, router, sleeps):
    gateway.on("order.logisticsAddMultiPack", lambda p: fail(20000, "isp.service-error:10009", "服务繁忙"))
    with pytest.raises(TransientError):
        await adapter.upload_shipment(upload(whole=False))
    assert len(sleeps) == 2  # retried in-call first
    gateway.on("order.logisticsAddMultiPack", lambda p: fail(50002, "isv.business-failed:60109", "风控审核中"))
    with pytest.raises(TransientError) as caught:
        await adapter.upload_shipment(upload(whole=False))
    assert caught.value.retry_after_s == 3600.0


async def test_an_expired_token_is_raised_for_the_job_to_wait(adapter, gateway, shop, router):
    gateway.on("order.orderDetail", lambda p: fail(40003, "isv.access-token-expired", "access_token已过期"))
    with pytest.raises(AuthExpiredError):
        await adapter.upload_shipment(upload())
    assert shop.order["logistics_info"] == []


async def test_the_company_list_gives_codes(adapter, gateway, router):
    gateway.on("order.logisticsCompanyList", lambda p: {**ok({}), "data": [
        {"id": 7, "name": "中通快递", "code": "zhongtong"}, {"id": 12, "name": "顺丰速运", "code": "shunfeng"}]})
    found = await adapter.fetch_carriers()
    assert [(c.company, c.name) for c in found] == [("zhongtong", "中通快递"), ("shunfeng", "顺丰速运")]


def test_ship_by_is_the_expected_ship_time_of_the_order_or_its_earliest_sku_order():
    from adapters.douyin.mapping import order_from_douyin

    raw = load("order-6920000000000000001.json")
    raw["exp_ship_time"] = 1700172800
    assert order_from_douyin(raw).ship_by == datetime.fromtimestamp(1700172800, tz=timezone.utc)
    raw["exp_ship_time"] = 0
    raw["sku_order_list"][0]["exp_ship_time"] = 1700259200
    raw["sku_order_list"][1]["exp_ship_time"] = 1700172900
    assert order_from_douyin(raw).ship_by == datetime.fromtimestamp(1700172900, tz=timezone.utc)
