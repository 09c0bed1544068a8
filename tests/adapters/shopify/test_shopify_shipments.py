"""Shopify shipment upload through GraphQL: the order's fulfillment orders and fulfillments are read first,
then ``fulfillmentCreate`` fulfils what our tracking number does not cover yet, one call per location.

The GraphQL answers are hand-made from the documented schema (Order.fulfillments / fulfillmentOrders,
FulfillmentCreatePayload; operations.md 1.4); ids follow Shopify's REST examples (order 450789469)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest
import respx

from adapters.base import ShipmentLine, ShipmentUpload
from adapters.errors import AuthExpiredError, TransientError
from shopify_helpers import API, BASE, authed

ORDER = "450789469"
LINES = {"466157049": 2, "518995019": 1}


class ShopifyShop:
    """One order with its fulfillment orders (``locations``: line id -> location) and fulfillments."""

    def __init__(self, locations: dict[str, str] | None = None) -> None:
        locations = locations or {line: "L1" for line in LINES}
        self.fos: dict[str, dict] = {}
        for line, location in locations.items():
            fo = self.fos.setdefault(location, {"id": f"gid://shopify/FulfillmentOrder/{len(self.fos) + 1}",
                                                "status": "OPEN", "location": location, "items": {}})
            fo["items"][line] = {"id": f"gid://shopify/FulfillmentOrderLineItem/{line}0", "remaining": LINES[line]}
        self.fulfillments: list[dict] = []
        self.cancelled = False
        self.creates: list[dict] = []
        self.lose_next = False
        self.errors: list[dict] = []

    def order(self) -> dict:
        return {
            "id": f"gid://shopify/Order/{ORDER}", "cancelledAt": "2024-06-02T10:00:00Z" if self.cancelled else None,
            "displayFulfillmentStatus": "FULFILLED" if self.fulfillments else "UNFULFILLED",
            "fulfillments": [{"id": f["id"], "status": "SUCCESS", "trackingInfo": [{"company": "ZTO Express",
                                                                                     "number": f["number"]}],
                              "fulfillmentLineItems": {"nodes": [{"quantity": q, "lineItem": {"id": f"gid://shopify/LineItem/{line}"}}
                                                                 for line, q in f["lines"].items()]}}
                             for f in self.fulfillments],
            "fulfillmentOrders": {"nodes": [{
                "id": fo["id"], "status": "CLOSED" if not any(i["remaining"] for i in fo["items"].values()) else "OPEN",
                "assignedLocation": {"location": {"id": f"gid://shopify/Location/{fo['location']}"}},
                "lineItems": {"nodes": [{"id": item["id"], "remainingQuantity": item["remaining"],
                                         "lineItem": {"id": f"gid://shopify/LineItem/{line}"}}
                                        for line, item in fo["items"].items()]}} for fo in self.fos.values()]},
        }

    def create(self, fulfillment: dict) -> dict:
        if self.errors:
            return {"fulfillment": None, "userErrors": self.errors}
        groups = fulfillment["lineItemsByFulfillmentOrder"]
        locations = {fo["location"] for fo in self.fos.values() for g in groups if fo["id"] == g["fulfillmentOrderId"]}
        assert len(locations) == 1, "one fulfillmentCreate may not span locations"
        lines: dict[str, int] = {}
        for group in groups:
            fo = next(f for f in self.fos.values() if f["id"] == group["fulfillmentOrderId"])
            for wanted in group["fulfillmentOrderLineItems"]:
                line, item = next((l, i) for l, i in fo["items"].items() if i["id"] == wanted["id"])
                if not 0 < wanted["quantity"] <= item["remaining"]:
                    return {"fulfillment": None, "userErrors": [
                        {"field": ["fulfillment"], "message": "Invalid fulfillment order line item quantity requested."}]}
        for group in groups:
            fo = next(f for f in self.fos.values() if f["id"] == group["fulfillmentOrderId"])
            for wanted in group["fulfillmentOrderLineItems"]:
                line, item = next((l, i) for l, i in fo["items"].items() if i["id"] == wanted["id"])
                item["remaining"] -= wanted["quantity"]
                lines[line] = lines.get(line, 0) + wanted["quantity"]
        created = {"id": f"gid://shopify/Fulfillment/{len(self.fulfillments) + 1}",
                   "number": fulfillment["trackingInfo"]["number"], "lines": lines}
        self.fulfillments.append(created)
        self.creates.append(fulfillment)
        return {"fulfillment": {"id": created["id"], "status": "SUCCESS"}, "userErrors": []}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "CoopsyncOrderShipping" in body["query"]:
            assert body["variables"] == {"id": f"gid://shopify/Order/{ORDER}"}
            return httpx.Response(200, json={"data": {"order": self.order()}})
        assert "CoopsyncFulfillmentCreate" in body["query"]
        answer = {"data": {"fulfillmentCreate": self.create(body["variables"]["fulfillment"])}}
        if self.lose_next:
            self.lose_next = False
            return httpx.Response(502, text="bad gateway")
        return httpx.Response(200, json=answer)


@pytest.fixture
def shopify():
    shop = ShopifyShop()
    with respx.mock(assert_all_mocked=True, base_url=BASE) as mock:
        mock.post(f"{API}/graphql.json").mock(side_effect=authed(lambda r: shop(r)))
        yield shop, mock


def upload(number="ZT1000001", lines=LINES, *, url="https://www.kuaidi100.com/chaxun?com=zhongtong&nu=ZT1000001",
           others=()):
    return ShipmentUpload(
        reference="coopsync-shipment-3", order_external_id=ORDER, carrier="ZTO", company="ZTO Express",
        tracking_number=number, tracking_url=url, other_tracking_numbers=others,
        lines=tuple(ShipmentLine(external_line_id=line, quantity=q, line_quantity=LINES[line]) for line, q in lines.items()),
        shipped_at=datetime(2024, 6, 1, tzinfo=timezone.utc), whole_order=True)


async def test_first_upload_fulfils_the_fulfillment_order_with_tracking_info(make_adapter, shopify):
    shop, mock = shopify
    result = await make_adapter().upload_shipment(upload())
    assert result.status == "uploaded" and result.platform_ref == "gid://shopify/Fulfillment/1"
    [sent] = shop.creates
    assert sent["trackingInfo"] == {"number": "ZT1000001", "company": "ZTO Express",
                                    "url": "https://www.kuaidi100.com/chaxun?com=zhongtong&nu=ZT1000001"}
    assert sent["notifyCustomer"] is True
    assert sent["lineItemsByFulfillmentOrder"] == [{"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1",
        "fulfillmentOrderLineItems": [{"id": "gid://shopify/FulfillmentOrderLineItem/4661570490", "quantity": 2},
                                      {"id": "gid://shopify/FulfillmentOrderLineItem/5189950190", "quantity": 1}]}]
    assert len(mock.calls) == 2
    assert all(call.request.headers["X-Shopify-Access-Token"] == "shpat_test_token" for call in mock.calls)


async def test_a_lost_answer_then_the_retry_leaves_one_fulfillment(make_adapter, shopify, sleeps):
    shop, _ = shopify
    shop.lose_next = True  # created, its answer lost: not repeated blind (no idempotency key)
    adapter = make_adapter()
    with pytest.raises(TransientError):
        await adapter.upload_shipment(upload())
    assert len(shop.fulfillments) == 1 and sleeps.waits == []
    again = await adapter.upload_shipment(upload())  # the job's retry reads first and creates nothing
    assert (again.status, again.already) == ("uploaded", True)
    assert again.platform_ref == "gid://shopify/Fulfillment/1" and len(shop.fulfillments) == 1


async def test_already_fulfilled_with_our_number_is_uploaded_without_a_create(make_adapter, shopify):
    shop, mock = shopify
    shop.create({"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1",
                 "fulfillmentOrderLineItems": [{"id": "gid://shopify/FulfillmentOrderLineItem/4661570490", "quantity": 2},
                                               {"id": "gid://shopify/FulfillmentOrderLineItem/5189950190", "quantity": 1}]}],
                 "trackingInfo": {"number": "ZT1000001"}})
    result = await make_adapter().upload_shipment(upload())
    assert (result.status, result.already) == ("uploaded", True) and len(mock.calls) == 1


async def test_fulfilled_with_another_number_fails_with_both_numbers(make_adapter, shopify):
    shop, _ = shopify
    shop.create({"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1",
                 "fulfillmentOrderLineItems": [{"id": "gid://shopify/FulfillmentOrderLineItem/4661570490", "quantity": 2}]}],
                 "trackingInfo": {"number": "SF999"}})
    result = await make_adapter().upload_shipment(upload())
    assert result.status == "failed" and "SF999" in result.error and "ZT1000001" in result.error
    assert len(shop.fulfillments) == 1


async def test_a_user_error_fails_and_a_cancelled_order_is_not_fulfilled(make_adapter, shopify):
    shop, _ = shopify
    shop.errors = [{"field": ["fulfillment"], "message": "Fulfillment order is on hold"}]
    result = await make_adapter().upload_shipment(upload())
    assert result.status == "failed" and "on hold" in result.error
    shop.errors, shop.cancelled = [], True
    result = await make_adapter().upload_shipment(upload())
    assert result.status == "failed" and "cancelled" in result.error and shop.fulfillments == []


async def test_throttles_and_5xx_are_transient_and_401_asks_for_authorisation(make_adapter, sleeps):
    with respx.mock(assert_all_mocked=True, base_url=BASE) as mock:
        mock.post(f"{API}/graphql.json").mock(return_value=httpx.Response(200, json={
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}))
        with pytest.raises(TransientError):
            await make_adapter().upload_shipment(upload())
        assert sleeps.waits == [1.0, 1.0]
        mock.post(f"{API}/graphql.json").mock(return_value=httpx.Response(503))
        with pytest.raises(TransientError):
            await make_adapter().upload_shipment(upload())
    from shopify_helpers import make_store

    with respx.mock(assert_all_mocked=True, base_url=BASE) as mock:
        mock.post(f"{API}/graphql.json").mock(side_effect=authed(httpx.Response(200, json={"data": {}})))
        with pytest.raises(AuthExpiredError):
            await make_adapter(make_store(token="shpat_revoked")).upload_shipment(upload())


async def test_split_parcels_and_locations_each_get_their_fulfillment(make_adapter):
    shop = ShopifyShop({"466157049": "L1", "518995019": "L2"})
    with respx.mock(assert_all_mocked=True, base_url=BASE) as mock:
        mock.post(f"{API}/graphql.json").mock(side_effect=authed(lambda r: shop(r)))
        adapter = make_adapter()
        first = await adapter.upload_shipment(upload("ZT1000001", {"466157049": 1}))
        second = await adapter.upload_shipment(upload("ZT1000002", {"466157049": 1, "518995019": 1},
                                                      others=("ZT1000001",)))
    assert first.status == second.status == "uploaded"
    assert second.platform_ref == "gid://shopify/Fulfillment/2,gid://shopify/Fulfillment/3"
    assert [(f["number"], f["lines"]) for f in shop.fulfillments] == [
        ("ZT1000001", {"466157049": 1}), ("ZT1000002", {"466157049": 1}), ("ZT1000002", {"518995019": 1})]
