"""SandboxAdapter: webhooks, paging in process and over HTTP (ASGITransport), stock push and read."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import respx

from adapters.base import Capability, OrderStatus, RefundStatus, StockLevel, TimeWindow
from adapters.errors import PayloadError, PermanentError, SignatureError
from adapters.registry import BUILTINS, _check, _import
from adapters.sandbox.adapter import SandboxAdapter
from adapters.sandbox.server import deliver_pending
from sandbox_helpers import SECRET, store_for


def window() -> TimeWindow:
    now = datetime.now(timezone.utc)
    return TimeWindow(now - timedelta(hours=1), now + timedelta(hours=1))


def test_registry_loads_it_with_its_capabilities():
    cls = _check("sandbox", _import(BUILTINS["sandbox"]), "test")
    assert cls is SandboxAdapter
    # Everything but what needs a platform's own lists or after-sales (a company list, replacement parcels).
    # No fees: its orders settle on the store's estimate (0 unless set) at once. No deltas: it has compare-and-set.
    assert cls.capabilities == set(Capability) - {Capability.CARRIER_LIST, Capability.REPLACEMENT_SHIPMENTS,
                                                  Capability.FEES, Capability.BILLS, Capability.STOCK_DELTA,
                                                  Capability.STOCK_DELTA_IDEMPOTENT}


# --- webhooks ----------------------------------------------------------------------------------------


def test_signature_verifies_and_a_tampered_body_fails(market, inproc_adapter):
    market.sell("tea-250", 1)
    [delivery] = market.take_deliveries()
    inproc_adapter.verify_webhook(delivery.headers, delivery.body, [SECRET])
    with pytest.raises(SignatureError):
        inproc_adapter.verify_webhook(delivery.headers, delivery.body.replace(b"9900", b"1"), [SECRET])


def test_previous_secret_verifies_during_rotation(market, inproc_adapter):
    market.sell("tea-250", 1)
    [delivery] = market.take_deliveries()
    inproc_adapter.verify_webhook(delivery.headers, delivery.body, ["rotated-new", SECRET])
    with pytest.raises(SignatureError):
        inproc_adapter.verify_webhook(delivery.headers, delivery.body, ["rotated-new"])


@pytest.mark.parametrize("signature", [None, "", "not base64!"])
def test_missing_or_garbled_signature_fails(inproc_adapter, signature):
    headers = {"X-Sandbox-Topic": "order.created"}
    if signature is not None:
        headers["X-Sandbox-Signature"] = signature
    with pytest.raises(SignatureError):
        inproc_adapter.verify_webhook(headers, b"{}", [SECRET])


def test_identity_is_the_event_id_and_topic(market, inproc_adapter):
    market.sell("tea-250", 1)
    [delivery] = market.take_deliveries()
    identity = inproc_adapter.webhook_identity({k.lower(): v for k, v in delivery.headers.items()}, delivery.body)
    assert identity.dedupe_key == delivery.event_id and identity.topic == "order.created"


def test_parse_webhook_gives_order_snapshots_with_status_and_lines(market, inproc_adapter):
    order_id = market.sell("tea-250", 2)["id"]
    market.ship(order_id)
    created, shipped = (inproc_adapter.parse_webhook(d.headers, d.body) for d in market.take_deliveries())
    [paid_order], [shipped_order] = created.orders, shipped.orders
    assert paid_order.status is OrderStatus.PAID and shipped_order.status is OrderStatus.SHIPPED
    assert shipped_order.updated_at > paid_order.updated_at
    [line] = shipped_order.lines
    assert (line.external_line_id, line.external_sku_key, line.merchant_sku, line.quantity,
            line.unit_price_minor, line.total_minor, line.listing_ref) == (
        f"{order_id}-1", "tea-250", "TEA-QB-250G", 2, 9900, 19800, {"sku_key": "tea-250"})
    assert shipped_order.total_minor == 19800 and shipped_order.currency == "CNY"
    assert shipped_order.shipped_at is not None and shipped_order.shipped_at.tzinfo is not None


def test_parse_webhook_carries_refunds_both_alone_and_inside_the_order(market, inproc_adapter):
    order_id = market.sell("tea-250", 2)["id"]
    market.ship(order_id)
    market.take_deliveries()
    market.refund(order_id, {"tea-250": 1}, "return")
    refund_delivery, order_delivery = (inproc_adapter.parse_webhook(d.headers, d.body)
                                       for d in market.take_deliveries())
    [refund] = refund_delivery.refunds
    assert refund.status is RefundStatus.SUCCEEDED and refund.amount_minor == 9900
    assert refund.order_external_id == order_id
    assert [(l.external_line_id, l.quantity, l.restock) for l in refund.lines] == [(f"{order_id}-1", 1, "return")]
    [order] = order_delivery.orders
    assert order.refunds == [refund]


def test_unknown_topic_or_broken_body_is_a_payload_error(inproc_adapter):
    with pytest.raises(PayloadError):
        inproc_adapter.parse_webhook({"X-Sandbox-Topic": "shop.renamed"}, b"{}")
    with pytest.raises(PayloadError):
        inproc_adapter.parse_webhook({"X-Sandbox-Topic": "order.created"}, b"[")
    with pytest.raises(PayloadError):
        inproc_adapter.parse_webhook({"X-Sandbox-Topic": "order.created"}, json.dumps(
            {"id": "1", "status": "paid", "currency": "CNY", "total_minor": "19.90", "lines": [],
             "updated_at": "2025-01-01T00:00:00+00:00"}).encode())


# --- pull --------------------------------------------------------------------------------------------


async def collect(fetch, win):
    pages, cursor = [], None
    while True:
        page = await fetch(win, cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def test_fetch_orders_pages_in_process(market, inproc_adapter):
    market.set_stock("tea-250", 1000)
    ids = {market.sell("tea-250", 1)["id"] for _ in range(230)}
    pages = await collect(inproc_adapter.fetch_orders, window())
    assert [len(p) for p in pages] == [100, 100, 30]
    assert {o.external_id for p in pages for o in p} == ids


async def test_fetch_orders_pages_over_http(market, http_adapter, requests_seen):
    market.set_stock("tea-250", 1000)
    ids = {market.sell("tea-250", 1)["id"] for _ in range(150)}
    pages = await collect(http_adapter.fetch_orders, window())
    assert [len(p) for p in pages] == [100, 50]
    assert {o.external_id for p in pages for o in p} == ids
    assert [r.url.path for r in requests_seen] == ["/orders", "/orders"]
    assert "cursor" in requests_seen[1].url.params


async def test_window_is_half_open_on_updated_at(market, inproc_adapter):
    order = market.sell("tea-250", 1)
    at = datetime.fromisoformat(order["updated_at"])
    assert (await inproc_adapter.fetch_orders(TimeWindow(at, at + timedelta(seconds=1)), None)).items
    assert not (await inproc_adapter.fetch_orders(TimeWindow(at - timedelta(seconds=1), at), None)).items


async def test_fetch_order_and_refund_over_http(market, http_adapter):
    order_id = market.sell("honey-500", 1)["id"]
    refund_id = market.refund(order_id, restock="cancel", status="open")["id"]
    order = await http_adapter.fetch_order(order_id)
    assert order.status is OrderStatus.PAID and order.refunds[0].status is RefundStatus.OPEN
    refund = await http_adapter.fetch_refund(refund_id, order_id)
    assert refund.lines[0].restock == "cancel"
    assert await http_adapter.fetch_order("404404") is None
    assert await http_adapter.fetch_refund("R0", None) is None
    [page] = await collect(http_adapter.fetch_refunds, window())
    assert [r.external_id for r in page] == [refund_id]


async def test_unknown_market_is_a_permanent_error():
    async with httpx.AsyncClient() as http:
        adapter = SandboxAdapter(store_for("inproc://no-such-market"), http)
        with pytest.raises(PermanentError):
            await adapter.fetch_order("1")


# --- stock -------------------------------------------------------------------------------------------


async def test_push_stock_then_sell_against_the_pushed_figure(market, inproc_adapter):
    results = await inproc_adapter.push_stock([StockLevel("tea-250", 2, {"sku_key": "tea-250"}),
                                               StockLevel("gone", 7)])
    assert [(r.external_sku_key, r.ok, r.error_kind) for r in results] == [
        ("tea-250", True, None), ("gone", False, "permanent")]
    assert market.sell("tea-250", 2) is not None
    assert market.sell("tea-250", 1) is None


async def test_push_stock_over_http_is_batched_with_a_result_per_listing(market, http_adapter, requests_seen):
    for n in range(149):
        market.add_listing(f"sku-{n}", price_minor=100)
    levels = [StockLevel(f"sku-{n}", n) for n in range(149)] + [StockLevel("tea-250", 0), StockLevel("nope", 1)]
    results = await http_adapter.push_stock(levels)
    assert len(results) == 151 and [r.ok for r in results] == [True] * 150 + [False]
    assert [r.url.path for r in requests_seen] == ["/stock", "/stock"]
    assert market.stock("sku-148") == 148 and market.stock("tea-250") == 0


async def test_fetch_stock_reads_the_market_in_process_and_over_http(market, inproc_adapter, http_adapter):
    market.set_stock("honey-500", 9)
    keys = [StockLevel("honey-500", 0), StockLevel("tea-250", 0), StockLevel("nope", 0)]
    assert await inproc_adapter.fetch_stock(keys) == {"honey-500": 9, "tea-250": 10}
    assert await http_adapter.fetch_stock(keys) == {"honey-500": 9, "tea-250": 10}


# --- webhook sender ----------------------------------------------------------------------------------


async def test_deliver_pending_posts_signed_events_and_requeues_failures(market, inproc_adapter):
    order_id = market.sell("tea-250", 1)["id"]
    market.ship(order_id)
    received: list[str] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        inproc_adapter.verify_webhook(request.headers, request.content, [SECRET])
        topic = request.headers["X-Sandbox-Topic"]
        received.append(topic)
        return httpx.Response(503 if topic == "order.shipped" else 200, json={"status": "accepted"})

    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url="https://coopsync.test") as router:
        router.post("/webhooks/sandbox/store-sb").mock(side_effect=receiver)
        async with httpx.AsyncClient() as client:
            report = await deliver_pending(market, "https://coopsync.test/webhooks/sandbox/store-sb", client)
    assert sorted(received) == ["order.created", "order.shipped"]
    assert (report.sent, report.failed) == (1, 1)
    assert [d.topic for d in market.pending_deliveries()] == ["order.shipped"]
