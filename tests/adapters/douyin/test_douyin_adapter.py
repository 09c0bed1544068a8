"""DouyinAdapter against the fake gateway: pagination, fetch by id, push_stock per listing, registration."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import respx

from adapters.base import Capability, StockLevel, TimeWindow
from adapters.douyin.adapter import DouyinAdapter
from adapters.registry import BUILTINS, _check, _import
from douyin_fakes import BASE_URL, FakeGateway, fail, load, ok

T0 = datetime(2023, 11, 14, 22, 0, 0, tzinfo=timezone.utc)  # 1699999200
WINDOW = TimeWindow(T0, T0 + timedelta(hours=1))


def mock(gateway: FakeGateway, *methods: str) -> respx.MockRouter:
    router = respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL)
    for method in methods:
        router.post(path="/" + method.replace(".", "/")).mock(side_effect=gateway)
    return router


def orders(count: int, first: int) -> list[dict]:
    template = load("order-6920000000000000002.json")
    rows = []
    for n in range(first, first + count):
        row = copy.deepcopy(template)
        row["order_id"] = str(6920000000000100000 + n)
        rows.append(row)
    return rows


def test_registry_loads_it_with_its_capabilities():
    # Only this built-in: the registry's other adapters are other packages' business.
    cls = _check("douyin", _import(BUILTINS["douyin"]), "test")
    assert cls is DouyinAdapter
    assert cls.capabilities == {Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH,
                                Capability.WEBHOOKS, Capability.SHIPMENTS, Capability.CARRIER_LIST, Capability.FEES,
                                Capability.BILLS, Capability.STOCK_DELTA, Capability.STOCK_DELTA_IDEMPOTENT}
    assert cls.max_window == timedelta(hours=1)


async def test_fetch_orders_pages_until_total_is_reached(adapter, gateway):
    def search(params):
        page = params["page"]
        return ok({"page": page, "size": 100, "total": 150,
                   "shop_order_list": orders(100, 0) if page == 0 else orders(50, 100)})

    gateway.on("order.searchList", search)
    with mock(gateway, "order.searchList"):
        first = await adapter.fetch_orders(WINDOW, None)
        second = await adapter.fetch_orders(WINDOW, first.next_cursor)
    assert (len(first.items), first.next_cursor) == (100, "page:1")
    assert (len(second.items), second.next_cursor) == (50, None)
    assert len({o.external_id for o in first.items + second.items}) == 150
    params = gateway.calls[0][1]
    assert params == {"update_time_start": 1699999200, "update_time_end": 1700002800, "order_by": "update_time",
                      "order_asc": True, "page": 0, "size": 100}
    assert gateway.calls[1][1]["page"] == 1


async def test_fetch_orders_window_edges_round_outward(adapter, gateway):
    gateway.on("order.searchList", lambda p: ok({"page": 0, "size": 100, "total": 0, "shop_order_list": []}))
    window = TimeWindow(T0 + timedelta(milliseconds=400), T0 + timedelta(seconds=10, milliseconds=1))
    with mock(gateway, "order.searchList"):
        page = await adapter.fetch_orders(window, None)
    assert page.items == [] and page.next_cursor is None
    params = gateway.calls[0][1]
    assert (params["update_time_start"], params["update_time_end"]) == (1699999200, 1699999211)


async def test_fetch_order_reads_order_detail(adapter, gateway):
    gateway.on("order.orderDetail", lambda p: ok({"shop_order_detail": load("order-6920000000000000001.json")}))
    with mock(gateway, "order.orderDetail"):
        order = await adapter.fetch_order("6920000000000000001")
    assert gateway.calls == [("order.orderDetail", {"shop_order_id": "6920000000000000001"})]
    assert order.external_id == "6920000000000000001" and len(order.lines) == 2


async def test_fetch_refunds_pages_while_has_more(adapter, gateway):
    first_item, second_item = load("aftersale-7010000000000000001.json"), load("aftersale-7010000000000000002.json")
    gateway.on("afterSale.List",
               lambda p: ok({"items": [first_item], "has_more": True, "total": 2, "page": 0, "size": 100}),
               lambda p: ok({"items": [second_item], "has_more": False, "total": 2, "page": 1, "size": 100}))
    with mock(gateway, "afterSale.List"):
        first = await adapter.fetch_refunds(WINDOW, None)
        second = await adapter.fetch_refunds(WINDOW, first.next_cursor)
    assert [r.external_id for r in first.items] == ["7010000000000000001"] and first.next_cursor == "page:1"
    assert [r.external_id for r in second.items] == ["7010000000000000002"] and second.next_cursor is None
    assert gateway.calls[0][1] == {"update_start_time": 1699999200, "update_end_time": 1700002800,
                                   "order_by": ["update_time asc"], "page": 0, "size": 100}


async def test_fetch_refund_by_aftersale_id(adapter, gateway):
    item = load("aftersale-7010000000000000001.json")
    gateway.on("afterSale.List", lambda p: ok({"items": [item] if p["aftersale_id"] == "7010000000000000001" else [],
                                               "has_more": False}))
    with mock(gateway, "afterSale.List"):
        refund = await adapter.fetch_refund("7010000000000000001", None)
        missing = await adapter.fetch_refund("1", None)
    assert refund.order_external_id == "6920000000000000001" and missing is None


async def test_push_stock_gives_a_result_per_listing(adapter, gateway):
    def sync(params):
        return ok({}) if params["sku_id"] == 1760000000000000001 else fail(40004, "isv.business-failed:sku不存在")

    gateway.on("sku.syncStock", sync)
    levels = [
        StockLevel("1760000000000000001", 40, {"product_id": "3600000000000000001", "sku_id": "1760000000000000001"}),
        StockLevel("1760000000000000002", 5, {}),  # no product_id: cannot be addressed, nothing is sent
        StockLevel("1760000000000000009", 0, {"product_id": "3600000000000000009"}),  # sku_id from the key
    ]
    with mock(gateway, "sku.syncStock"):
        results = await adapter.push_stock(levels)
    assert [(r.external_sku_key, r.ok, r.error_kind) for r in results] == [
        ("1760000000000000001", True, None), ("1760000000000000002", False, "payload"),
        ("1760000000000000009", False, "permanent")]
    assert gateway.calls == [
        ("sku.syncStock", {"product_id": 3600000000000000001, "sku_id": 1760000000000000001, "stock_num": 40,
                           "incremental": False}),
        ("sku.syncStock", {"product_id": 3600000000000000009, "sku_id": 1760000000000000009, "stock_num": 0,
                           "incremental": False}),
    ]


async def test_push_stock_stops_sending_after_the_token_expired(adapter, gateway):
    gateway.on("sku.syncStock", lambda p: fail(40003, "isv.access-token-expired"))
    levels = [StockLevel(str(n), 1, {"product_id": "1", "sku_id": str(n)}) for n in (11, 12, 13)]
    with mock(gateway, "sku.syncStock"):
        results = await adapter.push_stock(levels)
    assert [r.error_kind for r in results] == ["auth_expired"] * 3
    assert len(gateway.calls) == 1
