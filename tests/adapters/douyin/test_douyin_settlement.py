"""Douyin settlement rows (/order/getSettleBillDetailV3) as bill lines: the fee is what the platform took
(合计支出, itemised), the subsidy what it added, the payout what the shop received; pages follow the
platform's own cursor (next_start_time + next_start_index) until is_end."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
import respx

from adapters.base import Capability, TimeWindow
from adapters.douyin.adapter import DouyinAdapter
from adapters.douyin.mapping import bill_line_from_settlement, order_from_douyin
from adapters.errors import PermanentError
from douyin_fakes import BASE_URL, load, ok

SETTLED = load("settle-bill-6920000000000000002.json")
WINDOW = TimeWindow(datetime(2023, 11, 24, 16, tzinfo=timezone.utc), datetime(2023, 11, 25, 16, tzinfo=timezone.utc))


def test_a_settlement_row_is_its_orders_fees_subsidy_and_payout():
    [row] = SETTLED["data"]
    line = bill_line_from_settlement(row)
    assert (line.order_external_id, line.kind, line.currency, line.source) == ("6920000000000000002", "sale", "CNY",
                                                                               "platform")
    assert line.fee_minor == 599 and dict(line.fees) == {"platform_service_fee": 200, "commission": 399}
    assert (line.gross_minor, line.subsidy_minor, line.refund_minor) == (3990, 500, 0)
    # What the shop was paid is the buyer's money and the subsidy, less the fees, to the fen.
    assert line.amount_minor == 3891 == line.gross_minor - line.refund_minor - line.fee_minor + line.subsidy_minor
    assert line.line_id == "settle:SR20231125000001:6920000000000000021:0"
    assert line.occurred_at == datetime(2023, 11, 25, 2, tzinfo=timezone.utc)  # 10:00 Beijing
    assert line.fee_known


def test_a_fee_the_items_do_not_explain_is_kept_as_other():
    row = {**SETTLED["data"][0], "total_outcome": 650}
    line = bill_line_from_settlement(row)
    assert line.fee_minor == 650 and line.fees["other"] == 51


def test_a_refund_after_settlement_is_a_refund_line_of_the_order():
    row = {**SETTLED["data"][0], "trade_type": 1, "settle_amount": -1000, "real_pay_amount": 0, "platform_coupon": 0,
           "commission": -100, "platform_service_fee": 0, "total_outcome": -100}
    line = bill_line_from_settlement(row)
    assert (line.kind, line.amount_minor, line.fee_minor, line.gross_minor) == ("refund", -1000, -100, 0)
    assert line.refund_minor == 1100  # the payout, less the commission given back [I]
    assert line.line_id.endswith(":1")


def test_the_order_payload_names_the_platform_part_of_its_discount_as_subsidy():
    order = load("order-6920000000000000001.json")
    assert order_from_douyin(order).subsidy_minor == 0
    assert order_from_douyin({**order, "platform_cost_amount": 700}).subsidy_minor == 700
    assert order_from_douyin({k: v for k, v in order.items() if k != "platform_cost_amount"}).subsidy_minor is None


async def test_fetch_bills_pages_by_the_platforms_cursor_until_is_end(adapter: DouyinAdapter, gateway):
    assert {Capability.FEES, Capability.BILLS} <= DouyinAdapter.capabilities
    first = copy.deepcopy(SETTLED)
    first.update(is_end=0, next_start_index="100", next_start_time="2023-11-25 10:00:00")
    second = copy.deepcopy(SETTLED)
    second["data"][0].update(order_id="6920000000000000022", request_no="SR20231125000002")
    gateway.on("order.getSettleBillDetailV3", lambda p: ok(first), lambda p: ok(second))
    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL) as router:
        router.post(path="/order/getSettleBillDetailV3").mock(side_effect=gateway)
        page = await adapter.fetch_bills(WINDOW, None)
        assert page.next_cursor is not None
        page2 = await adapter.fetch_bills(WINDOW, page.next_cursor)
    assert page2.next_cursor is None
    [(_, p1), (_, p2)] = gateway.calls
    # Beijing-time bounds of the window, settlement time; the second page starts where the first said.
    assert (p1["start_time"], p1["end_time"], p1["time_type"], p1["size"]) == (
        "2023-11-25 00:00:00", "2023-11-26 00:00:00", "0", 100)
    assert "start_index" not in p1
    assert (p2["start_time"], p2["start_index"], p2["end_time"]) == ("2023-11-25 10:00:00", "100", "2023-11-26 00:00:00")
    assert {l.line_id for l in page.items + page2.items} == {
        "settle:SR20231125000001:6920000000000000021:0", "settle:SR20231125000002:6920000000000000022:0"}


async def test_an_inner_failure_code_is_an_error_not_an_empty_bill(adapter: DouyinAdapter, gateway):
    gateway.on("order.getSettleBillDetailV3", lambda p: ok({"code": "100001", "code_msg": "参数错误", "data": []}))
    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL) as router:
        router.post(path="/order/getSettleBillDetailV3").mock(side_effect=gateway)
        with pytest.raises(PermanentError, match="参数错误"):
            await adapter.fetch_bills(WINDOW, None)
