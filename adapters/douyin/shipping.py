"""Pure reading of a Douyin shop order's shipping state (operations.md 1.3): ``logistics_info[]`` holds one
entry per parcel with its waybill (``tracking_no``), carrier and the sku orders in it."""

from __future__ import annotations

from typing import Any, Mapping

from adapters.base import ShippedParcel, ShippingState
from adapters.fields import ext_id

SHIPPED = frozenset({101, 3, 5})  # partly shipped, shipped, completed
CANCELLED = 4
# Refusals of a shipment that mean "this order is shipped already": judged by reading the order back.
ALREADY_SHIPPED = frozenset({"60110", "70023"})
# 风控审核中: the order is under risk review for one to two hours; try again later.
UNDER_REVIEW = "60109"
UNDER_REVIEW_RETRY_S = 3600.0  # seconds


def business_code(code: str | None) -> str:
    """The business code at the end of an error's ``50002:isv.business-failed:60110``."""
    return (code or "").rsplit(":", 1)[-1]


def shipping_state(detail: Mapping[str, Any]) -> ShippingState:
    try:
        status = int(detail.get("order_status"))
    except (TypeError, ValueError):
        status = None
    parcels = []
    for package in detail.get("logistics_info") or []:
        number = str(package.get("tracking_no") or "").strip()
        if number:
            lines = tuple(i for i in (ext_id(p.get("sku_order_id")) for p in package.get("product_info") or []) if i)
            parcels.append(ShippedParcel(number, package.get("company") or None, lines))
    return ShippingState(parcels=tuple(parcels), shipped=status in SHIPPED,
                         closed="cancelled (order_status 4)" if status == CANCELLED else None,
                         status=f"order_status {status}")
