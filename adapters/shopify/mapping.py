"""Pure mapping from Shopify REST/webhook payloads (Order, Refund) onto the canonical snapshots.
No I/O: each function takes one resource's decoded JSON and returns a snapshot or raises PayloadError.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot
from adapters.base import RefundStatus, RestockType
from adapters.errors import PayloadError
from adapters.fields import ext_id, present, required
from adapters.units import from_iso, to_minor

PLATFORM = "shopify"

_id = partial(ext_id, allow_zero=True)  # Shopify ids are never 0, so a 0 is passed on, not dropped
_require = partial(required, platform=PLATFORM, name="Shopify")
_present = partial(present, platform=PLATFORM)

# financial_status -> canonical status when the order is neither cancelled nor fulfilled.
# "authorized" counts as paid: the buyer's payment is secured (captured later, often at shipping), so the
# goods are committed and must be reserved now; waiting for capture would let the stock be sold twice.
# "partially_refunded"/"refunded" also stay paid: the refunds are separate snapshots carrying their own
# stock effects, and cancelling the order here would release stock a second time.
_FINANCIAL: dict[str, OrderStatus] = {
    "pending": OrderStatus.PENDING,
    "authorized": OrderStatus.PAID,
    "partially_paid": OrderStatus.PAID,
    "paid": OrderStatus.PAID,
    "partially_refunded": OrderStatus.PAID,
    "refunded": OrderStatus.PAID,
    # The authorization was voided or expired without a cancellation: no money will come, the order is dead.
    "voided": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
}

_RESTOCK: dict[str, RestockType] = {
    "cancel": "cancel",
    "return": "return",
    "no_restock": "no_restock",
    # legacy_restock exists only on pre-2017 refunds; it meant "put it back on the shelf", i.e. a return.
    "legacy_restock": "return",
}

# Fulfillment.status values meaning the goods really left; "cancelled", "error", "failure" mean they did not,
# and "pending"/"open" are still with the fulfilment service.
_SHIPPED_FULFILLMENT = {"success"}


def _time(payload: dict[str, Any], key: str) -> Any:
    return from_iso(payload.get(key))


def _money_sum(amounts: list[Any], currency: str) -> int:
    return sum((to_minor(a, currency) for a in amounts), 0)


def map_restock(refund_line: dict[str, Any], refund: dict[str, Any]) -> RestockType:
    """``restock_type`` onto the canonical restock; old refunds only carry ``restock: true`` on the refund."""
    kind = refund_line.get("restock_type")
    if kind:
        try:
            return _RESTOCK[kind]
        except KeyError:
            raise PayloadError(f"unknown Shopify restock_type {kind!r}", platform=PLATFORM) from None
    return "return" if refund.get("restock") is True else "no_restock"


def _refund_currency(refund: dict[str, Any], order_currency: str | None) -> str:
    """The refund body has no top-level currency: take the order's, else the first money set in it."""
    if order_currency:
        return order_currency
    for line in refund.get("refund_line_items") or []:
        code = ((line.get("subtotal_set") or {}).get("shop_money") or {}).get("currency_code")
        if code:
            return code
    for adj in refund.get("order_adjustments") or []:
        code = ((adj.get("amount_set") or {}).get("shop_money") or {}).get("currency_code")
        if code:
            return code
    for tx in refund.get("transactions") or []:
        if tx.get("currency"):
            return tx["currency"]
    raise PayloadError("Shopify refund carries no currency anywhere", platform=PLATFORM)


def _refund_status(transactions: list[dict[str, Any]]) -> RefundStatus:
    """A refund record exists only once Shopify created it; its money state is in its refund transactions."""
    states = [tx.get("status") for tx in transactions if tx.get("kind") == "refund"]
    if not states:
        return RefundStatus.SUCCEEDED  # a restock-only or zero-amount refund: nothing left to wait for
    if any(s == "pending" for s in states):
        return RefundStatus.OPEN
    if all(s in ("failure", "error") for s in states):
        return RefundStatus.CLOSED
    return RefundStatus.SUCCEEDED


def map_refund(refund: dict[str, Any], order_currency: str | None = None) -> RefundSnapshot:
    """A Shopify Refund (REST resource or unwrapped ``refunds/create`` body) -> RefundSnapshot."""
    if not isinstance(refund, dict):
        raise PayloadError("Shopify refund is not an object", platform=PLATFORM)
    refund_id = _id(_require(refund, "id", "refund"))
    order_id = _id(_require(refund, "order_id", f"refund {refund_id}"))
    currency = _refund_currency(refund, order_currency)
    lines: list[RefundLineSnapshot] = []
    lines_total = 0
    for rl in refund.get("refund_line_items") or []:
        item = rl.get("line_item") or {}
        # subtotal is a JSON number (195.66) while subtotal_set amounts are strings: to_minor reads both
        # through str(), so no binary float ever enters the sum.
        amount = to_minor(rl.get("subtotal"), currency)
        lines_total += amount + to_minor(rl.get("total_tax"), currency)
        lines.append(
            RefundLineSnapshot(
                external_line_id=_id(rl.get("line_item_id") or item.get("id")),
                external_sku_key=_id(item.get("variant_id")),
                merchant_sku=item.get("sku") or None,
                quantity=int(rl.get("quantity") or 0),
                amount_minor=amount,
                restock=map_restock(rl, refund),
            )
        )
    transactions = refund.get("transactions") or []
    paid_back = [
        tx for tx in transactions
        if tx.get("kind") == "refund" and tx.get("status") == "success" and tx.get("currency", currency) == currency
    ]
    if paid_back:
        # What actually went back to the buyer; line subtotals can disagree (restocking fees, rounding).
        amount_minor = _money_sum([tx.get("amount") for tx in paid_back], currency)
    else:
        # Shipping refunds appear as negative order adjustments ("-30.00" refunds 30.00 of shipping).
        adjustments = _money_sum([a.get("amount") for a in refund.get("order_adjustments") or []], currency)
        amount_minor = max(0, lines_total - adjustments)
    created_at = _time(refund, "created_at")
    updated_at = _present(_time(refund, "processed_at") or created_at,
                          f"Shopify refund {refund_id} has neither processed_at nor created_at")
    # A REST refund has no after-sale type: restock_type "return" (or legacy restock) is the merchant
    # recording goods that came back, so the refund is a return whose goods are received; the rest is
    # money only (with "cancel" releasing what never shipped). Exchanges live in the GraphQL Returns
    # API, which this adapter does not read.
    returned = any(line.restock == "return" for line in lines)
    return RefundSnapshot(
        platform=PLATFORM,
        external_id=refund_id,
        order_external_id=order_id,
        status=_refund_status(transactions),
        currency=currency,
        amount_minor=amount_minor,
        lines=lines,
        created_at=created_at,
        updated_at=updated_at,
        raw=refund,
        kind="return" if returned else "refund_only",
        return_status="received" if returned else None,
    )


def _successful_fulfillments(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in order.get("fulfillments") or [] if f.get("status") in _SHIPPED_FULFILLMENT]


def _shipped_per_line(order: dict[str, Any]) -> dict[str, int]:
    shipped: dict[str, int] = defaultdict(int)
    for fulfillment in _successful_fulfillments(order):
        for item in fulfillment.get("line_items") or []:
            shipped[str(item.get("id"))] += int(item.get("quantity") or 0)
    return shipped


def map_order_status(order: dict[str, Any]) -> OrderStatus:
    """Status table in DESIGN.md: cancellation wins, then fulfilment, then payment."""
    if order.get("cancelled_at"):
        return OrderStatus.CANCELLED
    financial = order.get("financial_status")
    if financial in ("voided", "expired"):
        return OrderStatus.CANCELLED
    if order.get("fulfillment_status") == "fulfilled":
        done = _successful_fulfillments(order)
        if done and all(f.get("shipment_status") == "delivered" for f in done):
            return OrderStatus.DELIVERED
        return OrderStatus.SHIPPED
    if financial is None:
        return OrderStatus.PENDING  # very old orders/create bodies may lack it before payment settles
    try:
        return _FINANCIAL[financial]
    except KeyError:
        raise PayloadError(f"unknown Shopify financial_status {financial!r}", platform=PLATFORM) from None


def _line(item: dict[str, Any], currency: str, shipped: dict[str, int] | None) -> OrderLineSnapshot:
    line_id = _id(_require(item, "id", "line item"))
    quantity = int(item.get("quantity") or 0)
    unit = to_minor(_require(item, "price", f"line item {line_id}"), currency)
    if "discount_allocations" in item:
        discount = _money_sum([a.get("amount") for a in item.get("discount_allocations") or []], currency)
    else:
        discount = to_minor(item.get("total_discount"), currency)  # pre-2019 payloads have no allocations
    variant_id = _id(item.get("variant_id"))
    return OrderLineSnapshot(
        external_line_id=line_id,
        external_sku_key=variant_id,
        merchant_sku=item.get("sku") or None,
        title=item.get("name") or item.get("title"),
        quantity=quantity,
        unit_price_minor=unit,
        discount_minor=discount,
        total_minor=unit * quantity - discount,
        shipped_quantity=None if shipped is None else shipped.get(line_id, 0),
        listing_ref={"variant_id": variant_id} if variant_id else {},
    )


def map_order(order: dict[str, Any]) -> OrderSnapshot:
    """A Shopify Order (REST resource or unwrapped ``orders/*`` webhook body) -> OrderSnapshot."""
    if not isinstance(order, dict):
        raise PayloadError("Shopify order is not an object", platform=PLATFORM)
    order_id = _id(_require(order, "id", "order"))
    # `currency` is the shop currency every plain money field is written in; presentment_currency is only
    # what the buyer saw (the *_set.presentment_money twins). An EUR shop's order therefore stays EUR.
    currency = _require(order, "currency", f"order {order_id}")
    updated_at = _present(_time(order, "updated_at"), f"Shopify order {order_id} has no updated_at")
    status = map_order_status(order)
    # Per-line shipped quantities only where Shopify fulfilled part of the order; otherwise lines follow it.
    shipped = _shipped_per_line(order) if order.get("fulfillment_status") == "partial" else None
    lines = [_line(item, currency, shipped) for item in order.get("line_items") or []]
    refunds = [map_refund(r, currency) for r in order.get("refunds") or []]

    fulfillments = _successful_fulfillments(order)
    shipped_at = min((_time(f, "created_at") for f in fulfillments if f.get("created_at")), default=None)
    delivered_at = None
    if status is OrderStatus.DELIVERED:
        # REST fulfillments carry no delivery time; their updated_at is when shipment_status last changed.
        delivered_at = max((_time(f, "updated_at") for f in fulfillments if f.get("updated_at")), default=None)
    paid_at = None
    if order.get("financial_status") in ("authorized", "partially_paid", "paid", "partially_refunded", "refunded"):
        # The order has no payment timestamp (it lives on transactions); processed_at is the nearest.
        paid_at = _time(order, "processed_at") or _time(order, "created_at")
    cancelled_at = _time(order, "cancelled_at")
    if status is OrderStatus.CANCELLED and cancelled_at is None:
        cancelled_at = updated_at  # voided/expired: the last change is when it died
    return OrderSnapshot(
        platform=PLATFORM,
        external_id=order_id,
        status=status,
        currency=currency,
        # The original total: refunds are their own snapshots, so current_total_price would count them twice.
        total_minor=to_minor(order.get("total_price"), currency),
        platform_fee_minor=None,
        lines=lines,
        refunds=refunds,
        created_at=_time(order, "created_at"),
        paid_at=paid_at,
        # A partial fulfilment already shipped something: its first fulfilment is when goods started leaving.
        shipped_at=shipped_at if status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED) or shipped is not None else None,
        delivered_at=delivered_at,
        cancelled_at=cancelled_at,
        updated_at=updated_at,
        raw=order,
    )


def unwrap(payload: Any, key: str) -> Any:
    """REST answers wrap the resource (``{"order": {...}}``); webhook bodies do not."""
    if isinstance(payload, dict) and key in payload and isinstance(payload[key], dict):
        return payload[key]
    return payload


__all__ = ["PLATFORM", "map_order", "map_order_status", "map_refund", "map_restock", "unwrap"]
