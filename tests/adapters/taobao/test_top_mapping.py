"""TOP trades and refunds onto canonical snapshots: yuan strings, Beijing times, status tables."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.base import OrderStatus, RefundStatus
from adapters.errors import PayloadError
from adapters.taobao import mapping
from top_fakes import load

UTC = timezone.utc


@pytest.mark.parametrize("status, expected", [
    ("WAIT_BUYER_PAY", OrderStatus.PENDING),
    ("TRADE_NO_CREATE_PAY", OrderStatus.PENDING),
    ("PAY_PENDING", OrderStatus.PENDING),
    ("WAIT_PRE_AUTH_CONFIRM", OrderStatus.PENDING),
    ("WAIT_SELLER_SEND_GOODS", OrderStatus.PAID),
    ("SELLER_CONSIGNED_PART", OrderStatus.PAID),
    ("PAID_FORBID_CONSIGN", OrderStatus.PAID),
    ("WAIT_BUYER_CONFIRM_GOODS", OrderStatus.SHIPPED),
    ("TRADE_BUYER_SIGNED", OrderStatus.SHIPPED),
    ("TRADE_FINISHED", OrderStatus.DELIVERED),
    ("TRADE_CLOSED", OrderStatus.CANCELLED),
    ("TRADE_CLOSED_BY_TAOBAO", OrderStatus.CANCELLED),
])
def test_trade_status_table(status, expected):
    assert mapping.trade_status(status) is expected


def test_unknown_trade_status_is_a_payload_error():
    with pytest.raises(PayloadError):
        mapping.trade_status("SOMETHING_NEW")


def test_partly_shipped_trade_reports_shipping_per_line():
    trade = mapping.map_trade(load("trade-3300000000000001.json"))
    assert trade.external_id == "3300000000000001"
    assert trade.status is OrderStatus.PAID
    assert trade.total_minor == 23650
    assert trade.updated_at == datetime(2024, 6, 11, 1, 40, 12, tzinfo=UTC)
    assert trade.paid_at == datetime(2024, 6, 10, 12, 16, 30, tzinfo=UTC)
    tea, honey = trade.lines
    assert (tea.external_line_id, tea.external_sku_key, tea.merchant_sku) == ("3300000000000101", "5000000000001", "QB-MAOJIAN-250G")
    assert (tea.quantity, tea.unit_price_minor, tea.discount_minor, tea.total_minor) == (2, 6800, 600, 13000)
    assert tea.shipped_quantity == 2
    assert tea.listing_ref == {"num_iid": "690000000001", "sku_id": "5000000000001"}
    # An item without SKUs: the key and the merchant code fall back to the item's.
    assert (honey.external_sku_key, honey.merchant_sku) == ("690000000002", "QB-HONEY-500G")
    assert honey.shipped_quantity == 0
    assert honey.listing_ref == {"num_iid": "690000000002"}
    assert sum(line.total_minor for line in trade.lines) == trade.total_minor


def test_finished_trade_is_delivered_at_its_end_time_and_lines_follow_the_order():
    trade = mapping.map_trade(load("trade-3300000000000002.json"))
    assert trade.status is OrderStatus.DELIVERED
    assert trade.total_minor == 20007
    assert trade.delivered_at == datetime(2024, 6, 9, 15, 59, 59, tzinfo=UTC)
    assert trade.shipped_at == datetime(2024, 6, 2, 2, 0, 0, tzinfo=UTC)
    assert trade.lines[0].shipped_quantity is None
    assert trade.lines[0].external_line_id == "3300000000000201"  # oid when oid_str is absent


def test_simplified_lists_without_the_wrapping_layer_map_the_same():
    raw = load("trade-3300000000000001.json")
    raw["orders"] = raw["orders"]["order"]  # simplify=true drops {"order": [...]} [I]
    assert mapping.map_trade(raw).lines == mapping.map_trade(load("trade-3300000000000001.json")).lines


def test_closed_trade_is_cancelled_at_its_end_time():
    raw = load("trade-3300000000000002.json") | {"status": "TRADE_CLOSED"}
    trade = mapping.map_trade(raw)
    assert trade.status is OrderStatus.CANCELLED
    assert trade.cancelled_at == datetime(2024, 6, 9, 15, 59, 59, tzinfo=UTC) and trade.delivered_at is None


@pytest.mark.parametrize("status, expected", [
    ("SUCCESS", RefundStatus.SUCCEEDED),
    ("CLOSED", RefundStatus.CLOSED),
    ("SELLER_REFUSE_BUYER", RefundStatus.CLOSED),
    ("WAIT_SELLER_AGREE", RefundStatus.OPEN),
    ("WAIT_BUYER_RETURN_GOODS", RefundStatus.OPEN),
    ("WAIT_SELLER_CONFIRM_GOODS", RefundStatus.OPEN),
])
def test_refund_status_table(status, expected):
    assert mapping.refund_status(status) is expected


@pytest.mark.parametrize("fields, expected", [
    ({"good_status": "BUYER_RETURNED_GOODS"}, "return"),
    ({"has_good_return": True, "good_status": "BUYER_RECEIVED"}, "return"),
    ({"has_good_return": "true"}, "return"),
    ({"refund_phase": "onsale", "order_status": "WAIT_SELLER_SEND_GOODS", "good_status": "BUYER_NOT_RECEIVED"}, "cancel"),
    ({"refund_phase": "onsale", "order_status": "WAIT_BUYER_CONFIRM_GOODS", "good_status": "BUYER_NOT_RECEIVED"}, "no_restock"),
    ({"refund_phase": "aftersale", "order_status": "TRADE_FINISHED", "good_status": "BUYER_RECEIVED"}, "no_restock"),
    ({"refund_phase": "onsale", "order_status": "TRADE_CLOSED"}, "no_restock"),  # ambiguous, see refund_restock
])
def test_refund_restock_rules(fields, expected):
    assert mapping.refund_restock(fields) == expected


def test_returned_goods_refund_maps_amount_line_and_times():
    refund = mapping.map_refund(load("refund-150000000000001.json"))
    assert refund.external_id == "150000000000001"
    assert refund.order_external_id == "3300000000000002"
    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.amount_minor == 20007
    assert refund.updated_at == datetime(2024, 6, 14, 8, 45, 0, tzinfo=UTC)
    [line] = refund.lines
    assert (line.external_line_id, line.external_sku_key, line.merchant_sku) == ("3300000000000201", None, "QB-FUNGUS-1KG")
    assert (line.quantity, line.amount_minor, line.restock) == (1, 20007, "return")


def test_refund_before_consignment_cancels_and_keys_an_item_without_skus_by_num_iid():
    refund = mapping.map_refund(load("refund-150000000000002.json"))
    [line] = refund.lines
    assert (line.external_sku_key, line.restock, line.amount_minor) == ("690000000002", "cancel", 10650)


def test_trade_without_modified_is_a_payload_error():
    raw = load("trade-3300000000000002.json")
    del raw["modified"]
    with pytest.raises(PayloadError):
        mapping.map_trade(raw)


def test_a_finished_trade_carries_its_commission_and_platform_subsidy():
    trade = load("trade-3300000000000002.json")
    finished = mapping.map_trade({**trade, "commission_fee": "10.01", "platform_subsidy_fee": "5.00"})
    assert (finished.platform_fee_minor, finished.subsidy_minor) == (1001, 500)
    # Before the buyer confirms, a "0.00" commission only means "not taken yet": no actual fee.
    waiting = mapping.map_trade({**trade, "status": "WAIT_BUYER_CONFIRM_GOODS", "commission_fee": "0.00"})
    assert waiting.platform_fee_minor is None
    assert mapping.map_trade(trade).platform_fee_minor is None  # a trade without the field
