"""WooCommerce shipment upload: the Shipment Tracking extension's REST where the shop has it, else the order
meta ``_wc_shipment_tracking_items`` and a customer note; status ``completed`` once our parcels hold the
whole order. Every part is read before it is written, so a retry adds nothing twice.

The order is the WooCommerce docs example (tests/fixtures/woocommerce/order_rest_single_docs.json); the
tracking answers and the ``rest_no_route`` refusal are hand-made from the documented fields (operations.md
1.5, woocommerce.com Shipment Tracking REST API)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import httpx
import pytest
import respx

from adapters.base import ShipmentLine, ShipmentUpload
from adapters.errors import AuthExpiredError, TransientError
from woo_helpers import API, BASE, authed, load, make_store

TRACKING = "/wp-json/wc-shipment-tracking/v3"
NO_ROUTE = {"code": "rest_no_route", "message": "No route was found matching the URL and request method.",
            "data": {"status": 404}}


class WooShop:
    def __init__(self, *, extension: bool) -> None:
        self.order = copy.deepcopy(load("order_rest_single_docs.json"))
        self.extension = extension
        self.trackings: list[dict] = []
        self.notes: list[dict] = []
        self.puts: list[dict] = []
        self.lose_next_post = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        order_path = f"{API}/orders/{self.order['id']}"
        if path.startswith(TRACKING):
            if not self.extension:
                return httpx.Response(404, json=NO_ROUTE)
            assert path == f"{TRACKING}/orders/{self.order['id']}/shipment-trackings"
            if method == "GET":
                return httpx.Response(200, json=self.trackings)
            item = {**json.loads(request.content), "tracking_id": f"t{len(self.trackings) + 1}"}
            self.trackings.append(item)
            if self.lose_next_post:
                self.lose_next_post = False
                return httpx.Response(504, text="gateway timeout")
            return httpx.Response(201, json=item)
        if path == order_path and method == "GET":
            return httpx.Response(200, json=self.order)
        if path == order_path and method == "PUT":
            changes = json.loads(request.content)
            self.puts.append(changes)
            if "status" in changes:
                self.order["status"] = changes["status"]
            for meta in changes.get("meta_data", []):
                self.order["meta_data"] = [m for m in self.order["meta_data"] if m["key"] != meta["key"]] + [meta]
            return httpx.Response(200, json=self.order)
        if path == f"{order_path}/notes":
            if method == "GET":
                assert request.url.params["type"] == "customer"
                return httpx.Response(200, json=self.notes)
            self.notes.append(json.loads(request.content))
            return httpx.Response(201, json=self.notes[-1])
        raise AssertionError(f"unexpected {method} {path}")


def upload(number="ZT1000001", lines=((315, 2), (316, 1)), *, completes=True, others=()):
    return ShipmentUpload(
        reference="coopsync-shipment-9", order_external_id="727", carrier="ZTO", company="ZTO Express",
        tracking_number=number, tracking_url=f"https://www.kuaidi100.com/chaxun?com=zhongtong&nu={number}",
        lines=tuple(ShipmentLine(external_line_id=str(i), quantity=q, line_quantity=q) for i, q in lines),
        shipped_at=datetime(2024, 6, 1, 9, tzinfo=timezone.utc), whole_order=completes, completes_order=completes,
        other_tracking_numbers=others)


def serve(shop: WooShop):
    mock = respx.mock(assert_all_mocked=True, base_url=BASE)
    mock.route(host="shop.example.test").mock(side_effect=authed(shop))
    return mock


async def test_with_the_extension_a_tracking_item_is_created_then_the_order_completed(make_adapter):
    shop = WooShop(extension=True)
    with serve(shop):
        result = await make_adapter().upload_shipment(upload())
    assert (result.status, result.platform_ref) == ("uploaded", "tracking:t1")
    assert shop.trackings == [{"tracking_number": "ZT1000001", "custom_tracking_provider": "ZTO Express",
                               "custom_tracking_link": "https://www.kuaidi100.com/chaxun?com=zhongtong&nu=ZT1000001",
                               "date_shipped": "2024-06-01", "tracking_id": "t1"}]
    assert shop.puts == [{"status": "completed"}] and shop.notes == []


async def test_without_the_extension_the_meta_and_a_customer_note_carry_the_tracking(make_adapter):
    shop = WooShop(extension=False)
    with serve(shop):
        result = await make_adapter().upload_shipment(upload())
    assert (result.status, result.platform_ref) == ("uploaded", "meta")
    [put] = shop.puts
    assert put["status"] == "completed"
    [meta] = put["meta_data"]
    assert meta["key"] == "_wc_shipment_tracking_items"
    assert [(i["tracking_number"], i["custom_tracking_provider"], i["date_shipped"]) for i in meta["value"]] == [
        ("ZT1000001", "ZTO Express", str(int(datetime(2024, 6, 1, 9, tzinfo=timezone.utc).timestamp())))]
    assert shop.notes == [{"note": "Shipped with ZTO Express, tracking number ZT1000001. "
                                   "https://www.kuaidi100.com/chaxun?com=zhongtong&nu=ZT1000001", "customer_note": True}]


async def test_a_lost_answer_then_the_retry_leaves_one_tracking_item(make_adapter, sleeps):
    shop = WooShop(extension=True)
    shop.lose_next_post = True  # stored, its answer lost: not repeated blind (no idempotency key)
    with serve(shop):
        adapter = make_adapter()
        with pytest.raises(TransientError):
            await adapter.upload_shipment(upload())
        assert sleeps.waits == [] and shop.order["status"] == "processing"
        result = await adapter.upload_shipment(upload())  # the job's retry reads, finds it, completes the order
    assert (result.status, result.already) == ("uploaded", True)
    assert [t["tracking_number"] for t in shop.trackings] == ["ZT1000001"]
    assert shop.order["status"] == "completed"


async def test_already_there_with_our_number_writes_only_what_is_missing(make_adapter):
    shop = WooShop(extension=False)
    shop.order["meta_data"].append({"key": "_wc_shipment_tracking_items", "value": [
        {"tracking_number": "ZT1000001", "custom_tracking_provider": "ZTO Express"}]})
    with serve(shop):
        result = await make_adapter().upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True)
    assert shop.puts == [{"status": "completed"}] and len(shop.notes) == 1  # the meta stays, the rest is added


async def test_another_number_on_the_order_fails_with_both_numbers(make_adapter):
    shop = WooShop(extension=True)
    shop.trackings.append({"tracking_number": "SF999", "tracking_provider": "SF Express", "tracking_id": "x"})
    with serve(shop):
        result = await make_adapter().upload_shipment(upload())
    assert result.status == "failed" and "SF999" in result.error and "ZT1000001" in result.error
    assert shop.puts == [] and len(shop.trackings) == 1


async def test_a_cancelled_order_is_not_shipped(make_adapter):
    shop = WooShop(extension=True)
    shop.order["status"] = "cancelled"
    with serve(shop):
        result = await make_adapter().upload_shipment(upload())
    assert result.status == "failed" and "cancelled" in result.error and shop.trackings == []


async def test_5xx_is_transient_and_a_refused_key_asks_for_authorisation(make_adapter, sleeps):
    with respx.mock(assert_all_mocked=True, base_url=BASE) as mock:
        mock.route(host="shop.example.test").mock(return_value=httpx.Response(503))
        with pytest.raises(TransientError):
            await make_adapter().upload_shipment(upload())
    with serve(WooShop(extension=True)):
        with pytest.raises(AuthExpiredError):
            await make_adapter(make_store(secret="cs_wrong")).upload_shipment(upload())


async def test_split_parcels_add_a_tracking_each_and_only_the_last_completes_the_order(make_adapter):
    shop = WooShop(extension=True)
    with serve(shop):
        adapter = make_adapter()
        first = await adapter.upload_shipment(upload("ZT1000001", ((315, 2),), completes=False))
        assert shop.order["status"] == "processing"
        second = await adapter.upload_shipment(upload("ZT1000002", ((316, 1),), others=("ZT1000001",)))
    assert first.status == second.status == "uploaded"
    assert [t["tracking_number"] for t in shop.trackings] == ["ZT1000001", "ZT1000002"]
    assert shop.order["status"] == "completed" and shop.puts == [{"status": "completed"}]
