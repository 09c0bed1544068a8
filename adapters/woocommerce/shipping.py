"""Pure helpers of the WooCommerce shipment upload (operations.md 1.5): tracking items of the official Shipment
Tracking extension, or, without it, the same items in the order meta ``_wc_shipment_tracking_items`` (the
key that extension and zorem's Advanced Shipment Tracking both read) with a customer note."""

from __future__ import annotations

from typing import Any, Mapping

from adapters.base import ShipmentUpload, ShippedParcel, ShippingState

TRACKING_META_KEY = "_wc_shipment_tracking_items"
CLOSED_STATUSES = frozenset({"cancelled", "refunded", "failed", "trash"})
SHIPPED_STATUSES = frozenset({"completed"})


def meta_items(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    for meta in order.get("meta_data") or []:
        if isinstance(meta, dict) and meta.get("key") == TRACKING_META_KEY:
            value = meta.get("value")
            return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    return []


def shipping_state(order: Mapping[str, Any], trackings: list[dict[str, Any]] | None) -> ShippingState:
    """``trackings``: the extension's items, or None where it is not installed (the meta is read instead)."""
    items = trackings if trackings is not None else meta_items(order)
    parcels = tuple(ShippedParcel(str(i["tracking_number"]), i.get("custom_tracking_provider") or i.get("tracking_provider"))
                    for i in items if i.get("tracking_number"))
    status = str(order.get("status") or "")
    return ShippingState(parcels=parcels, shipped=status in SHIPPED_STATUSES,
                         closed=status if status in CLOSED_STATUSES else None, status=status or None)


def tracking_item(upload: ShipmentUpload) -> dict[str, Any]:
    """A tracking item for the extension's REST: a custom provider (its own provider list holds few Chinese
    couriers), the link where we know one, and the day it left (the extension's ``date_shipped`` format)."""
    item: dict[str, Any] = {"tracking_number": upload.tracking_number, "custom_tracking_provider": upload.company,
                            "date_shipped": upload.shipped_at.date().isoformat()}
    if upload.tracking_url:
        item["custom_tracking_link"] = upload.tracking_url
    return item


def meta_item(upload: ShipmentUpload) -> dict[str, Any]:
    """The same item as the extension stores it in the order meta (``date_shipped`` in unix seconds)."""
    return {"tracking_provider": "", "custom_tracking_provider": upload.company,
            "custom_tracking_link": upload.tracking_url or "", "tracking_number": upload.tracking_number,
            "date_shipped": str(int(upload.shipped_at.timestamp())), "tracking_id": upload.reference}


def note_text(upload: ShipmentUpload) -> str:
    link = f" {upload.tracking_url}" if upload.tracking_url else ""
    return f"Shipped with {upload.company}, tracking number {upload.tracking_number}.{link}"


def has_note(notes: list[dict[str, Any]], upload: ShipmentUpload) -> bool:
    return any(upload.tracking_number in str(n.get("note") or "") for n in notes)
