"""Reconcile without HTTP: a snapshot against what is held gives the stock effects, the same in any
order and any number of times, and every change reaches the stock-changed outbox."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot, RefundStatus
from app.domain import ledger
from app.domain.reconcile import upsert_order, upsert_refund
from app.models import Job, Listing, Store
from tests.domain.test_settlement import T0, make_sku, make_store


def order(status: OrderStatus, *, quantity: int = 3, minutes: int = 0, external_id: str = "R-1") -> OrderSnapshot:
    at = T0 + timedelta(minutes=minutes)
    return OrderSnapshot(
        platform="sandbox", external_id=external_id, status=status, currency="CNY", total_minor=3000 * quantity,
        lines=[OrderLineSnapshot(external_line_id=f"{external_id}-0", merchant_sku="TEA", quantity=quantity,
                                 unit_price_minor=3000, total_minor=3000 * quantity)],
        created_at=T0, paid_at=T0 if status != OrderStatus.PENDING else None,
        shipped_at=at if status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED) else None,
        delivered_at=at if status == OrderStatus.DELIVERED else None, updated_at=at)


def refund(quantity: int, restock: str, *, amount: int = 3000) -> RefundSnapshot:
    return RefundSnapshot(
        platform="sandbox", external_id="RF-1", order_external_id="R-1", status=RefundStatus("succeeded"),
        currency="CNY", amount_minor=amount,
        lines=[RefundLineSnapshot(external_line_id="R-1-0", quantity=quantity, amount_minor=amount, restock=restock)],
        updated_at=T0 + timedelta(hours=2))


async def apply(db, store_id: int, *snapshots) -> None:
    for snap in snapshots:
        async with db.transaction() as session:
            store = await session.get(Store, store_id)
            if isinstance(snap, RefundSnapshot):
                await upsert_refund(session, store, snap, via="poll")
            else:
                await upsert_order(session, store, snap, via="poll")


async def stock(db, sku_id: int) -> tuple[int, int]:
    async with db.read() as session:
        held = await ledger.balance(session, sku_id)
    return held.on_hand, held.reserved


async def test_paid_reserves_once_however_often_it_is_applied(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    await apply(db, store_id, order(OrderStatus.PAID), order(OrderStatus.PAID), order(OrderStatus.PAID))
    assert await stock(db, sku_id) == (10, 3)


async def test_a_snapshot_that_skips_steps_carries_their_effects(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    await apply(db, store_id, order(OrderStatus.DELIVERED))
    assert await stock(db, sku_id) == (7, 0)


async def test_an_older_snapshot_after_a_newer_one_changes_nothing(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    await apply(db, store_id, order(OrderStatus.SHIPPED, minutes=30), order(OrderStatus.PAID, minutes=5))
    assert await stock(db, sku_id) == (7, 0)


async def test_cancelled_before_shipping_releases_the_reservation(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    await apply(db, store_id, order(OrderStatus.PAID), order(OrderStatus.CANCELLED, minutes=10))
    assert await stock(db, sku_id) == (10, 0)


async def test_a_return_restocks_at_most_what_the_line_shipped(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    await apply(db, store_id, order(OrderStatus.SHIPPED, minutes=30), refund(5, "return", amount=9000))
    assert await stock(db, sku_id) == (10, 0)


async def test_a_refund_without_restock_moves_no_stock(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    await apply(db, store_id, order(OrderStatus.SHIPPED, minutes=30), refund(1, "no_restock"))
    assert await stock(db, sku_id) == (7, 0)


async def test_a_stock_change_queues_one_push_per_store_that_lists_the_sku(db):
    store_id, sku_id = await make_store(db), await make_sku(db, "TEA", [("m-01", 10)])
    async with db.transaction() as session:
        session.add(Listing(store_id=store_id, external_sku_key="TEA", merchant_sku="TEA", sku_id=sku_id,
                            bound_by="auto"))
    async with db.transaction() as session:  # the receipt's own push is not what this test is about
        await session.execute(Job.__table__.delete())
    await apply(db, store_id, order(OrderStatus.PAID))
    async with db.read() as session:
        pushes = (await session.execute(select(Job.name, Job.payload).where(Job.name == "stock.push"))).all()
    assert [(name, payload["store_id"]) for name, payload in pushes] == [("stock.push", store_id)]
