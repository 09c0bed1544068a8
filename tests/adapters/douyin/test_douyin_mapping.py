"""Mapping of Douyin orders and after-sales: fen stays fen, Unix seconds become UTC, status tables."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from adapters.base import OrderStatus, RefundStatus
from adapters.douyin.mapping import kind_for, order_from_douyin, refund_from_douyin, refund_status, restock_for
from adapters.errors import PayloadError
from douyin_fakes import load

PARTLY_SHIPPED = "order-6920000000000000001.json"
COMPLETED = "order-6920000000000000002.json"
RETURN_SUCCEEDED = "aftersale-7010000000000000001.json"
CANCEL_OPEN = "aftersale-7010000000000000002.json"


def test_amounts_are_already_fen_and_stay_integers():
    order = order_from_douyin(load(PARTLY_SHIPPED))
    assert order.currency == "CNY" and order.total_minor == 25800
    tea = order.lines[0]
    assert (tea.unit_price_minor, tea.quantity, tea.discount_minor, tea.total_minor) == (9900, 2, 2000, 17800)
    assert order.platform_fee_minor is None


def test_unix_seconds_become_aware_utc():
    order = order_from_douyin(load(PARTLY_SHIPPED))
    assert order.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert order.paid_at == datetime(2023, 11, 14, 22, 14, 20, tzinfo=timezone.utc)
    assert order.updated_at == datetime(2023, 11, 14, 23, 13, 20, tzinfo=timezone.utc)
    assert order.updated_at.utcoffset().total_seconds() == 0


def test_partly_shipped_order_is_paid_with_per_line_shipped_quantities():
    order = order_from_douyin(load(PARTLY_SHIPPED))
    assert order.status is OrderStatus.PAID
    assert [(line.external_line_id, line.shipped_quantity) for line in order.lines] == [
        ("6920000000000000011", 2), ("6920000000000000012", 0)]


def test_partly_shipped_without_logistics_falls_back_to_each_sku_order_status():
    raw = load(PARTLY_SHIPPED)
    del raw["logistics_info"]
    order = order_from_douyin(raw)
    assert [line.shipped_quantity for line in order.lines] == [2, 0]


def test_lines_carry_sku_id_merchant_code_and_listing_ref():
    first, second = order_from_douyin(load(PARTLY_SHIPPED)).lines
    assert first.external_sku_key == "1760000000000000001"
    assert first.merchant_sku == "TEA-QB-250G"
    assert first.listing_ref == {"product_id": "3600000000000000001", "sku_id": "1760000000000000001"}
    assert second.merchant_sku == "HONEY-500G"  # empty `code` falls back to out_sku_id
    assert first.title == "秦巴明前绿茶 250g"


def test_completed_order_is_delivered_at_buyer_receipt():
    order = order_from_douyin(load(COMPLETED))
    assert order.status is OrderStatus.DELIVERED
    assert order.delivered_at == datetime.fromtimestamp(1700500000, tz=timezone.utc)
    assert order.shipped_at == datetime.fromtimestamp(1700090000, tz=timezone.utc)
    assert order.lines[0].shipped_quantity is None  # follows the order
    assert order.raw["order_id"] == "6920000000000000002"


@pytest.mark.parametrize(("code", "status"), [
    (1, OrderStatus.PENDING), (105, OrderStatus.PAID), (2, OrderStatus.PAID), (101, OrderStatus.PAID),
    (3, OrderStatus.SHIPPED), (4, OrderStatus.CANCELLED), (5, OrderStatus.DELIVERED),
])
def test_order_status_table(code, status):
    raw = load(COMPLETED)
    raw["order_status"] = code
    assert order_from_douyin(raw).status is status


def test_unknown_order_status_is_a_payload_error():
    raw = load(COMPLETED)
    raw["order_status"] = 999
    with pytest.raises(PayloadError):
        order_from_douyin(raw)


def test_fractional_fen_is_refused():
    raw = load(COMPLETED)
    raw["pay_amount"] = 39.9
    with pytest.raises(PayloadError):
        order_from_douyin(raw)


def test_return_and_refund_that_succeeded_puts_goods_back():
    refund = refund_from_douyin(load(RETURN_SUCCEEDED))
    assert refund.external_id == "7010000000000000001"
    assert refund.order_external_id == "6920000000000000001"
    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.amount_minor == 8900
    assert refund.updated_at == datetime.fromtimestamp(1700900000, tz=timezone.utc)
    [line] = refund.lines
    assert (line.external_line_id, line.merchant_sku, line.quantity, line.amount_minor, line.restock) == (
        "6920000000000000011", "TEA-QB-250G", 1, 8900, "return")


def test_refund_before_shipping_is_cancel_and_open_from_flat_order_info():
    refund = refund_from_douyin(load(CANCEL_OPEN))
    assert refund.status is RefundStatus.OPEN
    [line] = refund.lines
    assert (line.external_line_id, line.external_sku_key, line.quantity, line.amount_minor, line.restock) == (
        "6920000000000000012", "1760000000000000002", 1, 8000, "cancel")


def test_refund_amount_includes_returned_postage():
    raw = copy.deepcopy(load(RETURN_SUCCEEDED))
    raw["aftersale_info"]["refund_post_amount"] = 1000
    assert refund_from_douyin(raw).amount_minor == 9900


@pytest.mark.parametrize(("aftersale_status", "refund_code", "status"), [
    (12, None, RefundStatus.SUCCEEDED), (6, 3, RefundStatus.SUCCEEDED),
    (27, 1, RefundStatus.CLOSED), (28, 1, RefundStatus.CLOSED), (29, None, RefundStatus.CLOSED),
    (51, None, RefundStatus.CLOSED), (7, 4, RefundStatus.CLOSED), (14, None, RefundStatus.CLOSED),
    (6, 1, RefundStatus.OPEN), (7, 2, RefundStatus.OPEN), (11, None, RefundStatus.OPEN),
])
def test_refund_status_table(aftersale_status, refund_code, status):
    assert refund_status(aftersale_status, refund_code) is status


@pytest.mark.parametrize(("aftersale_type", "kind", "restock"), [
    (2, "refund_only", "cancel"), (1, "refund_only", "no_restock"),
    # A return brings its goods back whatever its status; when they count as back is return_status's.
    (0, "return", "return"), (3, "exchange", "return"),
    (6, "price_protection", "no_restock"), (7, "reship", "no_restock"), (8, "repair", "no_restock"),
    (4, "refund_only", "cancel"), (5, "refund_only", "cancel"),
])
def test_kind_and_restock_by_aftersale_type(aftersale_type, kind, restock):
    assert (kind_for(aftersale_type), restock_for(aftersale_type)) == (kind, restock)


def test_an_unknown_aftersale_type_is_a_payload_error():
    with pytest.raises(PayloadError):
        kind_for(99)


@pytest.mark.parametrize(("aftersale_type", "aftersale_status", "return_status", "replacement"), [
    (0, 7, "awaiting_goods", None), (0, 11, "awaiting_goods", None), (0, 12, "received", None),
    (3, 8, "received", "due"), (3, 13, "received", "shipped"), (3, 28, None, "cancelled"),
    (7, 8, None, "due"), (7, 14, None, "shipped"), (1, 12, None, None),
])
def test_return_and_replacement_status_follow_the_aftersale_status(aftersale_type, aftersale_status,
                                                                   return_status, replacement):
    raw = copy.deepcopy(load(RETURN_SUCCEEDED))
    raw["aftersale_info"].update(aftersale_type=aftersale_type, aftersale_status=aftersale_status, refund_status=1)
    refund = refund_from_douyin(raw)
    assert (refund.return_status, refund.replacement_status) == (return_status, replacement)


def test_after_sale_without_order_is_a_payload_error():
    raw = copy.deepcopy(load(CANCEL_OPEN))
    raw["order_info"] = {}
    with pytest.raises(PayloadError):
        refund_from_douyin(raw)
