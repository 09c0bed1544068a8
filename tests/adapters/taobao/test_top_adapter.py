"""The Taobao adapter: backward paging of the increment lists, refunds, stock push, declarations."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from adapters.base import Capability, RefundStatus, StockLevel, TimeWindow
from adapters.errors import PermanentError
from adapters.taobao.adapter import TaobaoAdapter
from top_fakes import error, load

UTC = timezone.utc
WINDOW = TimeWindow(datetime(2024, 6, 1, 0, 0, tzinfo=UTC), datetime(2024, 6, 1, 12, 0, 0, 250000, tzinfo=UTC))


def trades(total: int):
    rows = []
    for n in range(1, total + 1):
        row = copy.deepcopy(load("trade-3300000000000002.json"))
        row["tid"] = 3300000000100000 + n
        row["tid_str"] = str(row["tid"])
        rows.append(row)

    def handler(params):
        page, size = int(params["page_no"]), int(params["page_size"])
        chunk = rows[(page - 1) * size: page * size]
        return {"trades_sold_increment_get_response": {"total_results": total, "trades": {"trade": chunk}}}

    return handler


def test_declares_pull_and_push_but_no_webhooks():
    assert TaobaoAdapter.platform == "taobao"
    assert TaobaoAdapter.capabilities == {Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH,
                                          Capability.SHIPMENTS, Capability.CARRIER_LIST, Capability.FEES,
                                          Capability.STOCK_DELTA}
    assert TaobaoAdapter.max_window == timedelta(days=1)


async def test_trades_page_backwards_from_the_last_page_after_a_probe(adapter, fake):
    fake.on("taobao.trades.sold.increment.get", trades(120))
    seen, cursor = [], None
    while True:
        page = await adapter.fetch_orders(WINDOW, cursor)
        seen.extend(t.external_id for t in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [int(c["page_no"]) for c in fake.calls] == [1, 3, 2, 1]
    assert len(set(seen)) == 120
    first = fake.calls[0]
    assert (first["start_modified"], first["end_modified"]) == ("2024-06-01 08:00:00", "2024-06-01 20:00:01")
    assert first["use_has_next"] == "false" and first["page_size"] == "50"
    assert "orders.outer_sku_id" in first["fields"]


async def test_a_short_window_ends_after_one_call(adapter, fake):
    fake.on("taobao.trades.sold.increment.get", trades(0))
    page = await adapter.fetch_orders(WINDOW, None)
    assert page.items == [] and page.next_cursor is None


async def test_bad_cursor_is_refused(adapter, fake):
    fake.on("taobao.trades.sold.increment.get", trades(1))
    await adapter.fetch_orders(WINDOW, None)  # the route must be used once for the router check
    with pytest.raises(PermanentError):
        await adapter.fetch_orders(WINDOW, "page:two")


async def test_refunds_window_maps_each_refund(adapter, fake):
    rows = [load("refund-150000000000001.json"), load("refund-150000000000002.json")]
    fake.script("taobao.refunds.receive.get",
                {"refunds_receive_get_response": {"total_results": 2, "refunds": {"refund": rows}}})
    page = await adapter.fetch_refunds(WINDOW, None)
    assert [(r.external_id, r.lines[0].restock) for r in page.items] == [
        ("150000000000001", "return"), ("150000000000002", "cancel"),
    ]
    assert page.next_cursor is None
    assert "has_good_return" in fake.calls[0]["fields"]


async def test_fetch_refund_uses_refund_get(adapter, fake):
    fake.script("taobao.refund.get", {"refund_get_response": {"refund": load("refund-150000000000001.json")}})
    refund = await adapter.fetch_refund("150000000000001", None)
    assert refund is not None and refund.status is RefundStatus.SUCCEEDED
    assert fake.calls[0]["refund_id"] == "150000000000001"


async def test_push_stock_sends_one_full_update_per_listing_and_reports_each(adapter, fake):
    def handler(params):
        if params["num_iid"] == "2":
            return error(15, "Remote service error", "isv.item-not-exist", "商品不存在")
        return {"item_quantity_update_response": {"item": {"num_iid": int(params["num_iid"]), "modified": "2024-06-01 12:00:00"}}}

    fake.on("taobao.item.quantity.update", handler)
    levels = [
        StockLevel("s1", 7, {"num_iid": "1", "sku_id": "s1"}),
        StockLevel("2", 3, {"num_iid": "2"}),
        StockLevel("3", 0, {"num_iid": "3"}),
        StockLevel("s4", 1, {"sku_id": "s4"}),
    ]
    results = await adapter.push_stock(levels)
    assert [(r.external_sku_key, r.ok, r.error_kind) for r in results] == [
        ("s1", True, None), ("2", False, "permanent"), ("3", True, None), ("s4", False, "permanent"),
    ]
    sent = [(c["num_iid"], c.get("sku_id"), c["quantity"], c["type"]) for c in fake.calls]
    assert sent == [("1", "s1", "7", "1"), ("2", None, "3", "1"), ("3", None, "0", "1")]


async def test_push_stock_stops_calling_during_an_app_ban(adapter, fake, sleeps):
    fake.script("taobao.item.quantity.update", error(7, "App Call Limited", sub_msg="This ban will last for 60 more seconds"))
    results = await adapter.push_stock([StockLevel(str(n), 1, {"num_iid": str(n)}) for n in range(3)])
    assert [(r.error_kind, r.retry_after_s) for r in results] == [("throttled", 60.0)] * 3
    assert len(fake.calls) == 1
