"""Shipments (发货回传) and carriers: the warehouse says a parcel left, coopsync tells the platform once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, Fulfillment, IdValue, Operator, OrderIdPath, ShipmentIdPath
from app.api.idempotency import run_idempotent
from app.api.schemas import (CarrierPublic, CarrierUpdate, Page, ShipmentAttemptPublic, ShipmentCreate,
                             ShipmentDetail, ShipmentPublic)
from app.errors import Problem
from app.models import Order, Shipment, ShipmentAttempt
from app.pagination import MAX_LIMIT, decode_cursor, encode_cursor, keyset_page
from app.services import carriers, shipments
from app.services.shipments import ShipmentRequest

router = APIRouter(prefix="/v1", tags=["shipments"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
ShipmentStatus = Literal["pending", "uploaded", "failed", "dead"]
MAX_CARRIERS_PER_PUT = 200


async def shipments_of(session: AsyncSession, rows: list[Shipment]) -> list[ShipmentPublic]:
    lines = await shipments.lines_of(session, [s.id for s in rows])
    return [ShipmentPublic.of(s, lines[s.id]) for s in rows]


async def shipments_by_order(session: AsyncSession, order_ids: list[int]) -> dict[int, list[ShipmentPublic]]:
    """Each order's shipments, oldest first (two queries for all the orders)."""
    found: dict[int, list[ShipmentPublic]] = {i: [] for i in order_ids}
    if order_ids:
        rows = list((await session.execute(select(Shipment).where(Shipment.order_id.in_(order_ids))
                                           .order_by(Shipment.id))).scalars())
        for public in await shipments_of(session, rows):
            found[public.order_id].append(public)
    return found


async def ship_by_page(session: AsyncSession, stmt, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
    """Orders by ship-by deadline, oldest first, those without one last; keyset on (ship_by, id)."""
    after = decode_cursor(cursor)
    if after is not None:
        try:
            last = int(after["id"])
            moment = datetime.fromisoformat(after["s"]) if after.get("s") is not None else None
        except (KeyError, TypeError, ValueError):
            raise Problem(400, "the cursor is not one this service issued") from None
        if moment is not None and moment.tzinfo is None:
            raise Problem(400, "the cursor is not one this service issued")
        if moment is None:
            stmt = stmt.where(Order.ship_by.is_(None), Order.id > last)
        else:
            stmt = stmt.where(or_(Order.ship_by > moment, and_(Order.ship_by == moment, Order.id > last),
                                  Order.ship_by.is_(None)))
    stmt = stmt.order_by(Order.ship_by.is_(None), Order.ship_by, Order.id).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    tail = rows[-1]
    return rows, encode_cursor({"s": tail.ship_by.isoformat() if tail.ship_by else None, "id": tail.id})


@router.post("/orders/{order_id}/shipments", status_code=202, response_model=ShipmentPublic,
             responses={202: {"model": ShipmentPublic, "description": "Recorded; its upload is queued"},
                        409: {"description": "The order has a shipment with this tracking number already, "
                                             "or a request with this Idempotency-Key is in flight"},
                        422: {"description": "A cancelled or fully refunded order, a line or quantity the order "
                                             "does not have, an unknown carrier"}})
async def create_shipment(order_id: OrderIdPath, body: ShipmentCreate, request: Request, db: DbDep,
                          principal: Fulfillment):
    """A parcel left: its goods leave the stock now and the platform is told by a job (202). ``lines``
    omitted ships every unit of the order not in a parcel yet; several shipments make split parcels."""
    wanted = None if body.lines is None else [(line.line_id, line.quantity) for line in body.lines]

    async def work(session: AsyncSession):
        shipment = await shipments.create_shipment(session, order_id, ShipmentRequest(
            carrier=body.carrier, tracking_number=body.tracking_number, lines=wanted, shipped_at=body.shipped_at))
        [public] = await shipments_of(session, [shipment])
        return 202, public.model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)


@router.get("/shipments")
async def list_shipments(db: DbDep, _: Fulfillment, status: ShipmentStatus | None = None,
                         order_id: IdValue | None = None, store_id: IdValue | None = None, limit: Limit = 100,
                         cursor: str | None = None) -> Page[ShipmentPublic]:
    """Shipments, oldest first; ``?status=failed`` (or ``dead``) is what needs an operator."""
    stmt = select(Shipment)
    if status is not None:
        stmt = stmt.where(Shipment.status == status)
    if order_id is not None:
        stmt = stmt.where(Shipment.order_id == order_id)
    if store_id is not None:
        stmt = stmt.where(Shipment.store_id == store_id)
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, stmt, Shipment.id, limit=limit, cursor=cursor)
        return Page[ShipmentPublic](items=await shipments_of(session, rows), next_cursor=next_cursor)


@router.get("/shipments/{shipment_id}")
async def get_shipment(shipment_id: ShipmentIdPath, db: DbDep, _: Fulfillment) -> ShipmentDetail:
    """A shipment with every upload attempt."""
    async with db.read() as session:
        shipment = await session.get(Shipment, shipment_id)
        if shipment is None:
            raise Problem(404, f"no shipment {shipment_id}")
        [public] = await shipments_of(session, [shipment])
        attempts = (await session.execute(select(ShipmentAttempt).where(ShipmentAttempt.shipment_id == shipment_id)
                                          .order_by(ShipmentAttempt.attempt_no))).scalars().all()
    return ShipmentDetail(**public.model_dump(),
                          attempt_history=[ShipmentAttemptPublic.model_validate(a) for a in attempts])


@router.post("/shipments/{shipment_id}/retry", status_code=202,
             responses={409: {"description": "The shipment was uploaded already"}})
async def retry_shipment(shipment_id: ShipmentIdPath, db: DbDep, _: Fulfillment) -> ShipmentPublic:
    """Upload a failed or dead shipment again (after fixing what its error names), with a fresh budget."""
    async with db.transaction() as session:
        shipment = await shipments.requeue_shipment(session, shipment_id)
        [public] = await shipments_of(session, [shipment])
        return public


@router.get("/carriers")
async def list_carriers(db: DbDep, _: Fulfillment) -> Page[CarrierPublic]:
    """The cooperative's carrier codes and each platform's company id or code for them (all on one page)."""
    async with db.transaction() as session:  # the built-in carriers are written on first use
        views = await carriers.list_carriers(session)
    return Page[CarrierPublic](items=[CarrierPublic.of(v.carrier, v.codes) for v in views], next_cursor=None)


@router.put("/carriers", responses={422: {"description": "A new carrier without a name, an unknown platform"}})
async def put_carriers(db: DbDep, _: Operator,
                       body: Annotated[list[CarrierUpdate], Body(max_length=MAX_CARRIERS_PER_PUT)]) -> Page[CarrierPublic]:
    """Add carriers or change them by code; a platform's company given here wins over its own list."""
    codes = [item.code for item in body]
    if len(set(codes)) != len(codes):
        raise Problem(422, "each carrier code once")
    async with db.transaction() as session:
        views = await carriers.put_carriers(session, [item.model_dump(exclude_unset=True) for item in body])
    return Page[CarrierPublic](items=[CarrierPublic.of(v.carrier, v.codes) for v in views], next_cursor=None)
