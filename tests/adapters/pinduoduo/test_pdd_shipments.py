"""PDD shipment upload against the signing fake gateway: pdd.logistics.online.send for the main waybill,
pdd.order.upload.extra.logistics for further parcels, pdd.refund.exchange.shipping for a replacement, and
the read-back of pdd.order.information.get that makes a retry harmless.

Payloads are hand-made from the documented fields (operations.md 1.1, 3.1; lywzx/pdd-node-sdk models):
no captured PDD answer exists. PDD documents no "already shipped" code; the fake refuses a second send
with a business code (54001) of the non-retryable range, which is all the adapter may rely on."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from adapters.base import ShipmentLine, ShipmentUpload
from adapters.errors import AuthExpiredError, TransientError
from pdd_fakes import error, load

ORDER_SN = "240601-100000000000001"
ALREADY_SHIPPED = 54001  # hand-made: PDD's own code is not documented (operations.md 1.1)


class PddShop:
    """The order's shipping state on the fake gateway, changed by the calls that ship it."""

    def __init__(self, fake) -> None:
        self.order = {**load("order-240601-100000000000001.json"), "order_status": 1, "tracking_number": "",
                      "logistics_id": 0}
        self.sends: list[dict] = []  # online.send calls that shipped the order
        self.extras: list[dict] = []
        self.exchange: dict = {}
        self.lose_answers = 0  # the next n sends apply, but their answer is lost (503)
        fake.on("pdd.order.information.get", self.information)
        fake.on("pdd.logistics.online.send", self.online_send)
        fake.on("pdd.order.upload.extra.logistics", self.extra)
        fake.on("pdd.refund.exchange.shipping", self.exchange_shipping)
        fake.on("pdd.refund.information.get", lambda p: {"refund_information_get_response": {
            "id": p["after_sales_id"], "order_sn": p["order_sn"], "after_sales_type": 3,
            "exchange_shipping_detail": dict(self.exchange)}})

    def information(self, params):
        return {"order_info_get_response": {"order_info": dict(self.order)}}

    def online_send(self, params):
        for name in ("order_sn", "logistics_id", "tracking_number"):
            assert params.get(name), f"pdd.logistics.online.send without {name}"
        if self.order["order_status"] != 1:
            return error(ALREADY_SHIPPED, "订单状态不正确，无法发货")
        self.order.update(order_status=2, tracking_number=params["tracking_number"],
                          logistics_id=int(params["logistics_id"]))
        self.sends.append(params)
        if self.lose_answers:
            self.lose_answers -= 1
            return httpx.Response(503, text="upstream timed out")
        return {"logistics_online_send_response": {"is_success": True}}

    def extra(self, params):
        import json

        assert self.order["order_status"] == 2, "extra waybills only on a shipped order"
        self.extras.append({"order_sn": params["order_sn"], "type": params["extra_track_type"],
                            "tracks": json.loads(params["extra_track_list"])})
        return {"upload_extra_logistics_response": {"success": True}}

    def exchange_shipping(self, params):
        import json

        request = json.loads(params["request"])
        self.exchange = {"merchant_exchange_ship_id": request["shipping_id"],
                         "merchant_exchange_trunk_number": request["tracking_number"]}
        return {"response": {"result": {"succ": True, "message": "", "after_sales_id": request["after_sales_id"],
                                        "order_sn": request["order_sn"]}}}


@pytest.fixture
def shop(fake) -> PddShop:
    return PddShop(fake)


def upload(number: str = "ZT1000001", *, quantity: int = 2, others: tuple[str, ...] = (), whole: bool = True,
           after_sales_id: str | None = None) -> ShipmentUpload:
    return ShipmentUpload(
        reference="coopsync-shipment-1", order_external_id=ORDER_SN, carrier="ZTO", company="115",
        tracking_number=number, carrier_name="中通快递",
        lines=(ShipmentLine(external_line_id="1200000000001", quantity=quantity, line_quantity=2),),
        shipped_at=datetime(2024, 6, 1, 8, tzinfo=timezone.utc), whole_order=whole,
        other_tracking_numbers=others, after_sales_id=after_sales_id)


async def test_first_upload_reads_the_order_then_sends_the_main_waybill(adapter, fake, shop):
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", False)
    assert fake.types() == ["pdd.order.information.get", "pdd.logistics.online.send"]
    [sent] = shop.sends
    assert (sent["order_sn"], sent["logistics_id"], sent["tracking_number"]) == (ORDER_SN, "115", "ZT1000001")
    assert "redelivery_type" not in sent  # 1, a first shipment, is the default
    assert fake.rejected_signs == 0


async def test_a_lost_answer_then_the_retry_leaves_one_shipment_on_pdd(adapter, fake, shop, sleeps):
    shop.lose_answers = 1  # applied, its answer lost: not repeated blind (no idempotency key)
    with pytest.raises(TransientError):
        await adapter.upload_shipment(upload())
    assert len(shop.sends) == 1 and sleeps == []
    fake.calls.clear()
    result = await adapter.upload_shipment(upload())  # the job's retry reads the order first
    assert (result.status, result.already) == ("uploaded", True)
    assert fake.types() == ["pdd.order.information.get"] and len(shop.sends) == 1


async def test_a_send_refused_because_shipped_meanwhile_reads_the_order_and_counts_as_uploaded(adapter, fake, shop):
    def shipped_meanwhile(params):  # another attempt of ours got there between our read and our send
        shop.order.update(order_status=2, tracking_number="ZT1000001", logistics_id=115)
        return error(ALREADY_SHIPPED, "订单状态不正确，无法发货")

    fake.on("pdd.logistics.online.send", shipped_meanwhile)
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True)
    assert fake.types() == ["pdd.order.information.get", "pdd.logistics.online.send", "pdd.order.information.get"]


async def test_already_shipped_with_our_number_is_uploaded_without_a_send(adapter, fake, shop):
    shop.order.update(order_status=2, tracking_number="ZT1000001", logistics_id=115)
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True)
    assert fake.types() == ["pdd.order.information.get"]


async def test_already_shipped_with_another_number_fails_with_both_numbers(adapter, fake, shop):
    shop.order.update(order_status=2, tracking_number="SF999", logistics_id=44)
    result = await adapter.upload_shipment(upload())
    assert result.status == "failed" and "SF999" in result.error and "ZT1000001" in result.error
    assert fake.types() == ["pdd.order.information.get"]


async def test_a_cancelled_order_fails_without_a_send(adapter, fake, shop):
    shop.order.update(confirm_status=2)
    result = await adapter.upload_shipment(upload())
    assert result.status == "failed" and "cancelled" in result.error
    assert fake.types() == ["pdd.order.information.get"]


async def test_a_transient_error_is_left_to_the_job(adapter, fake, shop, sleeps):
    fake.script("pdd.order.information.get", error(52103, "服务暂不可用"))
    with pytest.raises(TransientError):  # a read is retried in-call first
        await adapter.upload_shipment(upload())
    assert fake.types() == ["pdd.order.information.get"] * 3 and sleeps == [1.0, 1.0]
    shop.__init__(fake)
    fake.calls.clear()
    fake.script("pdd.logistics.online.send", error(52103, "服务暂不可用"))
    with pytest.raises(TransientError):  # a send is not: the job's next attempt reads first
        await adapter.upload_shipment(upload())
    assert fake.types() == ["pdd.order.information.get", "pdd.logistics.online.send"]


async def test_an_expired_token_is_raised_for_the_job_to_wait(adapter, fake, shop):
    fake.script("pdd.order.information.get", error(10019, "access_token已过期", "access_token_invalid"))
    with pytest.raises(AuthExpiredError):
        await adapter.upload_shipment(upload())
    assert shop.sends == []


async def test_split_parcels_ship_the_main_waybill_then_an_extra_one(adapter, fake, shop):
    first = await adapter.upload_shipment(upload("ZT1000001", quantity=1, whole=False))
    second = await adapter.upload_shipment(upload("ZT1000002", quantity=1, whole=False, others=("ZT1000001",)))
    assert (first.status, second.status) == ("uploaded", "uploaded")
    assert [s["tracking_number"] for s in shop.sends] == ["ZT1000001"]
    assert shop.extras == [{"order_sn": ORDER_SN, "type": "1",
                            "tracks": [{"shipping_id": 115, "tracking_number": "ZT1000002"}]}]


async def test_a_replacement_ships_through_the_after_sale_once(adapter, fake, shop):
    shop.order.update(order_status=2, tracking_number="ZT1000001", logistics_id=115)
    result = await adapter.upload_shipment(upload("ZT2000001", after_sales_id="9100000003"))
    assert result.status == "uploaded"
    assert shop.exchange == {"merchant_exchange_ship_id": 115, "merchant_exchange_trunk_number": "ZT2000001"}
    assert fake.types() == ["pdd.refund.information.get", "pdd.refund.exchange.shipping"]
    fake.calls.clear()
    again = await adapter.upload_shipment(upload("ZT2000001", after_sales_id="9100000003"))
    assert (again.status, again.already) == ("uploaded", True) and fake.types() == ["pdd.refund.information.get"]


async def test_the_company_list_keeps_the_available_couriers(adapter, fake):
    fake.script("pdd.logistics.companies.get", {"logistics_companies_get_response": {"logistics_companies": [
        {"id": 115, "logistics_company": "中通快递", "code": "ZTO", "available": 1},
        {"id": 44, "logistics_company": "顺丰快递", "code": "SF", "available": 1},
        {"id": 3, "logistics_company": "停用快递", "code": "OLD", "available": 0}]}})
    found = await adapter.fetch_carriers()
    assert [(c.company, c.name, c.code) for c in found] == [("115", "中通快递", "ZTO"), ("44", "顺丰快递", "SF")]


def test_ship_by_is_the_orders_promised_time_else_48_hours_after_payment():
    from adapters.pinduoduo.mapping import map_order

    raw = load("order-240601-100000000000001.json")
    # last_ship_time "2024-06-03 10:00:05" Beijing time
    assert map_order(raw).ship_by == datetime(2024, 6, 3, 2, 0, 5, tzinfo=timezone.utc)
    raw = {**raw, "last_ship_time": ""}
    assert map_order(raw).ship_by == datetime(2024, 6, 3, 2, 0, 0, tzinfo=timezone.utc)  # paid 06-01 10:00 +48 h
