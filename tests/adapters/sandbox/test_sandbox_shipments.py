"""The sandbox takes shipments too (for demos): in process and over HTTP, the same tracking number twice
changes nothing, parcels covering every line ship the order, another number on it is reported."""

from __future__ import annotations

from datetime import datetime, timezone

from adapters.base import ShipmentLine, ShipmentUpload


def upload(order: dict, number: str, quantity: int | None = None, others: tuple[str, ...] = ()) -> ShipmentUpload:
    line = order["lines"][0]
    return ShipmentUpload(reference=f"coopsync-{number}", order_external_id=order["id"], carrier="ZTO", company="ZTO",
                          tracking_number=number, other_tracking_numbers=others,
                          lines=(ShipmentLine(line["id"], quantity or line["quantity"], line["quantity"]),),
                          shipped_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


async def _split_parcels(adapter, market) -> None:
    order = market.sell("tea-250", 2)
    assert (await adapter.upload_shipment(upload(order, "ZT1", 1))).status == "uploaded"
    assert market.get_order(order["id"])["status"] == "paid"
    again = await adapter.upload_shipment(upload(order, "ZT1", 1))
    assert (again.status, again.already) == ("uploaded", True)
    assert (await adapter.upload_shipment(upload(order, "ZT2", 1, others=("ZT1",)))).status == "uploaded"
    assert market.get_order(order["id"])["status"] == "shipped"
    state = await adapter.fetch_shipping(order["id"])
    assert [p.tracking_number for p in state.parcels] == ["ZT1", "ZT2"] and state.shipped


async def test_split_parcels_ship_the_order_once_and_a_repeat_changes_nothing_in_process(market, inproc_adapter):
    await _split_parcels(inproc_adapter, market)


async def test_split_parcels_ship_the_order_once_and_a_repeat_changes_nothing_over_http(market, http_adapter):
    await _split_parcels(http_adapter, market)


async def test_another_number_and_a_cancelled_order_fail(market, inproc_adapter):
    order = market.sell("tea-250", 1)
    market.upload_shipment(order["id"], "SF9", "SF")
    result = await inproc_adapter.upload_shipment(upload(order, "ZT1"))
    assert result.status == "failed" and "SF9" in result.error
    cancelled = market.sell("honey-500", 1)
    market.cancel(cancelled["id"])
    result = await inproc_adapter.upload_shipment(upload(cancelled, "ZT1"))
    assert result.status == "failed" and "cancelled" in result.error
