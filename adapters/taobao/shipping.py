"""Pure reading of a TOP trade's shipping state (operations.md 1.2): each sub-order (``oid``) carries the
waybill of the parcel it went in (``invoice_no``) and its carrier (``logistics_company``)."""

from __future__ import annotations

from typing import Any, Mapping

from adapters.base import ShippedParcel, ShippingState
from adapters.fields import ext_id
from adapters.taobao.mapping import unwrap_list

# The trade states in which something was consigned, and those in which nothing can ship any more.
SHIPPED = frozenset({"SELLER_CONSIGNED_PART", "WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED"})
CLOSED = frozenset({"TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"})


def shipping_state(trade: Mapping[str, Any]) -> ShippingState:
    status = str(trade.get("status") or "")
    by_number: dict[str, tuple[str | None, list[str]]] = {}
    for index, order in enumerate(unwrap_list(trade.get("orders"), "order")):
        number = str(order.get("invoice_no") or "").strip()
        if not number:
            continue
        oid = ext_id(order.get("oid_str")) or ext_id(order.get("oid")) or str(index)
        company, oids = by_number.setdefault(number, (order.get("logistics_company") or None, []))
        oids.append(oid)
    parcels = tuple(ShippedParcel(number, company, tuple(oids)) for number, (company, oids) in by_number.items())
    return ShippingState(parcels=parcels, shipped=status in SHIPPED,
                         closed=f"closed ({status})" if status in CLOSED else None, status=status or None)
