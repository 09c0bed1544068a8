"""PDD payloads onto canonical snapshots: money, times, status tables, lines, refunds."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.base import OrderStatus, RefundStatus
from adapters.errors import PayloadError
from adapters.pinduoduo import mapping
from pdd_fakes import load

UTC = timezone.utc


@pytest.mark.parametrize("value, fen", [
    (59.9, 5990), ("59.90", 5990), ("199.00", 19900), (199, 19900), ("0.01", 1), (0.1, 10), (None, 0),
])
def test_yuan_as_number_or_string_becomes_fen(value, fen):
    assert mapping.pdd_money(value) == fen


def test_fen_unit_reads_integers_and_refuses_fractions():
    assert mapping.pdd_money(19900, "fen") == 19900
    assert mapping.pdd_money("1990", "fen") == 1990
    with pytest.raises(PayloadError):
        mapping.pdd_money("19.9", "fen")


def test_beijing_string_and_unix_seconds_and_ms_become_the_same_utc_instant():
    expected = datetime(2024, 6, 1, 2, 0, 0, tzinfo=UTC)
    assert mapping.pdd_time("2024-06-01 10:00:00") == expected
    assert mapping.pdd_time(1717207200) == expected
    assert mapping.pdd_time("1717207200") == expected
    assert mapping.pdd_time(1717207200000) == expected
    assert mapping.pdd_time("") is None and mapping.pdd_time(0) is None


@pytest.mark.parametrize("order_status, refund_status, confirm_status, expected", [
    (1, 1, 2, OrderStatus.CANCELLED),  # confirm 2 已取消 wins
    (2, 1, 2, OrderStatus.CANCELLED),
    (1, 1, 0, OrderStatus.PENDING),  # 未成交
    (1, 1, 1, OrderStatus.PAID),
    (1, 2, 1, OrderStatus.PAID),  # after-sale in progress: still paid
    (1, 4, 1, OrderStatus.CANCELLED),  # fully refunded, never shipped
    (2, 1, 1, OrderStatus.SHIPPED),
    (2, 4, 1, OrderStatus.SHIPPED),  # refunded after shipping: the refund carries the effect
    (3, 1, 1, OrderStatus.DELIVERED),
    (3, 4, 1, OrderStatus.DELIVERED),
])
def test_order_status_table(order_status, refund_status, confirm_status, expected):
    assert mapping.order_status(order_status, refund_status, confirm_status) is expected


def test_unknown_order_status_is_a_payload_error():
    with pytest.raises(PayloadError):
        mapping.order_status(7, 1, 1)


def test_shipped_order_with_number_money_maps_totals_times_and_line():
    order = mapping.map_order(load("order-240601-100000000000001.json"))
    assert order.external_id == "240601-100000000000001"
    assert order.status is OrderStatus.SHIPPED
    assert order.currency == "CNY"
    assert order.total_minor == 5990
    assert order.platform_fee_minor is None
    assert order.paid_at == datetime(2024, 6, 1, 2, 0, 0, tzinfo=UTC)
    assert order.shipped_at == datetime(2024, 6, 1, 8, 30, 0, tzinfo=UTC)
    assert order.delivered_at is None
    assert order.updated_at == datetime(2024, 6, 1, 8, 30, 12, tzinfo=UTC)
    [line] = order.lines
    assert line.external_line_id == "1200000000001"
    assert line.external_sku_key == "1200000000001"
    assert line.merchant_sku == "QB-MAOJIAN-250G"
    assert (line.quantity, line.unit_price_minor, line.total_minor) == (2, 3400, 6800)
    assert line.listing_ref == {"goods_id": "388000000001", "sku_id": "1200000000001"}
    assert order.raw["order_sn"] == order.external_id


def test_string_money_repeated_sku_and_outer_goods_id_fallback():
    order = mapping.map_order(load("order-240602-100000000000002.json"))
    assert order.status is OrderStatus.CANCELLED
    assert order.total_minor == 19900
    assert [line.external_line_id for line in order.lines] == ["1200000000002", "1200000000002:1"]
    assert all(line.merchant_sku == "QB-HONEY" for line in order.lines)
    assert all(line.unit_price_minor == 9950 for line in order.lines)


def test_order_without_updated_at_is_a_payload_error():
    raw = load("order-240601-100000000000001.json")
    del raw["updated_at"]
    with pytest.raises(PayloadError):
        mapping.map_order(raw)


@pytest.mark.parametrize("code, expected", [
    (10, RefundStatus.SUCCEEDED),
    (9, RefundStatus.CLOSED), (11, RefundStatus.CLOSED), (12, RefundStatus.CLOSED), (13, RefundStatus.CLOSED),
    (16, RefundStatus.CLOSED), (24, RefundStatus.CLOSED),  # terminal exchange / repair: no money moved
    (2, RefundStatus.OPEN), (3, RefundStatus.OPEN), (4, RefundStatus.OPEN), (5, RefundStatus.OPEN),
    (6, RefundStatus.OPEN), (7, RefundStatus.OPEN), (8, RefundStatus.OPEN), (14, RefundStatus.OPEN),
    (31, RefundStatus.OPEN), (33, RefundStatus.OPEN),
])
def test_after_sales_status_table(code, expected):
    assert mapping.refund_status(code) is expected


@pytest.mark.parametrize("after_sales_type, shipping_status, kind, restock", [
    (1, 0, "refund_only", "cancel"),  # refund only, never shipped
    (1, 1, "refund_only", "no_restock"),  # refund only after shipping
    (1, None, "refund_only", "no_restock"),  # unknown: the order-level cancel releases
    (2, 1, "return", "return"),  # goods come back (when: return_status)
    (3, 1, "exchange", "return"),  # goods come back, a replacement goes out
    (4, 1, "reship", "no_restock"),
    (5, 1, "repair", "no_restock"),
])
def test_the_detail_answer_numbers_kinds_as_documented(after_sales_type, shipping_status, kind, restock):
    raw = load("refund-information-9100000001.json") | {"after_sales_type": after_sales_type,
                                                       "shipping_status": shipping_status}
    detail = mapping.map_after_sale_detail(raw)
    assert (detail.kind, detail.restock) == (kind, restock)


def test_a_list_row_leaves_the_kind_to_the_detail_call():
    """The list response documents after_sales_type without an enum (and its filter is shifted by one):
    money and lines come from the row, the kind from pdd.refund.information.get."""
    refund = mapping.map_refund(load("refund-9100000002.json"))
    assert (refund.kind, refund.kind_pending) == (None, True)
    assert refund.lines[0].restock == "no_restock"  # nothing moves on the row's word
    assert refund.return_status == "received"  # 10 refund succeeded


@pytest.mark.parametrize("code, return_status, replacement", [
    (7, "awaiting_goods", None), (10, "received", None), (14, "due", "due"), (32, None, "due"),
    (18, "received", "shipped"), (16, "received", "shipped"), (17, None, "cancelled"),
])
def test_status_codes_say_where_goods_and_replacement_are(code, return_status, replacement):
    assert mapping.return_status(code) == (return_status if return_status != "due" else None)
    assert mapping.replacement_status(code) == replacement


def test_an_undocumented_detail_type_is_a_payload_error():
    with pytest.raises(PayloadError):
        mapping.map_after_sale_detail(load("refund-information-9100000001.json") | {"after_sales_type": 6})


def test_refund_list_row_maps_with_yuan_amounts():
    refund = mapping.map_refund(load("refund-9100000001.json"))
    assert refund.external_id == "9100000001"
    assert refund.order_external_id == "240602-100000000000002"
    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.amount_minor == 19900
    assert refund.updated_at == datetime(2024, 6, 2, 23, 15, 30, tzinfo=UTC)
    [line] = refund.lines
    assert (line.external_line_id, line.external_sku_key, line.merchant_sku) == ("1200000000002", "1200000000002", "QB-HONEY")
    assert (line.quantity, line.amount_minor, line.restock) == (2, 19900, "no_restock")  # kind pending


def test_refund_amount_unit_fen_reads_the_detail_payload():
    """pdd.refund.information.get types money as integers with no unit; under "fen" they are fen."""
    refund = mapping.map_refund(load("refund-information-9100000001.json"), amount_unit="fen", from_detail=True)
    assert refund.amount_minor == 19900
    assert refund.created_at == datetime(2024, 6, 2, 23, 1, 0, tzinfo=UTC)  # epoch recreated_at
    assert refund.lines[0].restock == "cancel"  # shipping_status 0 in the payload
    assert (refund.kind, refund.kind_pending) == ("refund_only", False)


def test_return_and_refund_that_succeeded_restocks_as_return_once_its_kind_is_known():
    refund = mapping.map_refund(load("refund-9100000002.json"))
    assert refund.amount_minor == 2995
    detail = mapping.map_after_sale_detail(load("refund-information-9100000001.json")
                                           | {"after_sales_type": 2, "shipping_status": 1})
    assert (detail.kind, detail.restock, detail.return_status) == ("return", "return", "received")
