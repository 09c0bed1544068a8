"""Orders and refunds as taken in, with their lines and settlement state; the inbox for operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, Operator, OrdersRead
from app.errors import Problem
from app.models import InboxItem, Order, OrderLine, Refund, RefundLine, Sku
from app.pagination import MAX_LIMIT, keyset_page
from app.services.apply import replay

router = APIRouter(prefix="/v1", tags=["orders"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def _iso(value):
    return value.isoformat() if value else None


async def orders_out(session: AsyncSession, orders: list[Order]) -> list[dict]:
    ids = [o.id for o in orders]
    lines: dict[int, list] = {i: [] for i in ids}
    refunds: dict[int, list] = {i: [] for i in ids}
    if ids:
        rows = (await session.execute(
            select(OrderLine, Sku.sku).outerjoin(Sku, Sku.id == OrderLine.sku_id)
            .where(OrderLine.order_id.in_(ids)).order_by(OrderLine.order_id, OrderLine.line_no))).all()
        for line, code in rows:
            lines[line.order_id].append({
                "id": line.id, "sku": code, "merchant_sku": line.merchant_sku, "external_sku_key": line.external_sku_key,
                "external_line_id": line.external_line_id, "title": line.title, "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor, "discount_minor": line.discount_minor,
                "total_minor": line.total_minor, "reserved": line.reserved_qty, "shipped": line.shipped_qty,
                "restocked": line.restocked_qty, "oversold": line.oversold_qty})
        for refund in (await session.execute(select(Refund).where(Refund.order_id.in_(ids)).order_by(Refund.id))).scalars():
            refunds[refund.order_id].append({"id": refund.id, "external_id": refund.external_id, "status": refund.status,
                                             "amount_minor": refund.amount_minor})
    return [{
        "id": o.id, "store_id": o.store_id, "platform": o.platform, "external_id": o.external_id, "status": o.status,
        "currency": o.currency, "total_minor": o.total_minor, "refunded_minor": o.refunded_minor,
        "platform_fee_minor": o.platform_fee_minor, "lines": lines[o.id], "refunds": refunds[o.id],
        "created_at": _iso(o.placed_at or o.created_at), "paid_at": _iso(o.paid_at), "shipped_at": _iso(o.shipped_at),
        "delivered_at": _iso(o.delivered_at), "cancelled_at": _iso(o.cancelled_at),
        "updated_at": _iso(o.platform_updated_at), "settlement_id": o.settlement_id, "oversold": o.oversold,
        "unbound": o.has_unbound, "seen_via": o.seen_via,
    } for o in orders]


@router.get("/orders")
async def list_orders(db: DbDep, _: OrdersRead, limit: Limit = 100, cursor: str | None = None,
                      store_id: int | None = None, status: str | None = None, unbound: bool | None = None,
                      oversold: bool | None = None, external_id: str | None = None):
    stmt = select(Order)
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
        rows, next_cursor = await keyset_page(session, stmt, Order.id, limit=limit, cursor=cursor)
        return {"items": await orders_out(session, rows), "next_cursor": next_cursor}


@router.get("/orders/{order_id}")
async def get_order(order_id: int, db: DbDep, _: OrdersRead):
    async with db.read() as session:
        order = await session.get(Order, order_id)
        if order is None:
            raise Problem(404, f"no order {order_id}")
        return (await orders_out(session, [order]))[0]


@router.get("/refunds")
async def list_refunds(db: DbDep, _: OrdersRead, limit: Limit = 100, cursor: str | None = None,
                       order_id: int | None = None, status: str | None = None):
    stmt = select(Refund)
    if order_id is not None:
        stmt = stmt.where(Refund.order_id == order_id)
    if status:
        stmt = stmt.where(Refund.status == status)
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, stmt, Refund.id, limit=limit, cursor=cursor)
        ids = [r.id for r in rows]
        lines: dict[int, list] = {i: [] for i in ids}
        if ids:
            q = (select(RefundLine, Sku.sku).outerjoin(OrderLine, OrderLine.id == RefundLine.order_line_id)
                 .outerjoin(Sku, Sku.id == OrderLine.sku_id).where(RefundLine.refund_id.in_(ids))
                 .order_by(RefundLine.refund_id, RefundLine.line_no))
            for line, code in (await session.execute(q)).all():
                lines[line.refund_id].append({"sku": code, "quantity": line.quantity,
                                              "restock": line.restock != "no_restock", "restock_type": line.restock,
                                              "amount_minor": line.amount_minor,
                                              "external_line_id": line.external_line_id})
    return {"items": [{
        "id": r.id, "store_id": r.store_id, "order_id": r.order_id, "order_external_id": r.order_external_id,
        "external_id": r.external_id, "status": r.status, "currency": r.currency, "amount_minor": r.amount_minor,
        "lines": lines[r.id], "updated_at": _iso(r.platform_updated_at), "settlement_id": r.settlement_id,
    } for r in rows], "next_cursor": next_cursor}


def inbox_out(row: InboxItem) -> dict:
    return {"id": row.id, "store_id": row.store_id, "platform": row.platform, "topic": row.topic,
            "dedupe_key": row.dedupe_key, "status": row.status, "attempts": row.attempts, "error": row.error,
            "received_at": _iso(row.received_at), "processed_at": _iso(row.processed_at), "size": len(row.body or b"")}


@router.get("/inbox")
async def list_inbox(db: DbDep, _: Operator, status: str = "failed", limit: Limit = 100, cursor: str | None = None):
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(InboxItem).where(InboxItem.status == status),
                                              InboxItem.id, limit=limit, cursor=cursor)
    return {"items": [inbox_out(r) for r in rows], "next_cursor": next_cursor}


@router.post("/inbox/{inbox_id}/replay", status_code=202)
async def replay_inbox(inbox_id: int, db: DbDep, _: Operator):
    async with db.transaction() as session:
        row = await replay(session, inbox_id)
        if row is None:
            raise Problem(404, f"no inbox row {inbox_id}")
        if row.status == "done":
            raise Problem(409, f"inbox row {inbox_id} was applied already")
        return inbox_out(row)
