"""Orders and refunds as taken in, with their lines and settlement state; the inbox for operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, IdValue, InboxIdPath, Operator, OrderIdPath, OrdersRead
from app.api.schemas import InboxItemPublic, OrderLinePublic, OrderPublic, Page, RefundLinePublic, RefundPublic
from app.errors import Problem
from app.models import InboxItem, Order, OrderLine, Refund, RefundLine, Sku
from app.pagination import MAX_LIMIT, keyset_page
from app.api.shipments import ship_by_page, shipments_by_order
from app.services.shipments import to_ship_clause
from app.services.apply import replay
from app.api.schemas import OrderFeeView
from app.domain.settlement import order_fee_view
from app.models import Store
from app.models.base import utcnow
from app.services.settlement import expects_fees

router = APIRouter(prefix="/v1", tags=["orders"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


async def orders_of(session: AsyncSession, orders: list[Order]) -> list[OrderPublic]:
    """Each order with its lines and refunds (one query each for all the orders)."""
    ids = [o.id for o in orders]
    lines: dict[int, list[OrderLinePublic]] = {i: [] for i in ids}
    refunds: dict[int, list[Refund]] = {i: [] for i in ids}
    if ids:
        rows = (await session.execute(
            select(OrderLine, Sku.sku).outerjoin(Sku, Sku.id == OrderLine.sku_id)
            .where(OrderLine.order_id.in_(ids)).order_by(OrderLine.order_id, OrderLine.line_no))).all()
        for line, code in rows:
            lines[line.order_id].append(OrderLinePublic.of(line, code))
        of_orders = select(Refund).where(Refund.order_id.in_(ids)).order_by(Refund.id)
        for refund in (await session.execute(of_orders)).scalars():
            refunds[refund.order_id].append(refund)
    shipments = await shipments_by_order(session, ids)
    fees = await _fee_views(session, orders)
    return [OrderPublic.of(o, lines[o.id], refunds[o.id], shipments[o.id], fees[o.id]) for o in orders]


async def _fee_views(session: AsyncSession, orders: list[Order]) -> dict[int, OrderFeeView]:
    """Each order's fee as shown: actual, or estimate, or the wait for the actual one (store settings)."""
    store_ids = {o.store_id for o in orders}
    stores = {s.id: s for s in (await session.execute(select(Store).where(Store.id.in_(store_ids)))).scalars()} \
        if store_ids else {}
    now = utcnow()
    return {o.id: OrderFeeView(**dict(zip(("fee_minor", "source", "awaiting", "estimate_from"), order_fee_view(
        o, stores[o.store_id].options if o.store_id in stores else None, expects_fees(o.platform), now))))
        for o in orders}


@router.get("/orders")
async def list_orders(db: DbDep, _: OrdersRead, limit: Limit = 100, cursor: str | None = None,
                      store_id: IdValue | None = None, status: str | None = None, unbound: bool | None = None,
                      oversold: bool | None = None, external_id: str | None = None,
                      to_ship: bool | None = None) -> Page[OrderPublic]:
    """``?to_ship=true``: what the warehouse still has to ship, the earliest ship-by deadline first."""
    stmt = select(Order)
    if to_ship is not None:
        stmt = stmt.where(to_ship_clause() if to_ship else ~to_ship_clause())
    if store_id is not None:
        stmt = stmt.where(Order.store_id == store_id)
    if status:
        stmt = stmt.where(Order.status == status)
    if unbound is not None:
        stmt = stmt.where(Order.has_unbound.is_(unbound))
    if oversold is not None:
        stmt = stmt.where(Order.oversold.is_(oversold))
    if external_id:
        stmt = stmt.where(Order.external_id == external_id)
    async with db.read() as session:
        if to_ship:
            rows, next_cursor = await ship_by_page(session, stmt, limit=limit, cursor=cursor)
        else:
            rows, next_cursor = await keyset_page(session, stmt, Order.id, limit=limit, cursor=cursor)
        return Page[OrderPublic](items=await orders_of(session, rows), next_cursor=next_cursor)


@router.get("/orders/{order_id}")
async def get_order(order_id: OrderIdPath, db: DbDep, _: OrdersRead) -> OrderPublic:
    async with db.read() as session:
        order = await session.get(Order, order_id)
        if order is None:
            raise Problem(404, f"no order {order_id}")
        return (await orders_of(session, [order]))[0]


@router.get("/refunds")
async def list_refunds(db: DbDep, _: OrdersRead, limit: Limit = 100, cursor: str | None = None,
                       order_id: IdValue | None = None, status: str | None = None) -> Page[RefundPublic]:
    stmt = select(Refund)
    if order_id is not None:
        stmt = stmt.where(Refund.order_id == order_id)
    if status:
        stmt = stmt.where(Refund.status == status)
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, stmt, Refund.id, limit=limit, cursor=cursor)
        ids = [r.id for r in rows]
        lines: dict[int, list[RefundLinePublic]] = {i: [] for i in ids}
        if ids:
            q = (select(RefundLine, Sku.sku).outerjoin(OrderLine, OrderLine.id == RefundLine.order_line_id)
                 .outerjoin(Sku, Sku.id == OrderLine.sku_id).where(RefundLine.refund_id.in_(ids))
                 .order_by(RefundLine.refund_id, RefundLine.line_no))
            for line, code in (await session.execute(q)).all():
                lines[line.refund_id].append(RefundLinePublic.of(line, code))
    return Page[RefundPublic](items=[RefundPublic.of(r, lines[r.id]) for r in rows], next_cursor=next_cursor)


@router.get("/inbox")
async def list_inbox(db: DbDep, _: Operator, status: str = "failed", limit: Limit = 100,
                     cursor: str | None = None) -> Page[InboxItemPublic]:
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(InboxItem).where(InboxItem.status == status),
                                              InboxItem.id, limit=limit, cursor=cursor)
    return Page[InboxItemPublic](items=[InboxItemPublic.of(r) for r in rows], next_cursor=next_cursor)


@router.post("/inbox/{inbox_id}/replay", status_code=202)
async def replay_inbox(inbox_id: InboxIdPath, db: DbDep, _: Operator) -> InboxItemPublic:
    async with db.transaction() as session:
        row = await replay(session, inbox_id)
        if row is None:
            raise Problem(404, f"no inbox row {inbox_id}")
        if row.status == "done":
            raise Problem(409, f"inbox row {inbox_id} was applied already")
        return InboxItemPublic.of(row)
