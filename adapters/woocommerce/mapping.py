"""Pure mapping from WooCommerce REST v3 payloads (order, order refund) onto the canonical snapshots.
Money is 2-decimal strings except line ``price`` (a JSON number); only the ``*_gmt`` times are read.
"""

from __future__ import annotations

import html
from functools import partial
from typing import Any, Mapping

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundNotice
from adapters.base import RefundSnapshot, RefundStatus, RestockType
from adapters.errors import PayloadError
from adapters.fields import ext_id, required
from adapters.units import from_naive_utc, to_minor

PLATFORM = "woocommerce"

_id = ext_id  # variation_id 0 means "no variation"
_require = partial(required, platform=PLATFORM, name="WooCommerce")

# Woo order status -> canonical status. Choices:
# - on-hold is "awaiting payment" (e.g. a bank transfer not yet received): unpaid, so pending.
# - failed is "payment failed or was declined": the buyer can still pay it again from their account, and
#   then Woo moves it to processing. Pending keeps that road open; cancelled would be a dead end that a
#   later "paid" snapshot would have to climb back out of. Pending holds no stock, so nothing leaks.
# - processing means paid and awaiting fulfilment; Woo has no "shipped" state, so completed (the merchant
#   marked it done) is the nearest completion signal and maps to delivered, as DESIGN.md says.
# - refunded: see map_order_status (a completed-then-refunded order stays delivered).
# - trash arrives only through a fetch after order.deleted; a binned order is dead.
# - checkout-draft is the block checkout's cart-in-progress; ready-for-pickup (local pickup, since 11.3)
#   is paid but the goods are still in the shop, so paid.
STATUS_MAP: dict[str, OrderStatus] = {
    "pending": OrderStatus.PENDING,
    "on-hold": OrderStatus.PENDING,
    "failed": OrderStatus.PENDING,
    "checkout-draft": OrderStatus.PENDING,
    "processing": OrderStatus.PAID,
    "ready-for-pickup": OrderStatus.PAID,
    "completed": OrderStatus.DELIVERED,
    "cancelled": OrderStatus.CANCELLED,
    "refunded": OrderStatus.CANCELLED,
    "trash": OrderStatus.CANCELLED,
}


def sku_key(item: Mapping[str, Any]) -> str | None:
    """The most specific listing id: the variation when there is one (non-zero), else the product."""
    return _id(item.get("variation_id")) or _id(item.get("product_id"))


def listing_ref(item: Mapping[str, Any]) -> dict[str, str]:
    ref: dict[str, str] = {}
    if _id(item.get("product_id")):
        ref["product_id"] = str(item["product_id"])
    if _id(item.get("variation_id")):
        ref["variation_id"] = str(item["variation_id"])
    return ref


def map_order_status(order: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> OrderStatus:
    """Woo status onto the canonical one; ``overrides`` (store setting ``status_map``) covers plug-in statuses."""
    status = _require(order, "status", f"order {order.get('id')}")
    if overrides and status in overrides:
        try:
            return OrderStatus(overrides[status])
        except ValueError:
            raise PayloadError(f"status_map maps {status!r} to unknown {overrides[status]!r}",
                               platform=PLATFORM) from None
    if status == "refunded" and order.get("date_completed_gmt"):
        # Fully refunded after it was completed: the goods went out, and the refund snapshots carry what
        # came back. Cancelling here would release stock that already left the shelf.
        return OrderStatus.DELIVERED
    try:
        return STATUS_MAP[status]
    except KeyError:
        pass
    # A status added by a plug-in ("shipped", "awaiting-shipment", ...) and not configured: judge by payment,
    # which Woo records separately, rather than refuse every order in that state.
    return OrderStatus.PAID if order.get("date_paid_gmt") else OrderStatus.PENDING


def _line(item: Mapping[str, Any], currency: str) -> OrderLineSnapshot:
    line_id = _id(_require(item, "id", "line item"))
    quantity = int(item.get("quantity") or 0)
    # `subtotal` (before coupons) and `total` (after) are exact 2-decimal strings. `price` is a JSON number
    # computed by Woo as total / quantity, i.e. already discounted and possibly a repeating decimal
    # (10.00 / 3), so it is only the fallback when subtotal is missing.
    if item.get("subtotal") not in (None, ""):
        subtotal = to_minor(item["subtotal"], currency)
    else:
        subtotal = to_minor(item.get("price"), currency) * quantity
    total = to_minor(item["total"], currency) if item.get("total") not in (None, "") else subtotal
    # Rounded up when the subtotal does not split evenly, so the remainder (< quantity minor units) shows
    # as discount and unit * quantity - discount == total still holds.
    unit = -(-subtotal // quantity) if quantity else subtotal
    return OrderLineSnapshot(
        external_line_id=line_id,
        external_sku_key=sku_key(item),
        merchant_sku=item.get("sku") or None,
        title=html.unescape(item.get("name") or "") or None,  # names come HTML-escaped ("&ndash;")
        quantity=quantity,
        unit_price_minor=unit,
        discount_minor=unit * quantity - total,
        total_minor=total,
        listing_ref=listing_ref(item),
    )


def map_order(order: Mapping[str, Any], status_overrides: Mapping[str, str] | None = None) -> OrderSnapshot:
    """A WooCommerce order (REST representation, which is also the webhook body) -> OrderSnapshot."""
    if not isinstance(order, Mapping):
        raise PayloadError("WooCommerce order is not an object", platform=PLATFORM)
    order_id = _id(_require(order, "id", "order"))
    currency = _require(order, "currency", f"order {order_id}")
    # date_modified (no _gmt) is site-local time without an offset: never read it.
    updated_at = from_naive_utc(_require(order, "date_modified_gmt", f"order {order_id}"))
    status = map_order_status(order, status_overrides)
    return OrderSnapshot(
        platform=PLATFORM,
        external_id=order_id,
        status=status,
        currency=currency,
        total_minor=to_minor(order.get("total"), currency),
        platform_fee_minor=None,
        lines=[_line(item, currency) for item in order.get("line_items") or []],
        created_at=from_naive_utc(order.get("date_created_gmt")),
        paid_at=from_naive_utc(order.get("date_paid_gmt")),
        delivered_at=from_naive_utc(order.get("date_completed_gmt")) if status is OrderStatus.DELIVERED else None,
        # Woo keeps no cancellation time; the last modification is when it reached that state.
        cancelled_at=updated_at if status is OrderStatus.CANCELLED else None,
        updated_at=updated_at,
        raw=dict(order),
    )


def refund_notices(order: Mapping[str, Any]) -> list[RefundNotice]:
    """The order's ``refunds[]`` only hold id, reason and a negative total; the lines need a fetch."""
    order_id = str(order.get("id"))
    return [RefundNotice(external_id=str(r["id"]), order_external_id=order_id)
            for r in order.get("refunds") or [] if r.get("id")]


def _refunded_item_id(item: Mapping[str, Any]) -> str | None:
    for meta in item.get("meta_data") or []:
        if meta.get("key") == "_refunded_item_id":
            return _id(meta.get("value"))
    return None


def restock_for(order: Mapping[str, Any]) -> RestockType:
    """What a refunded line with a quantity does to stock, judged from its order.

    Woo does not record whether a refund restocked (``api_restock`` and the admin's "restock refunded
    items" box leave no trace in the refund resource), so we decide from where the goods are: Woo has no
    shipped state before ``completed``, so on an order that was completed the goods had left and a refund
    with quantities means they came back: "return". On any other order they never left: "cancel" releases
    the reservation. The core caps restocks at what a line shipped either way.
    """
    if order.get("status") == "completed" or order.get("date_completed_gmt"):
        return "return"
    return "cancel"


def map_refund(refund: Mapping[str, Any], order: Mapping[str, Any]) -> RefundSnapshot:
    """A WooCommerce order refund (GET orders/{id}/refunds[/{rid}]) -> RefundSnapshot.

    The refund resource has no currency and no order state, so its order (at least id, currency, status,
    date_completed_gmt) comes along.
    """
    if not isinstance(refund, Mapping):
        raise PayloadError("WooCommerce refund is not an object", platform=PLATFORM)
    refund_id = _id(_require(refund, "id", "refund"))
    order_id = str(_require(order, "id", f"order of refund {refund_id}"))
    currency = _require(order, "currency", f"order {order_id}")
    created_at = from_naive_utc(_require(refund, "date_created_gmt", f"refund {refund_id}"))
    lines = []
    for item in refund.get("line_items") or []:
        quantity = abs(int(item.get("quantity") or 0))  # refund lines are negative: -1 means one unit back
        lines.append(
            RefundLineSnapshot(
                external_line_id=_refunded_item_id(item),
                external_sku_key=sku_key(item),
                merchant_sku=item.get("sku") or None,
                quantity=quantity,
                amount_minor=abs(to_minor(item.get("total"), currency)),
                restock=restock_for(order) if quantity else "no_restock",
            )
        )
    # Woo has no after-sale type: a refund whose quantities came back from a completed order is a
    # return (its goods are back: the merchant records the refund on receipt), anything else money only.
    returned = any(line.restock == "return" for line in lines)
    return RefundSnapshot(
        platform=PLATFORM,
        external_id=refund_id,
        order_external_id=order_id,
        # A Woo refund object exists only once recorded; refunded_payment=false means the merchant paid it
        # back outside the gateway, which is still money returned.
        status=RefundStatus.SUCCEEDED,
        currency=currency,
        amount_minor=abs(to_minor(refund.get("amount"), currency)),
        lines=lines,
        created_at=created_at,
        updated_at=created_at,  # refunds are immutable in Woo: deleted, never edited
        raw=dict(refund),
        kind="return" if returned else "refund_only",
        return_status="received" if returned else None,
    )
