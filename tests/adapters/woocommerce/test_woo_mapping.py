"""WooCommerce payload mapping: money strings and numbers, *_gmt times, the status table, refund lines."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.base import OrderStatus, RefundStatus
from adapters.errors import PayloadError
from adapters.woocommerce.mapping import map_order, map_order_status, map_refund

from woo_helpers import load

UTC = timezone.utc


def order_727():
    return load("order_rest_single_docs.json")


def order_723():
    return load("orders_rest_list_docs.json")[1]


def test_money_strings_become_minor_units():
    order = map_order(order_727())
    assert order.total_minor == 2935  # "29.35"
    assert order.currency == "USD"
    assert [l.total_minor for l in order.lines] == [600, 1200]


def test_numeric_line_price_and_subtotal_give_the_unit_price():
    first, second = map_order(order_727()).lines
    assert (first.quantity, first.unit_price_minor, first.discount_minor) == (2, 300, 0)  # price 3 (a number)
    assert (second.quantity, second.unit_price_minor) == (1, 1200)


def test_gmt_times_are_read_as_utc_and_local_ones_ignored():
    order = map_order(order_727())
    assert order.created_at == datetime(2017, 3, 22, 19, 28, 2, tzinfo=UTC)  # not the local 16:28:02
    assert order.updated_at == datetime(2017, 3, 22, 19, 28, 8, tzinfo=UTC)
    assert order.paid_at == datetime(2017, 3, 22, 19, 28, 8, tzinfo=UTC)


def test_sku_key_is_the_variation_else_the_product():
    simple, variation = map_order(order_727()).lines
    assert (simple.external_sku_key, simple.listing_ref) == ("93", {"product_id": "93"})
    assert (variation.external_sku_key, variation.listing_ref) == ("23", {"product_id": "22", "variation_id": "23"})


def test_empty_sku_is_none_and_a_set_one_is_kept():
    simple, variation = map_order(order_727()).lines
    assert simple.merchant_sku is None and variation.merchant_sku == "Bar3"


def test_line_ids_and_titles():
    lines = map_order(order_727()).lines
    assert [l.external_line_id for l in lines] == ["315", "316"]
    assert lines[1].title == "Ship Your Idea \u2013 Color: Black, Size: M Test"  # &ndash; decoded


def test_a_coupon_shows_as_line_discount():
    order = order_727()
    order["line_items"][0].update(subtotal="6.00", total="5.00", price=2.5)
    line = map_order(order).lines[0]
    assert (line.unit_price_minor, line.discount_minor, line.total_minor) == (300, 100, 500)


def test_an_uneven_subtotal_keeps_the_line_total_exact():
    order = order_727()
    order["line_items"][0].update(quantity=3, subtotal="10.00", total="10.00", price=3.3333333333)
    line = map_order(order).lines[0]
    assert line.total_minor == 1000
    assert line.unit_price_minor * line.quantity - line.discount_minor == line.total_minor


def test_a_product_deleted_from_the_shop_leaves_no_sku_key():
    order = order_727()
    order["line_items"][0].update(product_id=0, variation_id=0)
    line = map_order(order).lines[0]
    assert line.external_sku_key is None and line.listing_ref == {}


@pytest.mark.parametrize(("status", "expected"), [
    ("pending", OrderStatus.PENDING),
    ("on-hold", OrderStatus.PENDING),
    ("failed", OrderStatus.PENDING),
    ("checkout-draft", OrderStatus.PENDING),
    ("processing", OrderStatus.PAID),
    ("ready-for-pickup", OrderStatus.PAID),
    ("completed", OrderStatus.DELIVERED),
    ("cancelled", OrderStatus.CANCELLED),
    ("trash", OrderStatus.CANCELLED),
])
def test_status_table(status, expected):
    order = order_727()
    order["status"] = status
    assert map_order_status(order) is expected


def test_refunded_before_completion_is_cancelled():
    order = order_727()
    order["status"] = "refunded"
    snap = map_order(order)
    assert snap.status is OrderStatus.CANCELLED and snap.cancelled_at == snap.updated_at


def test_refunded_after_completion_stays_delivered():
    order = order_723()
    order["status"] = "refunded"
    snap = map_order(order)
    assert snap.status is OrderStatus.DELIVERED
    assert snap.delivered_at == datetime(2017, 3, 21, 19, 54, 51, tzinfo=UTC)


def test_an_unconfigured_plugin_status_is_judged_by_payment():
    paid, unpaid = order_727(), order_723()
    paid["status"] = unpaid["status"] = "awaiting-shipment"
    assert map_order_status(paid) is OrderStatus.PAID  # date_paid_gmt set
    assert map_order_status(unpaid) is OrderStatus.PENDING


def test_an_order_without_date_modified_gmt_is_a_payload_error():
    order = order_727()
    del order["date_modified_gmt"]
    with pytest.raises(PayloadError):
        map_order(order)


def test_refund_lines_turn_negative_quantities_positive_and_point_at_the_order_line():
    refunds = load("order_refunds_rest_list_docs.json")
    snap = map_refund(refunds[1], order_723())
    assert (snap.external_id, snap.order_external_id, snap.status) == ("724", "723", RefundStatus.SUCCEEDED)
    assert (snap.amount_minor, snap.currency) == (900, "USD")
    [line] = snap.lines
    assert (line.external_line_id, line.external_sku_key, line.quantity, line.amount_minor) == ("311", "87", 1, 900)
    assert line.restock == "return"  # order 723 was completed: the goods had left
    assert snap.updated_at == snap.created_at == datetime(2017, 3, 21, 19, 55, 37, tzinfo=UTC)


def test_an_amount_only_refund_has_no_lines():
    snap = map_refund(load("order_refunds_rest_list_docs.json")[0], order_723())
    assert (snap.external_id, snap.amount_minor, snap.lines) == ("726", 1000, [])


def test_a_refund_on_an_order_never_completed_releases_the_reservation():
    order = order_723()
    order.update(status="processing", date_completed_gmt=None)
    snap = map_refund(load("order_refunds_rest_list_docs.json")[1], order)
    assert snap.lines[0].restock == "cancel"
