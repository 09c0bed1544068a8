"""Shopify Payments balance transactions (operations.md 5.4): the fee Shopify Payments took on each charge and
refund of an order, read as bill lines. Only shops paid through Shopify Payments have them; Shopify's own
subscription and third-party transaction fees are billed apart and are not here.

ref: https://shopify.dev/docs/api/admin-graphql/latest/objects/ShopifyPaymentsBalanceTransaction
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from adapters.base import BillKind, BillLine, TimeWindow
from adapters.errors import PayloadError
from adapters.units import from_iso, to_minor

PLATFORM = "shopify"
PAGE_SIZE = 100  # nodes per query; a node costs little

# ``query`` filters by processing time (search syntax, balance transactions take query arguments since
# 2024-07); the filter name follows the sort key PROCESSED_AT [I].
BALANCE_TRANSACTIONS_QUERY = """
query CoopsyncBalanceTransactions($first: Int!, $after: String, $query: String) {
  shopifyPaymentsAccount {
    balanceTransactions(first: $first, after: $after, query: $query, sortKey: PROCESSED_AT) {
      nodes {
        id type test transactionDate sourceType sourceId
        amount { amount currencyCode }
        fee { amount currencyCode }
        net { amount currencyCode }
        associatedOrder { id name }
        associatedPayout { id status }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

# Movements of the balance that belong to no order's money: payouts to the bank and their reversals.
_NOT_ORDER_MONEY = frozenset({"TRANSFER", "TRANSFER_FAILURE", "TRANSFER_CANCEL", "PAYOUT", "PAYOUT_FAILURE",
                              "PAYOUT_CANCELLATION"})


def window_query(window: TimeWindow) -> str:
    def iso(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    return f"processed_at:>='{iso(window.start)}' processed_at:<'{iso(window.end)}'"


def _gid_tail(gid: Any) -> str | None:
    text = str(gid or "").strip()
    return text.rsplit("/", 1)[-1] or None if text else None


def _money(bag: Any, field: str) -> tuple[int, str]:
    if not isinstance(bag, Mapping) or "amount" not in bag:
        raise PayloadError(f"balance transaction without {field}", platform=PLATFORM)
    currency = str(bag.get("currencyCode") or "").upper()
    if len(currency) != 3:
        raise PayloadError(f"balance transaction {field} without a currency", platform=PLATFORM)
    return to_minor(bag["amount"], currency), currency


def bill_line_from_balance_transaction(node: Mapping[str, Any]) -> BillLine | None:
    """One balance transaction -> BillLine; None for test transactions and payouts to the bank.

    A charge is a sale (``amount`` the buyer's money, ``fee`` the processing fee, ``net`` what the balance
    got); a refund gives money back (a negative ``amount``; Shopify keeps the original fee, so its ``fee``
    is usually 0); adjustments and disputes keep their signed amounts as ``adjustment``."""
    if node.get("test") is True or str(node.get("type") or "").upper() in _NOT_ORDER_MONEY:
        return None
    kind_text = str(node.get("type") or node.get("sourceType") or "").upper()
    amount, currency = _money(node.get("amount"), "amount")
    fee, _ = _money(node.get("fee"), "fee")
    net, _ = _money(node.get("net"), "net")
    kind: BillKind = {"CHARGE": "sale", "REFUND": "refund"}.get(kind_text, "adjustment")
    gross = amount if kind == "sale" else 0
    refund = -amount if kind == "refund" else 0
    line_id = _gid_tail(node.get("id"))
    if not line_id:
        raise PayloadError("balance transaction without id", platform=PLATFORM)
    order = node.get("associatedOrder") if isinstance(node.get("associatedOrder"), Mapping) else {}
    return BillLine(
        line_id=f"balance:{line_id}",
        order_external_id=_gid_tail(order.get("id")),
        currency=currency,
        kind=kind,
        amount_minor=net,
        occurred_at=from_iso(node.get("transactionDate")),
        gross_minor=gross,
        refund_minor=refund,
        fee_minor=fee,
        fees={"shopify_payments": fee} if fee else {},
        source="platform",
        raw=dict(node),
        fee_known=kind != "adjustment" or fee != 0,
    )


def balance_page(data: Mapping[str, Any]) -> tuple[list[BillLine], str | None]:
    """A ``balanceTransactions`` answer: its lines and the next ``after`` (None on the last page, and for a shop
    without Shopify Payments, whose ``shopifyPaymentsAccount`` is null)."""
    account = data.get("shopifyPaymentsAccount")
    if not isinstance(account, Mapping):
        return [], None
    connection = account.get("balanceTransactions") or {}
    lines = [line for line in (bill_line_from_balance_transaction(n) for n in connection.get("nodes") or []
                               if isinstance(n, Mapping)) if line is not None]
    info = connection.get("pageInfo") or {}
    after = info.get("endCursor") if info.get("hasNextPage") else None
    return lines, str(after) if after else None
