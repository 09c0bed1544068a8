"""Shopify stock: inventory_levels/set per listing, variant lookup, per-listing results, inventory read."""

from __future__ import annotations

import json

import httpx
import respx

from adapters.base import StockLevel

from shopify_helpers import API, BASE, authed, load, make_store


def _mock():
    return respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE)


def _set_answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    answer = load("inventory_level_set_2026-07_shopify_app_js.json")
    answer["inventory_level"].update(body)
    return httpx.Response(200, json=answer)


async def test_push_stock_sets_the_level_of_the_inventory_item_at_the_store_location(make_adapter):
    with _mock() as router:
        route = router.post(f"{API}/inventory_levels/set.json").mock(side_effect=authed(_set_answer))
        results = await make_adapter().push_stock(
            [StockLevel("39072856", 42, {"variant_id": "39072856", "inventory_item_id": "808950810"})])
    assert json.loads(route.calls[0].request.content) == {
        "location_id": 655441491, "inventory_item_id": 808950810, "available": 42}
    assert [(r.external_sku_key, r.ok) for r in results] == [("39072856", True)]


async def test_push_stock_looks_up_the_inventory_item_of_a_variant_once(make_adapter):
    with _mock() as router:
        variant = router.get(f"{API}/variants/39072856.json").mock(side_effect=authed(
            httpx.Response(200, json=load("variant_rest_single_constructed.json"))))
        route = router.post(f"{API}/inventory_levels/set.json").mock(side_effect=authed(_set_answer))
        adapter = make_adapter()
        await adapter.push_stock([StockLevel("39072856", 5, {"variant_id": "39072856"})])
        results = await adapter.push_stock([StockLevel("39072856", 4, {})])  # sku key is the variant id
    assert variant.call_count == 1
    assert [json.loads(c.request.content)["inventory_item_id"] for c in route.calls] == [808950810, 808950810]
    assert results[0].ok


async def test_listing_location_wins_over_the_store_location(make_adapter):
    with _mock() as router:
        route = router.post(f"{API}/inventory_levels/set.json").mock(side_effect=authed(_set_answer))
        await make_adapter().push_stock([StockLevel("1", 3, {"inventory_item_id": "7", "location_id": "905684977"})])
    assert json.loads(route.calls[0].request.content)["location_id"] == 905684977


async def test_a_failing_listing_does_not_fail_the_others(make_adapter):
    def answer(request):
        body = json.loads(request.content)
        if body["inventory_item_id"] == 2:
            return httpx.Response(422, json=load("errors_inventory_untracked_constructed.json"))
        return _set_answer(request)

    with _mock() as router:
        router.post(f"{API}/inventory_levels/set.json").mock(side_effect=authed(answer))
        router.get(f"{API}/variants/404.json").mock(side_effect=authed(httpx.Response(404, json={"errors": "Not Found"})))
        results = await make_adapter().push_stock([
            StockLevel("a", 1, {"inventory_item_id": "1"}),
            StockLevel("b", 1, {"inventory_item_id": "2"}),
            StockLevel("404", 1, {"variant_id": "404"}),
            StockLevel("c", -3, {"inventory_item_id": "3"}),
        ])
    assert [(r.external_sku_key, r.ok, r.error_kind) for r in results] == [
        ("a", True, None), ("b", False, "permanent"), ("404", False, "permanent"), ("c", True, None)]
    assert "inventory tracking" in results[1].error


async def test_a_listing_without_any_location_fails_with_advice(make_adapter):
    results = await make_adapter(make_store()).push_stock([StockLevel("a", 1, {"inventory_item_id": "1"})])
    assert not results[0].ok and "location_id" in results[0].error


async def test_a_revoked_token_fails_every_listing_after_one_call(make_adapter):
    with _mock() as router:
        route = router.post(f"{API}/inventory_levels/set.json").mock(side_effect=authed(_set_answer))
        results = await make_adapter(make_store(token="revoked", location_id="1")).push_stock(
            [StockLevel(k, 1, {"inventory_item_id": k}) for k in ("1", "2", "3")])
    assert route.call_count == 1
    assert [r.error_kind for r in results] == ["auth_expired"] * 3


async def test_a_long_throttle_stops_the_push_and_reports_when_to_retry(make_adapter):
    with _mock() as router:
        route = router.post(f"{API}/inventory_levels/set.json").mock(
            side_effect=authed(httpx.Response(429, headers={"Retry-After": "20"})))
        results = await make_adapter().push_stock([StockLevel(k, 1, {"inventory_item_id": k}) for k in ("1", "2")])
    assert route.call_count == 1
    assert [(r.error_kind, r.retry_after_s) for r in results] == [("throttled", 20.0), ("throttled", 20.0)]


async def test_push_stock_recovers_from_a_short_throttle(make_adapter, sleeps):
    answers = iter([httpx.Response(429, headers={"Retry-After": "1.5"})])

    def answer(request):
        return next(answers, None) or _set_answer(request)

    with _mock() as router:
        router.post(f"{API}/inventory_levels/set.json").mock(side_effect=authed(answer))
        results = await make_adapter().push_stock([StockLevel("1", 1, {"inventory_item_id": "1"})])
    assert results[0].ok and sleeps.waits == [1.5]


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
