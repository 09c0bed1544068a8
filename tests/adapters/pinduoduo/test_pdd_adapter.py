"""The PDD adapter: backward paging of the increment lists, refunds, stock push, declarations."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from adapters.base import Capability, RefundStatus, StockLevel, TimeWindow
from adapters.errors import PermanentError
from adapters.pinduoduo.adapter import PinduoduoAdapter
from pdd_fakes import error, load

UTC = timezone.utc
WINDOW = TimeWindow(datetime(2024, 6, 1, 8, 0, tzinfo=UTC), datetime(2024, 6, 1, 8, 30, tzinfo=UTC))


def order_row(n: int) -> dict:
    row = copy.deepcopy(load("order-240601-100000000000001.json"))
    row["order_sn"] = f"240601-{n:015d}"
    return row


def pages_of(total: int, size: int = 100):
    """A handler serving ``total`` orders in pages of ``size``, like the increment list."""
    rows = [order_row(n) for n in range(1, total + 1)]

    def handler(params):
        page, page_size = int(params["page"]), int(params["page_size"])
        chunk = rows[(page - 1) * page_size: page * page_size]
        return {"order_sn_increment_get_response": {"order_sn_list": chunk, "total_count": total, "has_next": False}}

    return handler


def test_declares_pull_and_push_but_no_webhooks():
    assert PinduoduoAdapter.platform == "pinduoduo"
    assert PinduoduoAdapter.capabilities == {Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH,
                                             Capability.SHIPMENTS, Capability.CARRIER_LIST,
                                             Capability.REPLACEMENT_SHIPMENTS, Capability.FEES, Capability.BILLS,
                                             Capability.STOCK_DELTA}
    assert PinduoduoAdapter.max_window == timedelta(minutes=30)


async def test_orders_page_backwards_from_the_last_page_after_a_probe(adapter, fake):
    fake.on("pdd.order.number.list.increment.get", pages_of(250))
    seen, cursor, cursors = [], None, []
    while True:
        page = await adapter.fetch_orders(WINDOW, cursor)
        seen.extend(o.external_id for o in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
        cursors.append(cursor)
    assert [int(c["page"]) for c in fake.calls] == [1, 3, 2, 1]
    assert [json.loads(c)["page"] for c in cursors] == [3, 2, 1]
    assert all(c["page_size"] == "100" for c in fake.calls)
    assert set(seen) == {f"240601-{n:015d}" for n in range(1, 251)}
    first = fake.calls[0]
    assert first["start_updated_at"] == str(int(WINDOW.start.timestamp()))
    assert first["end_updated_at"] == str(int(WINDOW.end.timestamp()))
    assert first["use_has_next"] == "false"


async def test_a_window_with_one_page_ends_after_the_first_call(adapter, fake):
    fake.on("pdd.order.number.list.increment.get", pages_of(3))
    page = await adapter.fetch_orders(WINDOW, None)
    assert len(page.items) == 3 and page.next_cursor is None


async def test_windows_wider_than_thirty_minutes_are_refused_before_any_call(sleeps):
    import httpx
    import respx

    from pdd_fakes import BASE_URL, make_adapter

    wide = TimeWindow(WINDOW.start, WINDOW.start + timedelta(minutes=31))
    # assert_all_called is off on purpose: the route is there to prove it is NOT called.
    with respx.mock(assert_all_called=False, assert_all_mocked=True, base_url=BASE_URL) as router:
        route = router.post("/api/router")
        async with httpx.AsyncClient() as http:
            adapter = make_adapter(sleeps, http=http)
            with pytest.raises(PermanentError):
                await adapter.fetch_orders(wide, None)
            with pytest.raises(PermanentError):
                await adapter.fetch_refunds(wide, None)
    assert not route.called


async def test_fetch_order_returns_none_when_the_gateway_has_no_order_info(adapter, fake):
    fake.script("pdd.order.information.get", {"order_info_get_response": {}})
    assert await adapter.fetch_order("240601-000000000000000") is None


async def test_a_page_of_refunds_makes_no_detail_call_and_leaves_the_kind_pending(adapter, fake):
    rows = [load("refund-9100000001.json"), load("refund-9100000002.json")]
    fake.script("pdd.refund.list.increment.get",
                {"refund_increment_get_response": {"refund_list": rows, "total_count": 2}})
    page = await adapter.fetch_refunds(WINDOW, None)
    assert page.next_cursor is None
    refund_only, ret = page.items
    assert refund_only.amount_minor == 19900 and ret.amount_minor == 2995
    assert all(r.kind_pending and r.kind is None for r in page.items)
    [list_call] = fake.calls
    assert (list_call["after_sales_type"], list_call["after_sales_status"]) == ("1", "1")  # filter 1 = all


async def test_fetch_after_sale_reads_the_kind_from_the_detail_api(adapter, fake):
    fake.script("pdd.refund.information.get",
                {"refund_information_get_response": load("refund-information-9100000001.json")})
    detail = await adapter.fetch_after_sale("9100000001", "240602-100000000000002")
    assert (detail.kind, detail.restock) == ("refund_only", "cancel")  # shipping_status 0
    [call] = fake.calls
    assert call["type"] == "pdd.refund.information.get"
    assert (call["after_sales_id"], call["order_sn"]) == ("9100000001", "240602-100000000000002")


async def test_refund_amount_unit_setting_fen_applies_to_the_list(gateway, fake, sleeps):
    import httpx

    from pdd_fakes import make_adapter

    row = load("refund-9100000002.json")
    row["refund_amount"] = 2995  # the fen reading of the same refund
    fake.script("pdd.refund.list.increment.get",
                {"refund_increment_get_response": {"refund_list": [row], "total_count": 1}})
    async with httpx.AsyncClient() as http:
        adapter = make_adapter(sleeps, settings={"refund_amount_unit": "fen"}, http=http)
        page = await adapter.fetch_refunds(WINDOW, None)
    assert page.items[0].amount_minor == 2995


def test_unknown_refund_amount_unit_is_refused(sleeps):
    from pdd_fakes import make_adapter

    with pytest.raises(PermanentError):
        make_adapter(sleeps, settings={"refund_amount_unit": "jiao"})


async def test_fetch_refund_reads_the_list_filtered_by_order_sn(adapter, fake):
    other = load("refund-9100000001.json") | {"id": 9100000009, "after_sales_status": 11}
    fake.script("pdd.refund.list.increment.get",
                {"refund_increment_get_response": {"refund_list": [other, load("refund-9100000002.json")], "total_count": 2}})
    refund = await adapter.fetch_refund("9100000002", "240601-100000000000001")
    assert refund is not None and refund.external_id == "9100000002"
    assert refund.status is RefundStatus.SUCCEEDED
    assert fake.calls[0]["order_sn"] == "240601-100000000000001"


async def test_push_stock_sends_one_full_update_per_listing_and_reports_each(adapter, fake):
    def handler(params):
        if params["sku_id"] == "2":
            return error(50001, "在资源位上的商品不能减少库存")
        return {"goods_quantity_update_response": {"is_success": True}}

    fake.on("pdd.goods.quantity.update", handler)
    levels = [
        StockLevel("1", 10, {"goods_id": "100", "sku_id": "1"}),
        StockLevel("2", 0, {"goods_id": "100", "sku_id": "2"}),
        StockLevel("3", -4, {"goods_id": "101", "sku_id": "3"}),
        StockLevel("4", 5, {"sku_id": "4"}),  # no goods_id: never sent
    ]
    results = await adapter.push_stock(levels)
    assert [(r.external_sku_key, r.ok, r.error_kind) for r in results] == [
        ("1", True, None), ("2", False, "permanent"), ("3", True, None), ("4", False, "permanent"),
    ]
    assert [(c["goods_id"], c["sku_id"], c["quantity"], c["update_type"]) for c in fake.calls] == [
        ("100", "1", "10", "1"), ("100", "2", "0", "1"), ("101", "3", "0", "1"),
    ]


async def test_push_stock_stops_calling_once_the_token_expired(adapter, fake):
    fake.script("pdd.goods.quantity.update", error(10019, "access_token已过期"))
    levels = [StockLevel(str(n), 1, {"goods_id": "100", "sku_id": str(n)}) for n in range(3)]
    results = await adapter.push_stock(levels)
    assert [r.error_kind for r in results] == ["auth_expired"] * 3
    assert len(fake.calls) == 1
