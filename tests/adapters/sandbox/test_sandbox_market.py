"""The sandbox market itself: sells only against its own stock, versions every change, signs every event."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone

import pytest

from adapters.sandbox.market import SandboxError, SandboxMarket, sign_body
from sandbox_helpers import SECRET


def test_sell_takes_from_its_own_stock_and_refuses_beyond_it(market):
    order = market.sell("honey-500", 2)
    assert order is not None and order["status"] == "paid"
    assert market.stock("honey-500") == 1
    assert market.sell("honey-500", 2) is None  # short: no order, nothing changes
    assert market.stock("honey-500") == 1
    assert len(market.pending_deliveries()) == 1


def test_stale_pushed_stock_oversells_across_two_shops():
    # The cooperative has 5; both shops were told 5. Each sells against its own figure.
    shops = [SandboxMarket("a", SECRET), SandboxMarket("b", SECRET)]
    for shop in shops:
        shop.add_listing("tea", price_minor=100, stock=0)
        shop.set_stock("tea", 5)
    sold = sum(o["lines"][0]["quantity"] for shop in shops for o in [shop.sell("tea", 5)] if o)
    assert sold == 10


def test_updated_at_strictly_increases_even_when_the_clock_stands_still():
    frozen = datetime(2025, 1, 1, tzinfo=timezone.utc)
    market = SandboxMarket("frozen", SECRET, clock=lambda: frozen)
    market.add_listing("tea", price_minor=100, stock=10)
    order_id = market.sell("tea", 1, paid=False)["id"]
    versions = [market.get_order(order_id)["updated_at"]]
    for step in (market.pay, market.ship, market.deliver):
        versions.append(step(order_id)["updated_at"])
    versions.append(market.get_order(market.refund(order_id, restock="return")["order_id"])["updated_at"])
    moments = [datetime.fromisoformat(v) for v in versions]
    assert all(m.utcoffset().total_seconds() == 0 for m in moments)
    assert all(a < b for a, b in zip(moments, moments[1:]))


def test_every_change_queues_a_signed_delivery_with_a_unique_event_id(market):
    order_id = market.sell("tea-250", 1)["id"]
    market.ship(order_id)
    market.deliver(order_id)
    deliveries = market.take_deliveries()
    assert [d.topic for d in deliveries] == ["order.created", "order.shipped", "order.delivered"]
    assert len({d.headers["X-Sandbox-Event-Id"] for d in deliveries}) == 3
    for delivery in deliveries:
        expected = base64.b64encode(hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).digest()).decode()
        assert delivery.headers["X-Sandbox-Signature"] == expected == sign_body(SECRET, delivery.body)
        assert delivery.headers["X-Sandbox-Topic"] == delivery.topic
    assert market.take_deliveries() == []


def test_body_is_the_whole_order_in_integer_minor_units(market):
    market.sell("tea-250", 3)
    body = json.loads(market.take_deliveries()[0].body)
    assert body["total_minor"] == 29700 and isinstance(body["total_minor"], int)
    assert body["lines"][0] == {"id": f"{body['id']}-1", "sku_key": "tea-250", "merchant_sku": "TEA-QB-250G",
                                "title": "明前绿茶 250g", "quantity": 3, "unit_price_minor": 9900,
                                "total_minor": 29700}
    assert datetime.fromisoformat(body["updated_at"]).tzinfo is not None


def test_cancel_before_shipping_gives_the_stock_back(market):
    order_id = market.sell("tea-250", 4)["id"]
    assert market.stock("tea-250") == 6
    assert market.cancel(order_id)["status"] == "cancelled"
    assert market.stock("tea-250") == 10


def test_transitions_the_order_cannot_make_are_refused(market):
    order_id = market.sell("tea-250", 1, paid=False)["id"]
    with pytest.raises(SandboxError):
        market.ship(order_id)
    market.pay(order_id)
    market.ship(order_id)
    with pytest.raises(SandboxError):
        market.cancel(order_id)
    with pytest.raises(SandboxError):
        market.refund(order_id, restock="cancel")


def test_returned_goods_come_back_to_stock_once_the_refund_succeeds(market):
    order_id = market.sell("tea-250", 2)["id"]
    market.ship(order_id)
    refund = market.refund(order_id, {"tea-250": 1}, "return", status="open")
    assert market.stock("tea-250") == 8
    market.set_refund_status(refund["id"], "succeeded")
    assert market.stock("tea-250") == 9
    order = market.get_order(order_id)
    assert [r["status"] for r in order["refunds"]] == ["succeeded"]


def test_refund_cannot_exceed_what_was_sold(market):
    order_id = market.sell("tea-250", 2)["id"]
    market.refund(order_id, {"tea-250": 2})
    with pytest.raises(SandboxError):
        market.refund(order_id, {"tea-250": 1})


def test_registry_finds_a_market_by_name(market):
    assert SandboxMarket.get(market.name) is market
    with pytest.raises(SandboxError):
        SandboxMarket.get("nobody")


def test_set_stock_refuses_unknown_listings_and_negative_quantities(market):
    assert market.set_stock_batch([("tea-250", 1), ("nope", 1), ("honey-500", -1)]) == [
        None, "no listing 'nope' in sandbox " + repr(market.name), "negative stock -1 for honey-500"]
