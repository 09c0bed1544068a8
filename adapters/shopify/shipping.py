"""Shipment upload to Shopify through GraphQL ``fulfillmentCreate`` (operations.md 1.4): the queries, and the
pure planning of which fulfillment order line items a parcel fulfils.

``fulfillmentCreate`` has no idempotency key and its user errors carry no code, so every upload reads the
order first: its fulfillments with their tracking numbers, and its fulfillment orders with what each line
still has to fulfil. What our tracking number already covers is not sent again; the rest is allocated over
the open fulfillment orders, one ``fulfillmentCreate`` per location (one call may not span locations).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping

from adapters.base import ShipmentUpload, ShippedParcel, ShippingState
from adapters.shipping import tracking_key

SHIPPING_QUERY = """
query CoopsyncOrderShipping($id: ID!) {
  order(id: $id) {
    id
    cancelledAt
    displayFulfillmentStatus
    fulfillments(first: 50) {
      id
      status
      trackingInfo(first: 10) { company number }
      fulfillmentLineItems(first: 100) { nodes { quantity lineItem { id } } }
    }
    fulfillmentOrders(first: 50) {
      nodes {
        id
        status
        assignedLocation { location { id } }
        lineItems(first: 100) { nodes { id remainingQuantity lineItem { id } } }
      }
    }
  }
}
"""

FULFILLMENT_CREATE = """
mutation CoopsyncFulfillmentCreate($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id status }
    userErrors { field message }
  }
}
"""

OPEN_STATUSES = frozenset({"OPEN", "IN_PROGRESS"})  # fulfillment orders that can still be fulfilled
SHIPPED_STATUSES = frozenset({"FULFILLED", "PARTIALLY_FULFILLED"})


def order_gid(order_id: str) -> str:
    return order_id if order_id.startswith("gid://") else f"gid://shopify/Order/{order_id}"


def legacy_id(gid: str | None) -> str:
    """``gid://shopify/LineItem/123`` -> ``123`` (our lines keep the REST ids)."""
    return str(gid or "").rsplit("/", 1)[-1]


def _nodes(connection: Any) -> list[dict[str, Any]]:
    if isinstance(connection, dict):
        return [n for n in connection.get("nodes") or [] if isinstance(n, dict)]
    return [n for n in connection or [] if isinstance(n, dict)]


def live_fulfillments(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in _nodes(order.get("fulfillments")) if str(f.get("status") or "").upper() != "CANCELLED"]


def shipping_state(order: Mapping[str, Any]) -> ShippingState:
    parcels = []
    for fulfillment in live_fulfillments(order):
        lines = tuple(legacy_id((i.get("lineItem") or {}).get("id")) for i in _nodes(fulfillment.get("fulfillmentLineItems")))
        for info in fulfillment.get("trackingInfo") or []:
            if info.get("number"):
                parcels.append(ShippedParcel(str(info["number"]), info.get("company"), lines))
    status = str(order.get("displayFulfillmentStatus") or "")
    return ShippingState(parcels=tuple(parcels), shipped=status in SHIPPED_STATUSES,
                         closed="cancelled" if order.get("cancelledAt") else None, status=status or None)


@dataclass
class Plan:
    """What to send: per location, ``(fulfillment order id, [(its line item id, quantity)])``; what our
    tracking number covers already; what cannot be allocated (line id -> units missing)."""

    by_location: dict[str, list[tuple[str, list[tuple[str, int]]]]] = field(default_factory=dict)
    covered: dict[str, int] = field(default_factory=dict)
    ours: list[str] = field(default_factory=list)  # ids of fulfillments carrying our tracking number
    short: dict[str, int] = field(default_factory=dict)


def plan(upload: ShipmentUpload, order: Mapping[str, Any]) -> Plan:
    result = Plan()
    mine = tracking_key(upload.tracking_number)
    covered: dict[str, int] = defaultdict(int)
    for fulfillment in live_fulfillments(order):
        if any(tracking_key(i.get("number")) == mine for i in fulfillment.get("trackingInfo") or []):
            result.ours.append(str(fulfillment.get("id")))
            for item in _nodes(fulfillment.get("fulfillmentLineItems")):
                covered[legacy_id((item.get("lineItem") or {}).get("id"))] += int(item.get("quantity") or 0)
    result.covered = dict(covered)
    need = {line.external_line_id: line.quantity - covered.get(line.external_line_id, 0) for line in upload.lines}
    groups: dict[str, dict[str, list[tuple[str, int]]]] = defaultdict(lambda: defaultdict(list))
    for fo in _nodes(order.get("fulfillmentOrders")):
        if str(fo.get("status") or "").upper() not in OPEN_STATUSES:
            continue
        location = str(((fo.get("assignedLocation") or {}).get("location") or {}).get("id") or "")
        for item in _nodes(fo.get("lineItems")):
            line_id = legacy_id((item.get("lineItem") or {}).get("id"))
            take = min(need.get(line_id, 0), int(item.get("remainingQuantity") or 0))
            if take > 0:
                groups[location][str(fo["id"])].append((str(item["id"]), take))
                need[line_id] -= take
    result.by_location = {loc: list(fos.items()) for loc, fos in groups.items()}
    result.short = {line: units for line, units in need.items() if units > 0}
    return result


def fulfillment_input(upload: ShipmentUpload, orders: list[tuple[str, list[tuple[str, int]]]]) -> dict[str, Any]:
    tracking: dict[str, Any] = {"number": upload.tracking_number, "company": upload.company}
    if upload.tracking_url:
        # A carrier outside Shopify's list gets no link of its own (operations.md 1.4): we give one.
        tracking["url"] = upload.tracking_url
    return {
        "notifyCustomer": True,
        "trackingInfo": tracking,
        "lineItemsByFulfillmentOrder": [
            {"fulfillmentOrderId": fo_id,
             "fulfillmentOrderLineItems": [{"id": item_id, "quantity": qty} for item_id, qty in items]}
            for fo_id, items in orders],
    }
