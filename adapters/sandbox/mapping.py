"""Pure mapping of the sandbox market's own order and refund JSON onto canonical snapshots."""

from __future__ import annotations

from typing import Any, Mapping

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot
from adapters.base import RefundStatus
from adapters.errors import PayloadError
from adapters.units import from_iso

PLATFORM = "sandbox"
RESTOCK_TYPES = ("no_restock", "cancel", "return")


def _minor(value: Any, field: str) -> int:
    """The sandbox writes money as integer minor units already; anything else is a broken payload."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{field}={value!r} is not integer minor units", platform=PLATFORM)
    return value


def _required(raw: Mapping[str, Any], field: str) -> Any:
    try:
        return raw[field]
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"sandbox payload lacks {field}", platform=PLATFORM) from exc


def refund_from_sandbox(raw: Mapping[str, Any]) -> RefundSnapshot:
    try:
        status = RefundStatus(_required(raw, "status"))
    except ValueError as exc:
        raise PayloadError(f"unknown refund status {raw.get('status')!r}", platform=PLATFORM) from exc
    lines = []
    for line in raw.get("lines") or []:
        restock = line.get("restock", "no_restock")
        if restock not in RESTOCK_TYPES:
            raise PayloadError(f"unknown restock {restock!r}", platform=PLATFORM)
        lines.append(RefundLineSnapshot(
            external_line_id=line.get("line_id"), external_sku_key=line.get("sku_key"),
            merchant_sku=line.get("merchant_sku"), quantity=_minor(_required(line, "quantity"), "quantity"),
            amount_minor=_minor(line.get("amount_minor", 0), "amount_minor"), restock=restock,
        ))
    return RefundSnapshot(
        platform=PLATFORM, external_id=str(_required(raw, "id")), order_external_id=str(_required(raw, "order_id")),
        status=status, currency=str(_required(raw, "currency")),
        amount_minor=_minor(_required(raw, "amount_minor"), "amount_minor"), lines=lines,
        created_at=from_iso(raw.get("created_at")), updated_at=from_iso(_required(raw, "updated_at")),
        raw=dict(raw),
    )


def order_from_sandbox(raw: Mapping[str, Any]) -> OrderSnapshot:
    try:
        status = OrderStatus(_required(raw, "status"))  # the sandbox speaks the canonical statuses
    except ValueError as exc:
        raise PayloadError(f"unknown order status {raw.get('status')!r}", platform=PLATFORM) from exc
    lines = [
        OrderLineSnapshot(
            external_line_id=str(_required(line, "id")), external_sku_key=line.get("sku_key"),
            merchant_sku=line.get("merchant_sku"), title=line.get("title"),
            quantity=_minor(_required(line, "quantity"), "quantity"),
            unit_price_minor=_minor(_required(line, "unit_price_minor"), "unit_price_minor"),
            total_minor=_minor(_required(line, "total_minor"), "total_minor"),
            listing_ref={"sku_key": line["sku_key"]} if line.get("sku_key") else {},
        )
        for line in _required(raw, "lines")
    ]
    return OrderSnapshot(
        platform=PLATFORM, external_id=str(_required(raw, "id")), status=status,
        currency=str(_required(raw, "currency")), total_minor=_minor(_required(raw, "total_minor"), "total_minor"),
        platform_fee_minor=None, lines=lines,
        refunds=[refund_from_sandbox(r) for r in raw.get("refunds") or []],
        created_at=from_iso(raw.get("created_at")), paid_at=from_iso(raw.get("paid_at")),
        shipped_at=from_iso(raw.get("shipped_at")), delivered_at=from_iso(raw.get("delivered_at")),
        cancelled_at=from_iso(raw.get("cancelled_at")), updated_at=from_iso(_required(raw, "updated_at")),
        raw=dict(raw),
    )
