"""Shopify Admin REST resync: windows and page_info paging, refunds through orders, errors and throttling."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest
import respx

from adapters.base import StoreContext, TimeWindow
from adapters.errors import AuthExpiredError, PermanentError, ThrottledError
from adapters.shopify.adapter import ShopifyAdapter, ShopifyCredentials

from shopify_helpers import API, BASE, authed, load, make_store

WINDOW = TimeWindow(datetime(2025, 4, 1, tzinfo=timezone.utc), datetime(2025, 4, 2, tzinfo=timezone.utc))
NEXT_LINK = f'<{BASE}{API}/orders.json?page_info=abc123&limit=250>; rel="next"'


def _mock():
    return respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE)


async def test_fetch_orders_sends_the_window_and_follows_page_info(make_adapter):
    listed = load("orders_rest_list_2026-07_shopify_app_js.json")
    second = {"orders": [load("order_rest_create_eur_2026-07_shopify_app_js.json")["order"]]}
    seen = []

    def orders(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        if "page_info" in request.url.params:
            return httpx.Response(200, json=second)
        return httpx.Response(200, json=listed, headers={"Link": NEXT_LINK})

    with _mock() as router:
        router.get(f"{API}/orders.json").mock(side_effect=authed(orders))
        adapter = make_adapter()
        first = await adapter.fetch_orders(WINDOW, None)
        last = await adapter.fetch_orders(WINDOW, first.next_cursor)
    assert [o.external_id for o in first.items] == ["450789469"]
    assert first.next_cursor == "abc123"
    assert [o.external_id for o in last.items] == ["1073459976"]
    assert last.next_cursor is None
    assert seen[0] == {"status": "any", "updated_at_min": "2025-04-01T00:00:00+00:00",
                       "updated_at_max": "2025-04-02T00:00:00+00:00", "limit": "250"}
    assert seen[1] == {"page_info": "abc123", "limit": "250"}  # no filters alongside page_info


async def test_fetch_order_returns_none_on_404(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/1.json").mock(side_effect=authed(httpx.Response(404, json={"errors": "Not Found"})))
        assert await make_adapter().fetch_order("1") is None


async def test_fetch_order_maps_the_wrapped_order(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/1073459976.json").mock(
            side_effect=authed(httpx.Response(200, json=load("order_rest_create_eur_2026-07_shopify_app_js.json"))))
        order = await make_adapter().fetch_order("1073459976")
    assert order is not None and order.currency == "EUR"


async def test_fetch_refunds_returns_the_refunds_of_orders_updated_in_the_window(make_adapter):
    seen = []

    def orders(request):
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=load("orders_rest_list_2026-07_shopify_app_js.json"))

    with _mock() as router:
        router.get(f"{API}/orders.json").mock(side_effect=authed(orders))
        page = await make_adapter().fetch_refunds(WINDOW, None)
    assert [(r.external_id, r.order_external_id) for r in page.items] == [("509562969", "450789469")]
    assert page.next_cursor is None
    assert seen[0]["fields"] == "id,currency,updated_at,refunds"
    assert seen[0]["status"] == "any"


async def test_fetch_refund_reads_it_under_its_order(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/450789469/refunds/929361472.json").mock(
            side_effect=authed(httpx.Response(200, json=load("refund_rest_create_2026-07_shopify_app_js.json"))))
        refund = await make_adapter().fetch_refund("929361472", "450789469")
    assert refund is not None and refund.amount_minor == 4194


async def test_fetch_refund_without_order_id_is_permanent(make_adapter):
    with pytest.raises(PermanentError):
        await make_adapter().fetch_refund("929361472", None)


async def test_a_wrong_token_surfaces_as_auth_expired(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders.json").mock(side_effect=authed(httpx.Response(200, json={"orders": []})))
        with pytest.raises(AuthExpiredError):
            await make_adapter(make_store(token="revoked")).fetch_orders(WINDOW, None)


async def test_a_short_429_is_retried_after_retry_after_then_recovers(make_adapter, sleeps):
    answers = iter([httpx.Response(429, headers={"Retry-After": "2.0"}, json={"errors": "Exceeded 2 calls per second"}),
                    httpx.Response(200, json={"orders": []})])
    with _mock() as router:
        route = router.get(f"{API}/orders.json").mock(side_effect=authed(lambda request: next(answers)))
        page = await make_adapter().fetch_orders(WINDOW, None)
    assert page.items == [] and route.call_count == 2
    assert sleeps.waits == [2.0]


async def test_a_long_429_surfaces_as_throttled_with_its_delay(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders.json").mock(side_effect=authed(httpx.Response(429, headers={"Retry-After": "30"})))
        with pytest.raises(ThrottledError) as info:
            await make_adapter().fetch_orders(WINDOW, None)
    assert info.value.retry_after_s == 30.0


async def test_a_nearly_full_call_bucket_slows_the_next_call(make_adapter, sleeps):
    with _mock() as router:
        router.get(f"{API}/orders/1.json").mock(side_effect=authed(httpx.Response(
            200, json=load("order_rest_create_eur_2026-07_shopify_app_js.json"),
            headers={"X-Shopify-Shop-Api-Call-Limit": "39/40"})))
        adapter = make_adapter()
        await adapter.fetch_order("1")
        assert sleeps.waits == []  # nothing to wait for before the first call
        await adapter.fetch_order("1")
    assert sleeps.waits == [2.0]  # 4 slots short of the headroom at 2 calls/s


async def test_a_roomy_call_bucket_does_not_wait(make_adapter, sleeps):
    with _mock() as router:
        router.get(f"{API}/orders/1.json").mock(side_effect=authed(httpx.Response(
            200, json=load("order_rest_create_eur_2026-07_shopify_app_js.json"),
            headers={"X-Shopify-Shop-Api-Call-Limit": "12/40"})))
        adapter = make_adapter()
        await adapter.fetch_order("1")
        await adapter.fetch_order("1")
    assert sleeps.waits == []


async def test_a_5xx_is_retried_then_recovers(make_adapter, sleeps):
    answers = iter([httpx.Response(503), httpx.Response(200, json={"orders": []})])
    with _mock() as router:
        router.get(f"{API}/orders.json").mock(side_effect=authed(lambda request: next(answers)))
        assert (await make_adapter().fetch_orders(WINDOW, None)).items == []
    assert len(sleeps.waits) == 1


async def test_base_url_setting_overrides_the_shop_domain(http):
    store = StoreContext("s", "qinba-tea.myshopify.com", ShopifyCredentials(access_token="shpat_test_token"),
                         {"base_url": "https://sandbox.example.test"})
    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url="https://sandbox.example.test") as router:
        router.get("/admin/api/2026-07/orders/1.json").mock(side_effect=authed(httpx.Response(404)))
        assert await ShopifyAdapter(store, http).fetch_order("1") is None


async def test_api_version_comes_from_the_credentials(http):
    store = StoreContext("s", "qinba-tea", ShopifyCredentials(access_token="shpat_test_token", api_version="2026-10"), {})
    with _mock() as router:  # a bare handle becomes qinba-tea.myshopify.com
        router.get("/admin/api/2026-10/orders/1.json").mock(side_effect=authed(httpx.Response(404)))
        assert await ShopifyAdapter(store, http).fetch_order("1") is None


async def test_a_store_without_shop_domain_or_base_url_says_what_to_set(http):
    store = StoreContext("s", None, ShopifyCredentials(access_token="x"), {})
    with pytest.raises(PermanentError, match="external_shop_id"):
        await ShopifyAdapter(store, http).fetch_order("1")
