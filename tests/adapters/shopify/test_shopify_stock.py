"""Shopify stock: compare-and-set through GraphQL inventorySetQuantities (changeFromQuantity, @idempotent),
the read it compares against, conflicts, refusals, throttles, auth; the REST inventory read."""

from __future__ import annotations

import uuid

import httpx
import pytest
import respx

from adapters.base import Capability, StockLevel
from adapters.shopify.adapter import ShopifyAdapter

from shopify_helpers import API, BASE, authed, load, make_store
from shopify_inventory_fake import FakeInventory

ITEM, LOCATION = "808950810", "655441491"  # make_adapter's store location


def _mock():
    return respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE)


def _graphql(router, fake: FakeInventory):
    return router.post(f"{API}/graphql.json").mock(side_effect=authed(fake))


def _level(quantity: int, expected: int | None = None, key: str = "39072856", item: str = ITEM) -> StockLevel:
    return StockLevel(key, quantity, {"variant_id": key, "inventory_item_id": item}, expected)


def test_shopify_declares_compare_and_set_and_stock_read():
    assert {Capability.STOCK_COMPARE_AND_SET, Capability.STOCK_READ} <= ShopifyAdapter.capabilities


async def test_an_expected_figure_is_the_change_from_quantity_of_the_write(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 40})
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(42, expected=40)])
    assert [(r.external_sku_key, r.ok) for r in results] == [("39072856", True)]
    assert fake.reads == []  # the core's belief is compared against as it is: no read first
    (sent,) = fake.writes
    key = sent["idempotencyKey"]
    assert uuid.UUID(key)
    assert sent == {"idempotencyKey": key, "input": {
        "name": "available", "reason": "correction", "referenceDocumentUri": f"gid://coopsync/StockPush/{key}",
        "quantities": [{"inventoryItemId": "gid://shopify/InventoryItem/808950810",
                        "locationId": "gid://shopify/Location/655441491", "quantity": 42, "changeFromQuantity": 40}]}}
    assert fake.available[(ITEM, LOCATION)] == 42


async def test_without_an_expected_figure_the_write_compares_against_a_read_just_before(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 9})
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(12)])
    assert results[0].ok
    assert fake.reads == [{"item": "gid://shopify/InventoryItem/808950810", "location": "gid://shopify/Location/655441491"}]
    assert [w["input"]["quantities"][0]["changeFromQuantity"] for w in fake.writes] == [9]
    assert fake.available[(ITEM, LOCATION)] == 12


async def test_a_shop_already_showing_the_figure_is_not_written(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 12})
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(12)])
    assert results[0].ok and len(fake.reads) == 1 and fake.writes == []


async def test_a_stale_expected_figure_comes_back_as_a_conflict_with_the_shops_count(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 37})  # three sold that the core has not heard of
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(42, expected=40)])
    (result,) = results
    assert (result.ok, result.error_kind, result.current_quantity) == (False, "conflict", 37)
    assert len(fake.writes) == 1  # the core recomputes: the adapter does not write again on its own
    assert fake.available[(ITEM, LOCATION)] == 37


async def test_a_sale_between_the_read_and_the_write_is_re_read_and_kept_on_the_retry(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 10})
    fake.after_read = lambda shop: (shop.sell(ITEM, LOCATION, 2), setattr(shop, "after_read", None))
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(12)])  # a receipt: 12 to offer in all
    assert results[0].ok
    first, second = fake.writes
    assert first["input"]["quantities"][0]["changeFromQuantity"] == 10  # stale: two sold meanwhile
    assert (second["input"]["quantities"][0]["changeFromQuantity"], second["input"]["quantities"][0]["quantity"]) == (8, 10)
    assert first["idempotencyKey"] != second["idempotencyKey"]  # another write, another key
    # The two units sold after our read were not in the figure planned before it: they stay sold, and the
    # shop never offers more than the 12 there were (a plain retry of 12 would have offered 14).
    assert fake.available[(ITEM, LOCATION)] + fake.sold == 12


async def test_sales_racing_the_retry_too_end_in_a_conflict(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 10})
    fake.after_read = lambda shop: shop.sell(ITEM, LOCATION, 1)  # a buyer after every read
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(15)])
    (result,) = results
    assert (result.ok, result.error_kind) == (False, "conflict")
    assert result.current_quantity == fake.available[(ITEM, LOCATION)] + 1  # read, then one more sold
    assert len(fake.writes) == 2
    assert fake.available[(ITEM, LOCATION)] + fake.sold == 10  # nothing we wrote overwrote a sale


async def test_a_write_whose_answer_was_lost_is_retried_under_the_same_key_and_applies_once(make_adapter, sleeps):
    fake = FakeInventory({(ITEM, LOCATION): 5})
    fake.lose_answer_of_next_write = True
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(8, expected=5)])
    assert results[0].ok  # Shopify answers the repeat with the first attempt's result, not with STALE
    assert len(fake.writes) == 2 and fake.writes[0] == fake.writes[1]
    assert fake.available[(ITEM, LOCATION)] == 8 and len(sleeps.waits) == 1


@pytest.mark.parametrize(("code", "words"), [
    ("ITEM_NOT_STOCKED_AT_LOCATION", "activate the item at that location"),
    ("INVALID_QUANTITY_TOO_HIGH", "INVALID_QUANTITY_TOO_HIGH"),
])
async def test_other_user_errors_are_permanent_refusals_that_say_what_to_do(make_adapter, code, words):
    fake = FakeInventory({(ITEM, LOCATION): 5})
    fake.user_error = code
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(8, expected=5)])
    (result,) = results
    assert (result.ok, result.error_kind) == (False, "permanent")
    assert words in result.error and len(fake.writes) == 1


async def test_a_concurrent_request_under_the_same_key_is_transient(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 5})
    fake.user_error = "IDEMPOTENCY_CONCURRENT_REQUEST"
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(8, expected=5)])
    assert (results[0].error_kind, results[0].retry_after_s) == ("transient", 1.0)


async def test_an_untracked_item_or_one_not_stocked_at_the_location_is_refused_with_advice(make_adapter):
    with _mock() as router:
        _graphql(router, FakeInventory({(ITEM, LOCATION): 5}, tracked=False))
        untracked = await make_adapter().push_stock([_level(3)])
    with _mock() as router:
        _graphql(router, FakeInventory({(ITEM, "905684977"): 5}))
        elsewhere = await make_adapter().push_stock([_level(3)])
    assert untracked[0].error_kind == "permanent" and "inventory tracking" in untracked[0].error
    assert elsewhere[0].error_kind == "permanent" and "not stocked at location 655441491" in elsewhere[0].error


async def test_push_stock_looks_up_the_inventory_item_of_a_variant_once(make_adapter):
    fake = FakeInventory({(ITEM, LOCATION): 0})
    with _mock() as router:
        variant = router.get(f"{API}/variants/39072856.json").mock(side_effect=authed(
            httpx.Response(200, json=load("variant_rest_single_constructed.json"))))
        _graphql(router, fake)
        adapter = make_adapter()
        await adapter.push_stock([StockLevel("39072856", 5, {"variant_id": "39072856"}, 0)])
        results = await adapter.push_stock([StockLevel("39072856", 4, {}, 5)])  # sku key is the variant id
    assert variant.call_count == 1
    assert [w["input"]["quantities"][0]["inventoryItemId"] for w in fake.writes] == [
        "gid://shopify/InventoryItem/808950810"] * 2
    assert results[0].ok and fake.available[(ITEM, LOCATION)] == 4


async def test_listing_location_wins_over_the_store_location(make_adapter):
    fake = FakeInventory({("7", "905684977"): 1})
    with _mock() as router:
        _graphql(router, fake)
        await make_adapter().push_stock([StockLevel("1", 3, {"inventory_item_id": "7", "location_id": "905684977"}, 1)])
    assert fake.writes[0]["input"]["quantities"][0]["locationId"] == "gid://shopify/Location/905684977"


async def test_a_failing_listing_does_not_fail_the_others_and_a_negative_figure_is_sent_as_zero(make_adapter):
    fake = FakeInventory({("1", LOCATION): 4, ("3", LOCATION): 4})  # item 2 is stocked nowhere
    with _mock() as router:
        _graphql(router, fake)
        router.get(f"{API}/variants/404.json").mock(side_effect=authed(httpx.Response(404, json={"errors": "Not Found"})))
        results = await make_adapter().push_stock([
            StockLevel("a", 1, {"inventory_item_id": "1"}),
            StockLevel("b", 1, {"inventory_item_id": "2"}),
            StockLevel("404", 1, {"variant_id": "404"}),
            StockLevel("c", -3, {"inventory_item_id": "3"}),
        ])
    assert [(r.external_sku_key, r.ok, r.error_kind) for r in results] == [
        ("a", True, None), ("b", False, "permanent"), ("404", False, "permanent"), ("c", True, None)]
    assert fake.available == {("1", LOCATION): 1, ("3", LOCATION): 0}


async def test_a_listing_without_any_location_fails_with_advice(make_adapter):
    results = await make_adapter(make_store()).push_stock([StockLevel("a", 1, {"inventory_item_id": "1"})])
    assert not results[0].ok and "location_id" in results[0].error


async def test_a_revoked_token_fails_every_listing_after_one_call(make_adapter):
    fake = FakeInventory({(k, "1"): 0 for k in "123"})
    with _mock() as router:
        route = _graphql(router, fake)
        results = await make_adapter(make_store(token="revoked", location_id="1")).push_stock(
            [StockLevel(k, 1, {"inventory_item_id": k}, 0) for k in ("1", "2", "3")])
    assert route.call_count == 1
    assert [r.error_kind for r in results] == ["auth_expired"] * 3


async def test_an_invalid_token_reported_inside_a_graphql_answer_is_auth_expired(make_adapter):
    with _mock() as router:
        router.post(f"{API}/graphql.json").mock(return_value=httpx.Response(200, json={
            "errors": [{"message": "[API] Invalid API key or access token (unrecognized login or wrong password)"}]}))
        results = await make_adapter().push_stock([_level(1, expected=0)])
    assert results[0].error_kind == "auth_expired"


async def test_a_graphql_throttle_waits_for_the_cost_bucket_then_goes_through(make_adapter, sleeps):
    fake = FakeInventory({(ITEM, LOCATION): 0})
    fake.answer_first = [httpx.Response(200, json=load("errors_graphql_throttled_constructed.json"))]
    with _mock() as router:
        _graphql(router, fake)
        results = await make_adapter().push_stock([_level(3, expected=0)])
    assert results[0].ok and fake.available[(ITEM, LOCATION)] == 3
    assert sleeps.waits == [2.0]  # (112 points asked - 12 left) / 50 points a second


async def test_a_long_graphql_throttle_stops_the_push_and_reports_when_to_retry(make_adapter):
    throttled = load("errors_graphql_throttled_constructed.json")
    throttled["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] = 0
    throttled["extensions"]["cost"]["requestedQueryCost"] = 1000  # 20 s: longer than an in-call retry waits
    with _mock() as router:
        route = router.post(f"{API}/graphql.json").mock(return_value=httpx.Response(200, json=throttled))
        results = await make_adapter().push_stock([_level(1, expected=0, key=k) for k in ("1", "2")])
    assert route.call_count == 1
    assert [(r.error_kind, r.retry_after_s) for r in results] == [("throttled", 20.0), ("throttled", 20.0)]


async def test_fetch_stock_reads_inventory_levels_at_the_location(make_adapter):
    seen = []

    def levels(request):
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=load("inventory_levels_rest_list_shopify_python_api.json"))

    with _mock() as router:
        router.get(f"{API}/inventory_levels.json").mock(side_effect=authed(levels))
        stock = await make_adapter(make_store(location_id="487838322")).fetch_stock([
            StockLevel("v1", 0, {"inventory_item_id": "39072856"}),
            StockLevel("v2", 0, {"inventory_item_id": "808950810"}),
            StockLevel("v3", 0, {"inventory_item_id": "808950810", "location_id": "905684977"}),
        ])
    assert stock == {"v1": 27, "v2": 9, "v3": 1}
    assert {p["location_ids"] for p in seen} == {"487838322", "905684977"}
