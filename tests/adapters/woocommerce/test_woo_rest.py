"""WooCommerce REST resync: window parameters, X-WP-TotalPages paging, refunds through orders, errors."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest
import respx

from adapters.base import StoreContext, TimeWindow
from adapters.errors import AuthExpiredError, PayloadError, PermanentError
from adapters.woocommerce.adapter import WooCommerceAdapter, WooCommerceCredentials

from woo_helpers import API, BASE, KEY, SECRET, authed, load, make_store

WINDOW = TimeWindow(datetime(2017, 3, 21, tzinfo=timezone.utc), datetime(2017, 3, 23, tzinfo=timezone.utc))


def _mock():
    return respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE)


async def test_fetch_orders_sends_the_window_and_pages_by_total_pages(make_adapter):
    listed = load("orders_rest_list_docs.json")
    seen = []

    def orders(request):
        params = dict(request.url.params)
        seen.append(params)
        page = int(params["page"])
        return httpx.Response(200, json=[listed[page - 1]], headers={"X-WP-TotalPages": "2", "X-WP-Total": "2"})

    with _mock() as router:
        router.get(f"{API}/orders").mock(side_effect=authed(orders))
        adapter = make_adapter()
        first = await adapter.fetch_orders(WINDOW, None)
        second = await adapter.fetch_orders(WINDOW, first.next_cursor)
    assert [o.external_id for o in first.items] == ["727"] and first.next_cursor == "page:2"
    assert [o.external_id for o in second.items] == ["723"] and second.next_cursor is None
    assert seen[0] == {
        "modified_after": "2017-03-20T23:59:59",  # one second early: Woo's "after" is strict
        "modified_before": "2017-03-23T00:00:00",
        "dates_are_gmt": "true", "per_page": "100", "page": "1", "orderby": "id", "order": "asc",
    }
    assert seen[1]["page"] == "2"


async def test_a_page_without_total_pages_header_continues_only_when_full(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders").mock(side_effect=authed(httpx.Response(200, json=load("orders_rest_list_docs.json"))))
        page = await make_adapter().fetch_orders(WINDOW, None)
    assert len(page.items) == 2 and page.next_cursor is None


async def test_a_foreign_cursor_is_refused(make_adapter):
    with pytest.raises(PermanentError):
        await make_adapter().fetch_orders(WINDOW, "abc")


async def test_fetch_order_maps_order_727(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/727").mock(side_effect=authed(httpx.Response(200, json=load("order_rest_single_docs.json"))))
        order = await make_adapter().fetch_order("727")
    assert order is not None and order.total_minor == 2935


async def test_fetch_order_returns_none_for_an_unknown_id(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/9").mock(side_effect=authed(
            httpx.Response(404, json=load("error_invalid_order_id_constructed.json"))))
        assert await make_adapter().fetch_order("9") is None


async def test_a_missing_rest_route_is_a_configuration_error_not_a_missing_order(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/9").mock(side_effect=authed(
            httpx.Response(404, json=load("error_rest_no_route_constructed.json"))))
        with pytest.raises(PermanentError, match="base_url"):
            await make_adapter().fetch_order("9")


async def test_an_html_answer_is_a_payload_error(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/9").mock(side_effect=authed(httpx.Response(200, text="<html>maintenance</html>")))
        with pytest.raises(PayloadError):
            await make_adapter().fetch_order("9")


async def test_fetch_refunds_fetches_the_lines_of_orders_with_refunds(make_adapter):
    seen = []

    def orders(request):
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=load("orders_rest_list_docs.json"), headers={"X-WP-TotalPages": "1"})

    with _mock() as router:
        router.get(f"{API}/orders").mock(side_effect=authed(orders))
        refunds = router.get(f"{API}/orders/723/refunds").mock(side_effect=authed(
            httpx.Response(200, json=load("order_refunds_rest_list_docs.json"), headers={"X-WP-TotalPages": "1"})))
        page = await make_adapter().fetch_refunds(WINDOW, None)
    assert [(r.external_id, r.order_external_id, r.amount_minor) for r in page.items] == [
        ("726", "723", 1000), ("724", "723", 900)]
    assert refunds.call_count == 1  # order 727 has no refunds: no call for it
    assert seen[0]["_fields"] == "id,currency,status,date_completed_gmt,refunds"


async def test_fetch_refund_reads_the_refund_and_its_order_currency(make_adapter):
    refund_724 = load("order_refunds_rest_list_docs.json")[1]
    order = {k: load("orders_rest_list_docs.json")[1][k] for k in ("id", "currency", "status", "date_completed_gmt", "refunds")}
    with _mock() as router:
        router.get(f"{API}/orders/723/refunds/724").mock(side_effect=authed(httpx.Response(200, json=refund_724)))
        order_route = router.get(f"{API}/orders/723").mock(side_effect=authed(httpx.Response(200, json=order)))
        refund = await make_adapter().fetch_refund("724", "723")
    assert refund is not None and refund.lines[0].restock == "return"
    assert order_route.calls[0].request.url.params["_fields"] == "id,currency,status,date_completed_gmt,refunds"


async def test_fetch_refund_returns_none_for_an_unknown_refund(make_adapter):
    body = {"code": "woocommerce_rest_invalid_id", "message": "Invalid ID.", "data": {"status": 404}}
    with _mock() as router:
        router.get(f"{API}/orders/723/refunds/1").mock(side_effect=authed(httpx.Response(404, json=body)))
        assert await make_adapter().fetch_refund("1", "723") is None


async def test_a_wrong_key_pair_surfaces_as_auth_expired(make_adapter):
    with _mock() as router:
        router.get(f"{API}/orders/727").mock(side_effect=authed(httpx.Response(200, json={})))
        with pytest.raises(AuthExpiredError):
            await make_adapter(make_store(secret="cs_revoked")).fetch_order("727")


async def test_a_throttling_host_is_retried_then_recovers(make_adapter, sleeps):
    answers = iter([httpx.Response(429, headers={"Retry-After": "1"}),
                    httpx.Response(200, json=load("order_rest_single_docs.json"))])
    with _mock() as router:
        router.get(f"{API}/orders/727").mock(side_effect=authed(lambda request: next(answers)))
        order = await make_adapter().fetch_order("727")
    assert order is not None and sleeps.waits == [1.0]


async def test_a_store_without_base_url_says_so(http):
    store = StoreContext("s", None, WooCommerceCredentials(consumer_key=KEY, consumer_secret=SECRET), {})
    with pytest.raises(PermanentError, match="settings.base_url"):
        await WooCommerceAdapter(store, http).fetch_order("727")


async def test_a_plain_http_base_url_is_refused(http):
    store = StoreContext("s", None, WooCommerceCredentials(consumer_key=KEY, consumer_secret=SECRET),
                         {"base_url": "http://shop.example.test"})
    with pytest.raises(PermanentError, match="HTTPS"):
        await WooCommerceAdapter(store, http).fetch_order("727")


async def test_a_site_in_a_subdirectory_keeps_its_path(http):
    store = StoreContext("s", None, WooCommerceCredentials(consumer_key=KEY, consumer_secret=SECRET),
                         {"base_url": f"{BASE}/shop/"})
    with _mock() as router:
        router.get(f"/shop{API}/orders/727").mock(side_effect=authed(httpx.Response(200, json=load("order_rest_single_docs.json"))))
        assert (await WooCommerceAdapter(store, http).fetch_order("727")).external_id == "727"
