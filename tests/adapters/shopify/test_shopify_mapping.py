"""Shopify payload mapping: money to minor units, times to UTC, status table, refunds and restock types.
Status-table cases start from a real fixture and change only the fields the case is about.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from adapters.base import OrderStatus, RefundStatus
from adapters.errors import PayloadError
from adapters.shopify.mapping import map_order, map_refund

from shopify_helpers import load

UTC = timezone.utc


def created():
    return load("orders_create_webhook_activepieces.json")


def cancelled():
    return load("orders_cancelled_webhook_activepieces.json")


def rest_listed():
    return load("orders_rest_list_2026-07_shopify_app_js.json")["orders"][0]


# -- money, ids, times ------------------------------------------------------------------------------

def test_money_strings_become_minor_units():
    order = map_order(created())
    assert order.total_minor == 262995  # "2629.95"
    assert order.lines[0].unit_price_minor == 262995
    assert order.currency == "USD"


def test_times_become_aware_utc():
    order = map_order(created())
    assert order.created_at == datetime(2023, 3, 24, 16, 37, 26, tzinfo=UTC)  # 12:37:26-04:00
    assert order.updated_at == datetime(2023, 3, 24, 16, 37, 27, tzinfo=UTC)


def test_line_ids_sku_key_and_listing_ref_follow_the_conventions():
    [line] = map_order(created()).lines
    assert line.external_line_id == "13925006311734"
    assert line.external_sku_key == "44872881439030"  # variant_id
    assert line.merchant_sku == "sku-hosted-1"
    assert line.listing_ref == {"variant_id": "44872881439030"}
    assert line.shipped_quantity is None


def test_raw_payload_is_attached():
    payload = created()
    assert map_order(payload).raw == payload


def test_line_discount_is_the_sum_of_its_allocations_and_total_is_price_times_qty_minus_it():
    first, second = map_order(cancelled()).lines
    assert (first.unit_price_minor, first.discount_minor, first.total_minor) == (69995, 1000 + 10350, 58645)
    assert (second.quantity, second.discount_minor, second.total_minor) == (2, 20997, 2 * 69995 - 20997)


def test_empty_sku_is_none():
    assert all(line.merchant_sku is None for line in map_order(cancelled()).lines)


def test_eur_order_stays_eur():
    order = map_order(load("order_rest_create_eur_2026-07_shopify_app_js.json")["order"])
    assert order.currency == "EUR"
    assert order.total_minor == 23847
    assert order.lines[0].total_minor == 3 * 7499


def test_custom_line_without_variant_has_no_sku_key_and_no_listing_ref():
    [line] = map_order(load("order_rest_create_eur_2026-07_shopify_app_js.json")["order"]).lines
    assert line.external_sku_key is None
    assert line.merchant_sku is None
    assert line.listing_ref == {}


def test_total_is_the_original_total_not_the_current_one():
    order = map_order(rest_listed())
    assert order.total_minor == 59894  # total_price, not current_total_price 199.65


def test_old_payload_without_discount_allocations_uses_total_discount():
    order = map_order(load("order_rest_single_shopify_python_api.json")["order"])
    assert [line.discount_minor for line in order.lines] == [0, 0, 0]
    assert order.total_minor == 40994


def test_a_money_amount_with_too_many_decimals_is_a_payload_error():
    order = created()
    order["line_items"][0]["price"] = "2629.955"
    with pytest.raises(PayloadError):
        map_order(order)


# -- status table ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("financial", "expected"), [
    ("pending", OrderStatus.PENDING),
    ("authorized", OrderStatus.PAID),
    ("partially_paid", OrderStatus.PAID),
    ("paid", OrderStatus.PAID),
    ("partially_refunded", OrderStatus.PAID),
    ("refunded", OrderStatus.PAID),
    ("voided", OrderStatus.CANCELLED),
    ("expired", OrderStatus.CANCELLED),
])
def test_financial_status_table(financial, expected):
    order = created()
    order["financial_status"] = financial
    assert map_order(order).status is expected


def test_authorized_legacy_order_is_paid():
    assert map_order(load("order_rest_single_shopify_python_api.json")["order"]).status is OrderStatus.PAID


def test_voided_without_cancel_is_cancelled_at_its_last_update():
    order = created()
    order["financial_status"] = "voided"
    snap = map_order(order)
    assert snap.cancelled_at == snap.updated_at


def test_cancelled_at_wins_over_payment():
    snap = map_order(cancelled())
    assert snap.status is OrderStatus.CANCELLED
    assert snap.cancelled_at == datetime(2023, 3, 24, 22, 8, 18, tzinfo=UTC)


def test_unknown_financial_status_is_a_payload_error():
    order = created()
    order["financial_status"] = "mystery"
    with pytest.raises(PayloadError, match="financial_status"):
        map_order(order)


def _fulfilled(shipment_statuses):
    order = rest_listed()
    template = order["fulfillments"][0]
    order["fulfillments"] = []
    for n, shipment in enumerate(shipment_statuses):
        f = copy.deepcopy(template)
        f.update(id=1000 + n, status="success", shipment_status=shipment,
                 created_at=f"2025-04-0{n + 2}T10:00:00-05:00", updated_at=f"2025-04-0{n + 5}T10:00:00-05:00")
        order["fulfillments"].append(f)
    order["fulfillment_status"] = "fulfilled"
    return order


def test_fulfilled_order_is_shipped_from_its_first_fulfillment():
    snap = map_order(_fulfilled(["in_transit", "delivered"]))
    assert snap.status is OrderStatus.SHIPPED
    assert snap.shipped_at == datetime(2025, 4, 2, 15, 0, tzinfo=UTC)
    assert snap.delivered_at is None


def test_fulfilled_order_is_delivered_when_every_shipment_is_delivered():
    snap = map_order(_fulfilled(["delivered", "delivered"]))
    assert snap.status is OrderStatus.DELIVERED
    assert snap.delivered_at == datetime(2025, 4, 6, 15, 0, tzinfo=UTC)


def test_failed_fulfillments_do_not_count_as_shipped():
    order = _fulfilled(["delivered"])
    failed = copy.deepcopy(order["fulfillments"][0])
    failed.update(id=2000, status="failure", shipment_status=None)
    order["fulfillments"].append(failed)
    assert map_order(order).status is OrderStatus.DELIVERED


def test_partial_fulfilment_keeps_paid_and_sets_shipped_quantity_per_line():
    order = rest_listed()
    order["financial_status"] = "paid"
    order["fulfillment_status"] = "partial"
    order["fulfillments"][0]["status"] = "success"
    snap = map_order(order)
    assert snap.status is OrderStatus.PAID
    assert [(l.external_line_id, l.shipped_quantity) for l in snap.lines] == [
        ("466157049", 1), ("518995019", 0), ("703073504", 0)]
    assert snap.shipped_at is not None


# -- refunds ----------------------------------------------------------------------------------------

def test_cancelled_order_refund_lines_are_no_restock_with_numeric_subtotals():
    [refund] = map_order(cancelled()).refunds
    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.order_external_id == "5324790137142"
    assert [(l.external_line_id, l.quantity, l.amount_minor, l.restock) for l in refund.lines] == [
        ("13924936679734", 1, 58645, "no_restock"),  # subtotal 586.45 (a JSON number)
        ("13924936712502", 2, 118993, "no_restock"),  # subtotal 1189.93
    ]
    assert refund.amount_minor == 180638  # the refund transaction, shipping included


def test_refund_without_transactions_adds_lines_and_shipping_adjustment():
    order = cancelled()
    order["refunds"][0]["transactions"] = []
    [refund] = map_order(order).refunds
    assert refund.amount_minor == 58645 + 118993 + 3000  # order_adjustments "-30.00" refunds shipping


def test_legacy_restock_maps_to_return():
    [refund] = map_order(rest_listed()).refunds
    assert [l.restock for l in refund.lines] == ["return", "return"]
    assert refund.amount_minor == 20900
    assert refund.lines[0].amount_minor == 19566  # 195.66


def test_refund_rest_create_maps_no_restock_and_transaction_amount():
    refund = map_refund(load("refund_rest_create_2026-07_shopify_app_js.json")["refund"])
    assert (refund.external_id, refund.order_external_id, refund.currency) == ("929361472", "450789469", "USD")
    assert refund.amount_minor == 4194
    [line] = refund.lines
    assert (line.external_line_id, line.external_sku_key, line.merchant_sku) == ("518995019", "49148385", "IPOD2008RED")
    assert (line.quantity, line.amount_minor, line.restock) == (1, 0, "no_restock")
    assert refund.updated_at == datetime(2025, 4, 2, 16, 38, 34, tzinfo=UTC)


def test_old_refund_with_restock_true_and_no_restock_type_maps_to_return():
    refund = map_refund(load("refund_rest_single_shopify_python_api.json")["refund"])
    assert [l.restock for l in refund.lines] == ["return", "return"]
    assert refund.amount_minor == 20900
    assert refund.updated_at == refund.created_at == datetime(2016, 6, 20, 17, 35, 6, tzinfo=UTC)


@pytest.mark.parametrize(("restock_type", "expected"), [
    ("cancel", "cancel"), ("return", "return"), ("no_restock", "no_restock"), ("legacy_restock", "return")])
def test_restock_type_table(restock_type, expected):
    payload = load("refund_rest_create_2026-07_shopify_app_js.json")["refund"]
    payload["refund_line_items"][0]["restock_type"] = restock_type
    assert map_refund(payload).lines[0].restock == expected


@pytest.mark.parametrize(("states", "expected"), [
    (["pending"], RefundStatus.OPEN),
    (["failure"], RefundStatus.CLOSED),
    (["failure", "success"], RefundStatus.SUCCEEDED),
])
def test_refund_status_follows_its_refund_transactions(states, expected):
    payload = load("refund_rest_create_2026-07_shopify_app_js.json")["refund"]
    template = payload["transactions"][0]
    payload["transactions"] = [dict(template, id=n, status=s) for n, s in enumerate(states)]
    assert map_refund(payload).status is expected


def test_embedded_refund_uses_the_order_currency():
    order = load("order_rest_create_eur_2026-07_shopify_app_js.json")["order"]
    order["refunds"] = [load("refund_rest_create_2026-07_shopify_app_js.json")["refund"]]
    order["refunds"][0]["transactions"] = []
    assert map_order(order).refunds[0].currency == "EUR"
