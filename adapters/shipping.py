"""Shipment upload helpers shared by the adapters: what a read-back of the platform says about a parcel.

Most platforms give an upload no idempotency key (operations.md 1.6), so every adapter reads what the
platform shows before it writes, and again after a refusal: our tracking number there means the parcel
is uploaded (a retry after a lost answer, or a B04/60110 "already shipped"), another number on the same
goods means the order was shipped some other way, which an operator has to look at.
"""

from __future__ import annotations

from typing import Iterable

from adapters.base import ShipmentResult, ShipmentUpload, ShippedParcel, ShippingState


def tracking_key(number: str | None) -> str:
    """Tracking numbers compare without case and surrounding blanks (platforms echo them upper-cased)."""
    return (number or "").strip().upper()


def holds(state: ShippingState, number: str) -> ShippedParcel | None:
    """The platform's parcel carrying ``number``, if any."""
    key = tracking_key(number)
    return next((p for p in state.parcels if tracking_key(p.tracking_number) == key), None)


def foreign_parcels(upload: ShipmentUpload, state: ShippingState) -> list[ShippedParcel]:
    """Parcels on the platform that are neither this one nor another of ours, for the goods of this one
    (a parcel that names no lines counts for the whole order)."""
    ours = {tracking_key(upload.tracking_number), *map(tracking_key, upload.other_tracking_numbers)}
    lines = {line.external_line_id for line in upload.lines}
    return [p for p in state.parcels if tracking_key(p.tracking_number) not in ours
            and (not p.external_line_ids or lines & set(p.external_line_ids))]


def numbers(parcels: Iterable[ShippedParcel]) -> str:
    return ", ".join(sorted({p.tracking_number for p in parcels}))


def uploaded_already(platform_ref: str | None = None) -> ShipmentResult:
    return ShipmentResult("uploaded", already=True, platform_ref=platform_ref)


def another_number(platform: str, upload: ShipmentUpload, foreign: list[ShippedParcel]) -> ShipmentResult:
    return ShipmentResult("failed", error=(
        f"{platform} shows tracking number {numbers(foreign)} for these goods; ours is "
        f"{upload.tracking_number} ({upload.carrier}). Check which parcel the buyer gets, correct it on "
        "the platform if ours is right, then retry the shipment"))


def closed(platform: str, upload: ShipmentUpload, state: ShippingState) -> ShipmentResult:
    return ShipmentResult("failed", error=(
        f"{platform} shows the order {state.closed}: parcel {upload.tracking_number} ({upload.carrier}) "
        "cannot be uploaded"))


def judge(platform: str, upload: ShipmentUpload, state: ShippingState) -> ShipmentResult | None:
    """The verdict of a read-back: uploaded (ours is there), failed (closed, or another number on these
    goods), or None: nothing stands in the way, send it."""
    if holds(state, upload.tracking_number) is not None:
        return uploaded_already()
    if state.closed:
        return closed(platform, upload, state)
    foreign = foreign_parcels(upload, state)
    if foreign:
        return another_number(platform, upload, foreign)
    return None
