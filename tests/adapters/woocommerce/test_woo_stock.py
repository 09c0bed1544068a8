"""WooCommerce stock: PUT for one listing, batches per parent, a result per listing, stock read."""

from __future__ import annotations

import json

import httpx
import respx

from adapters.base import StockLevel

from woo_helpers import API, BASE, authed, load, make_store


def _mock():
    return respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE)


def _echo_batch(request: httpx.Request) -> httpx.Response:
    updates = json.loads(request.content)["update"]
    return httpx.Response(200, json={"update": [dict(u, name=f"#{u['id']}") for u in updates]})


async def test_a_single_simple_product_is_updated_with_put(make_adapter):
    with _mock() as router:
        route = router.put(f"{API}/products/93").mock(side_effect=authed(httpx.Response(200, json={"id": 93})))
        results = await make_adapter().push_stock([StockLevel("93", 7, {"product_id": "93"})])
    assert json.loads(route.calls[0].request.content) == {"manage_stock": True, "stock_quantity": 7}
    assert [(r.external_sku_key, r.ok) for r in results] == [("93", True)]


async def test_a_single_variation_is_updated_under_its_parent(make_adapter):
    with _mock() as router:
        route = router.put(f"{API}/products/22/variations/23").mock(side_effect=authed(httpx.Response(200, json={"id": 23})))
        results = await make_adapter().push_stock([StockLevel("23", 0, {"product_id": "22", "variation_id": "23"})])
    assert json.loads(route.calls[0].request.content)["stock_quantity"] == 0 and results[0].ok


async def test_simple_products_and_variations_are_batched_with_a_result_per_listing(make_adapter):
    levels = [
        StockLevel("93", 5, {"product_id": "93"}),
        StockLevel("23", 2, {"product_id": "22", "variation_id": "23"}),
        StockLevel("87", 1, {"product_id": "87"}),
        StockLevel("24", -1, {"product_id": "22", "variation_id": "24"}),
    ]
    with _mock() as router:
        products = router.post(f"{API}/products/batch").mock(side_effect=authed(_echo_batch))
        variations = router.post(f"{API}/products/22/variations/batch").mock(side_effect=authed(_echo_batch))
        results = await make_adapter().push_stock(levels)
    assert json.loads(products.calls[0].request.content) == {"update": [
        {"id": 93, "manage_stock": True, "stock_quantity": 5}, {"id": 87, "manage_stock": True, "stock_quantity": 1}]}
    assert json.loads(variations.calls[0].request.content) == {"update": [
        {"id": 23, "manage_stock": True, "stock_quantity": 2}, {"id": 24, "manage_stock": True, "stock_quantity": 0}]}
    assert [(r.external_sku_key, r.ok) for r in results] == [("93", True), ("23", True), ("87", True), ("24", True)]


async def test_more_than_100_products_go_in_several_batches(make_adapter):
    levels = [StockLevel(str(i), 1, {"product_id": str(i)}) for i in range(1, 151)]
    with _mock() as router:
        route = router.post(f"{API}/products/batch").mock(side_effect=authed(_echo_batch))
        results = await make_adapter().push_stock(levels)
    assert [len(json.loads(c.request.content)["update"]) for c in route.calls] == [100, 50]
    assert len(results) == 150 and all(r.ok for r in results)


async def test_an_item_error_inside_a_batch_fails_only_that_listing(make_adapter):
    with _mock() as router:
        router.post(f"{API}/products/batch").mock(side_effect=authed(
            httpx.Response(200, json=load("products_batch_update_partial_error_constructed.json"))))
        results = await make_adapter().push_stock(
            [StockLevel("93", 1, {"product_id": "93"}), StockLevel("404", 1, {"product_id": "404"}),
             StockLevel("87", 1, {"product_id": "87"})])
    assert [(r.ok, r.error_kind) for r in results] == [(True, None), (False, "permanent"), (True, None)]
    assert "Invalid ID." in results[1].error


async def test_a_failing_batch_does_not_fail_the_other_groups(make_adapter):
    with _mock() as router:
        router.put(f"{API}/products/93").mock(side_effect=authed(httpx.Response(
            400, json=load("products_batch_update_partial_error_constructed.json")["update"][1]["error"])))
        router.put(f"{API}/products/22/variations/23").mock(side_effect=authed(httpx.Response(200, json={"id": 23})))
        results = await make_adapter().push_stock(
            [StockLevel("93", 1, {"product_id": "93"}), StockLevel("23", 1, {"product_id": "22", "variation_id": "23"})])
    assert [(r.external_sku_key, r.ok) for r in results] == [("93", False), ("23", True)]


async def test_a_variation_without_its_parent_is_reported_not_sent(make_adapter):
    results = await make_adapter().push_stock([StockLevel("23", 1, {"variation_id": "23"})])
    assert not results[0].ok and "product_id" in results[0].error


async def test_a_revoked_key_fails_every_listing_after_one_call(make_adapter):
    with _mock() as router:
        route = router.put(f"{API}/products/93").mock(side_effect=authed(httpx.Response(200, json={})))
        results = await make_adapter(make_store(secret="cs_revoked")).push_stock([
            StockLevel("93", 1, {"product_id": "93"}), StockLevel("23", 1, {"product_id": "22", "variation_id": "23"})])
    assert route.call_count == 1
    assert [r.error_kind for r in results] == ["auth_expired", "auth_expired"]


async def test_push_stock_recovers_from_a_short_throttle(make_adapter, sleeps):
    answers = iter([httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200, json={"id": 93})])
    with _mock() as router:
        router.put(f"{API}/products/93").mock(side_effect=authed(lambda request: next(answers)))
        results = await make_adapter().push_stock([StockLevel("93", 1, {"product_id": "93"})])
    assert results[0].ok and sleeps.waits == [2.0]


async def test_fetch_stock_reads_products_and_variations(make_adapter):
    with _mock() as router:
        products = router.get(f"{API}/products").mock(side_effect=authed(
            httpx.Response(200, json=load("products_stock_list_constructed.json"))))
        router.get(f"{API}/products/22/variations").mock(side_effect=authed(
            httpx.Response(200, json=load("product_variations_stock_list_constructed.json"))))
        stock = await make_adapter().fetch_stock([
            StockLevel("93", 0, {"product_id": "93"}), StockLevel("87", 0, {}),
            StockLevel("23", 0, {"product_id": "22", "variation_id": "23"})])
    assert stock == {"93": 4, "23": 11}  # 87 does not manage stock: no figure
    assert products.calls[0].request.url.params["include"] == "93,87"
