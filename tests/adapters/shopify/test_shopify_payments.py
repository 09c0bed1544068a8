"""Shopify Payments balance transactions as bill lines: a charge's fee per order, a refund's money back,
test transactions and payouts to the bank left out, a shop without Shopify Payments an empty bill. The
GraphQL answers are hand-made from the documented ShopifyPaymentsBalanceTransaction fields."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import respx

from adapters.base import Capability, TimeWindow
from adapters.shopify.adapter import ShopifyAdapter
from adapters.shopify.payments import balance_page, bill_line_from_balance_transaction, window_query
from shopify_helpers import API, BASE, authed


def money(amount: str, currency: str = "USD") -> dict:
    return {"amount": amount, "currencyCode": currency}


def node(id_: int, type_: str, amount: str, fee: str, net: str, order: int | None = 450789469, **extra) -> dict:
    return {"id": f"gid://shopify/ShopifyPaymentsBalanceTransaction/{id_}", "type": type_, "test": False,
            "transactionDate": "2026-11-03T10:00:00Z", "sourceType": type_, "sourceId": id_,
            "amount": money(amount), "fee": money(fee), "net": money(net),
            "associatedOrder": {"id": f"gid://shopify/Order/{order}", "name": "#1001"} if order else None,
            "associatedPayout": {"id": "gid://shopify/ShopifyPaymentsPayout/9", "status": "SCHEDULED"}, **extra}


def test_a_charge_is_the_orders_sale_with_its_processing_fee():
    line = bill_line_from_balance_transaction(node(1, "CHARGE", "102.53", "3.27", "99.26"))
    assert (line.order_external_id, line.kind, line.currency) == ("450789469", "sale", "USD")
    assert (line.gross_minor, line.fee_minor, line.amount_minor) == (10253, 327, 9926)
    assert line.line_id == "balance:1" and line.fee_known and dict(line.fees) == {"shopify_payments": 327}
    assert line.occurred_at == datetime(2026, 11, 3, 10, tzinfo=timezone.utc)


def test_a_refund_gives_money_back_and_test_or_payout_rows_are_no_order_money():
    refund = bill_line_from_balance_transaction(node(2, "REFUND", "-10.00", "0.00", "-10.00"))
    assert (refund.kind, refund.refund_minor, refund.fee_minor, refund.amount_minor) == ("refund", 1000, 0, -1000)
    assert bill_line_from_balance_transaction(node(3, "CHARGE", "1.00", "0.33", "0.67", test=True)) is None
    assert bill_line_from_balance_transaction(node(4, "TRANSFER", "-99.26", "0.00", "-99.26", order=None)) is None


def test_a_shop_without_shopify_payments_has_an_empty_bill():
    assert balance_page({"shopifyPaymentsAccount": None}) == ([], None)


async def test_fetch_bills_asks_for_the_window_and_follows_the_cursor(make_adapter):
    assert {Capability.FEES, Capability.BILLS} <= ShopifyAdapter.capabilities
    adapter = make_adapter()
    window = TimeWindow(datetime(2026, 11, 3, tzinfo=timezone.utc), datetime(2026, 11, 4, tzinfo=timezone.utc))
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        variables = json.loads(request.content)["variables"]
        sent.append(variables)
        more = variables["after"] is None
        return httpx.Response(200, json={"data": {"shopifyPaymentsAccount": {"balanceTransactions": {
            "nodes": [node(10 if more else 11, "CHARGE", "10.00", "0.59", "9.41")],
            "pageInfo": {"hasNextPage": more, "endCursor": "c1" if more else None}}}}})

    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.post(f"{API}/graphql.json").mock(side_effect=authed(answer))
        first = await adapter.fetch_bills(window, None)
        second = await adapter.fetch_bills(window, first.next_cursor)
    assert first.next_cursor == "c1" and second.next_cursor is None
    assert [l.line_id for l in first.items + second.items] == ["balance:10", "balance:11"]
    assert sent[0]["query"] == window_query(window) == (
        "processed_at:>='2026-11-03T00:00:00Z' processed_at:<'2026-11-04T00:00:00Z'")
    assert sent[1]["after"] == "c1"
