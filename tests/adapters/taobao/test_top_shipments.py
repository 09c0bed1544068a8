"""Taobao shipment upload against the signing fake TOP gateway: taobao.logistics.offline.send for a whole
trade, alibaba.ascp.logistics.offline.send for part parcels, and the read-back of taobao.trade.fullinfo.get
that decides a B04 ("already shipped or closed").

Payloads are hand-made from documented fields (operations.md 1.2, TOP-META); the B04 and B150 sub-codes
are as community clients report them [C]."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from adapters.base import ShipmentLine, ShipmentUpload
from adapters.errors import AuthExpiredError, TransientError
from top_fakes import error

TID = "3300000000000001"
OIDS = ("3300000000000101", "3300000000000102")
B04 = ("isv.logistics-offline-service-error:B04", "订单状态不对该物流订单已经发货或者已关闭，不能重复发货")
B150 = ("isv.logistics-offline-service-error:B150", "发货异常，请稍等后重试")


class TopShop:
    """A trade of two sub-orders and what the shipping calls did to it."""

    def __init__(self, fake) -> None:
        self.status = "WAIT_SELLER_SEND_GOODS"
        self.waybills = {oid: "" for oid in OIDS}
        self.sends: list[tuple[str, dict]] = []
        self.lose_next = False
        fake.on("taobao.trade.fullinfo.get", self.fullinfo)
        fake.on("taobao.logistics.offline.send", self.offline_send)
        fake.on("alibaba.ascp.logistics.offline.send", self.ascp_send)

    def fullinfo(self, params):
        assert "orders.invoice_no" in params["fields"].split(",")
        orders = [{"oid": int(oid), "oid_str": oid, "num": 2, "invoice_no": number,
                   "logistics_company": "中通快递" if number else ""} for oid, number in self.waybills.items()]
        return {"trade_fullinfo_get_response": {"trade": {"tid_str": TID, "status": self.status,
                                                          "orders": {"order": orders}}}}

    def _shipped(self) -> None:
        self.status = ("WAIT_BUYER_CONFIRM_GOODS" if all(self.waybills.values()) else "SELLER_CONSIGNED_PART")

    def offline_send(self, params):
        assert (params["tid"], params["company_code"]) == (TID, "ZTO")
        if self.status != "WAIT_SELLER_SEND_GOODS":
            return error(15, "Remote service error", *B04)
        self.waybills = {oid: params["out_sid"] for oid in OIDS}
        self._shipped()
        self.sends.append(("offline", params))
        if self.lose_next:
            self.lose_next = False
            import httpx
            return httpx.Response(502, text="bad gateway")
        return {"logistics_offline_send_response": {"shipping": {"is_success": True}}}

    def ascp_send(self, params):
        assert params["tid"] == TID and params["consign_type"] == "1"
        [package] = json.loads(params["consign_pkgs"])
        goods = package["goods"]
        if any(self.waybills[g["sub_tid"]] for g in goods) or self.status.startswith("TRADE_CLOSED"):
            return error(15, "Remote service error", *B04)
        for g in goods:
            self.waybills[g["sub_tid"]] = package["out_sid"]
        self._shipped()
        self.sends.append(("ascp", package))
        return {"alibaba_ascp_logistics_offline_send_response": {"result": {"success": True}}}


@pytest.fixture
def shop(fake) -> TopShop:
    return TopShop(fake)


def upload(number="ZT1000001", oids=OIDS, *, whole=True, others=()) -> ShipmentUpload:
    return ShipmentUpload(
        reference="coopsync-shipment-7", order_external_id=TID, carrier="ZTO", company="ZTO", tracking_number=number,
        lines=tuple(ShipmentLine(external_line_id=oid, quantity=2, line_quantity=2) for oid in oids),
        shipped_at=datetime(2024, 6, 11, 1, tzinfo=timezone.utc), whole_order=whole, other_tracking_numbers=others)


async def test_a_whole_trade_goes_out_with_taobao_logistics_offline_send(adapter, fake, shop):
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", False)
    assert fake.methods() == ["taobao.trade.fullinfo.get", "taobao.logistics.offline.send"]
    [(kind, sent)] = shop.sends
    assert kind == "offline" and sent["out_sid"] == "ZT1000001" and sent["session"] == "session-abc"
    assert fake.rejected_signs == 0


async def test_a_lost_answer_then_the_retry_leaves_one_shipment_on_taobao(adapter, fake, shop, sleeps):
    shop.lose_next = True  # applied, its answer lost: not repeated blind (TOP has no idempotency key)
    with pytest.raises(TransientError):
        await adapter.upload_shipment(upload())
    assert fake.methods() == ["taobao.trade.fullinfo.get", "taobao.logistics.offline.send"] and sleeps == []
    fake.calls.clear()
    result = await adapter.upload_shipment(upload())  # the job's retry reads the trade, sends nothing
    assert (result.status, result.already) == ("uploaded", True)
    assert fake.methods() == ["taobao.trade.fullinfo.get"] and len(shop.sends) == 1


async def test_b04_for_our_own_earlier_send_is_uploaded_after_reading_the_trade(adapter, fake, shop):
    def shipped_meanwhile(params):
        shop.waybills = {oid: "ZT1000001" for oid in OIDS}
        shop.status = "WAIT_BUYER_CONFIRM_GOODS"
        return error(15, "Remote service error", *B04)

    fake.on("taobao.logistics.offline.send", shipped_meanwhile)
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True)
    assert fake.methods() == ["taobao.trade.fullinfo.get", "taobao.logistics.offline.send", "taobao.trade.fullinfo.get"]


async def test_already_shipped_with_our_number_is_uploaded_without_a_send(adapter, fake, shop):
    shop.waybills = {oid: "ZT1000001" for oid in OIDS}
    shop.status = "WAIT_BUYER_CONFIRM_GOODS"
    result = await adapter.upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True) and shop.sends == []


async def test_already_shipped_with_another_number_fails_with_both_numbers(adapter, fake, shop):
    shop.waybills = {oid: "YT555" for oid in OIDS}
    shop.status = "WAIT_BUYER_CONFIRM_GOODS"
    result = await adapter.upload_shipment(upload())
    assert result.status == "failed" and "YT555" in result.error and "ZT1000001" in result.error
    assert shop.sends == []


async def test_b04_on_a_closed_trade_is_failed_not_uploaded(adapter, fake, shop):
    # B04 also means "closed": the trade read back after it decides, and it shows no waybill of ours.
    fake.on("taobao.logistics.offline.send", lambda p: error(15, "Remote service error", *B04))
    result = await adapter.upload_shipment(upload())
    assert result.status == "failed" and "B04" in result.error
    shop.status = "TRADE_CLOSED"
    fake.calls.clear()
    result = await adapter.upload_shipment(upload())
    assert result.status == "failed" and "closed" in result.error
    assert fake.methods() == ["taobao.trade.fullinfo.get"]


async def test_b150_and_isp_errors_are_transient(adapter, fake, shop, sleeps):
    fake.script("taobao.logistics.offline.send", error(15, "Remote service error", *B150))
    with pytest.raises(TransientError) as caught:
        await adapter.upload_shipment(upload())
    assert caught.value.retry_after_s == 60.0
    fake.script("taobao.logistics.offline.send", error(15, "Remote service error", "isp.top-remote-connection-timeout"))
    with pytest.raises(TransientError):
        await adapter.upload_shipment(upload())
    assert sleeps == [] and shop.sends == []  # sends are not repeated in-call


async def test_an_expired_session_is_raised_for_the_job_to_wait(adapter, fake, shop):
    fake.script("taobao.trade.fullinfo.get", error(27, "Invalid session", "invalid-sessionkey"))
    with pytest.raises(AuthExpiredError):
        await adapter.upload_shipment(upload())


async def test_split_parcels_go_out_as_part_shipments_of_their_sub_orders(adapter, fake, shop):
    first = await adapter.upload_shipment(upload("ZT1000001", OIDS[:1], whole=False))
    second = await adapter.upload_shipment(upload("ZT1000002", OIDS[1:], whole=False, others=("ZT1000001",)))
    assert (first.status, second.status) == ("uploaded", "uploaded")
    assert [(kind, p["out_sid"], p["goods"]) for kind, p in shop.sends] == [
        ("ascp", "ZT1000001", [{"sub_tid": OIDS[0], "num": 2}]),
        ("ascp", "ZT1000002", [{"sub_tid": OIDS[1], "num": 2}])]
    assert shop.status == "WAIT_BUYER_CONFIRM_GOODS"


async def test_the_company_list_gives_codes(adapter, fake):
    fake.script("taobao.logistics.companies.get", {"logistics_companies_get_response": {"logistics_companies": {
        "logistics_company": [{"id": 1, "code": "ZTO", "name": "中通快递", "reg_mail_no": "^[0-9]{12}$"},
                              {"id": 2, "code": "SF", "name": "顺丰速运"}]}}})
    found = await adapter.fetch_carriers()
    assert [(c.company, c.name) for c in found] == [("ZTO", "中通快递"), ("SF", "顺丰速运")]
    assert fake.calls[0]["fields"] == "id,code,name,reg_mail_no"
