"""Settlement runs and statements, and the dividend deliveries operators watch and re-queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, Operator
from app.api.schemas import (DeliveryAttemptPublic, DividendDeliveryDetail, DividendDeliveryPublic, Page,
                             SettlementPublic, SettlementRunPublic)
from app.domain.settlement import SettlementConflict
from app.services.dividends import requeue_delivery
from app.services.settlement import run_settlement
from app.errors import Problem
from app.api.idempotency import run_idempotent
from app.models import DeliveryAttempt, Settlement
from app.pagination import MAX_LIMIT, decode_cursor, page

router = APIRouter(prefix="/v1", tags=["settlements"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
DELIVERY_STATUSES = ("pending", "delivered", "dead")
# Documented as the enum it is; another value is answered 400 (as it always was), not 422.
DeliveryStatus = Annotated[str | None, Query(json_schema_extra={"enum": list(DELIVERY_STATUSES)})]


async def _last_attempts(session: AsyncSession, ids: list[str]) -> dict[str, DeliveryAttempt]:
    if not ids:
        return {}
    newest = (select(DeliveryAttempt.settlement_id, func.max(DeliveryAttempt.attempt_no).label("n"))
              .where(DeliveryAttempt.settlement_id.in_(ids)).group_by(DeliveryAttempt.settlement_id).subquery())
    rows = (await session.execute(select(DeliveryAttempt).join(newest, and_(
        DeliveryAttempt.settlement_id == newest.c.settlement_id, DeliveryAttempt.attempt_no == newest.c.n)))).scalars()
    return {r.settlement_id: r for r in rows}


def _keyset(stmt, after: dict | None, *, newest_first: bool):
    """Keyset on (created_at, id): statement ids are uuids, so the time orders them."""
    if after:
        try:
            moment, last_id = datetime.fromisoformat(after["t"]), str(after["id"])
        except (KeyError, TypeError, ValueError):
            raise Problem(400, "the cursor is not one this service issued") from None
        if newest_first:
            stmt = stmt.where(or_(Settlement.created_at < moment,
                                  and_(Settlement.created_at == moment, Settlement.id < last_id)))
        else:
            stmt = stmt.where(or_(Settlement.created_at > moment,
                                  and_(Settlement.created_at == moment, Settlement.id > last_id)))
    if newest_first:
        return stmt.order_by(Settlement.created_at.desc(), Settlement.id.desc())
    return stmt.order_by(Settlement.created_at, Settlement.id)


def _cursor_of(statement: Settlement) -> dict:
    return {"t": statement.created_at.isoformat(), "id": statement.id}


# A statement's frozen body is answered as sent: keys it lacks (an order line's refund ids) stay out.
@router.post("/settlements/run", response_model=SettlementRunPublic, response_model_exclude_unset=True,
             responses={201: {"model": SettlementRunPublic, "description": "The statements this run wrote"}})
async def run_now(request: Request, db: DbDep, principal: Operator):
    """Settle what is due now: 201 with the statements written, 200 with an empty list if none."""
    settings = request.app.state.settings

    async def work(session: AsyncSession):
        try:
            created = await run_settlement(session, settings)
        except SettlementConflict as exc:
            raise Problem(409, f"{exc}; run again to settle the rest") from None
        answer = SettlementRunPublic(run_id=created[0].run_id if created else None,
                                     items=[SettlementPublic.of(s) for s in created])
        return (201 if created else 200), answer.model_dump(mode="json", exclude_unset=True)

    return await run_idempotent(request, db, principal, work)


@router.get("/settlements", response_model_exclude_unset=True)
async def list_settlements(db: DbDep, _: Operator, limit: Limit = 100, cursor: str | None = None,
                           currency: str | None = None, delivery_status: str | None = None) -> Page[SettlementPublic]:
    stmt = _keyset(select(Settlement), decode_cursor(cursor), newest_first=True).limit(limit + 1)
    if currency:
        stmt = stmt.where(Settlement.currency == currency.upper())
    if delivery_status:
        stmt = stmt.where(Settlement.delivery_status == delivery_status)
    async with db.read() as session:
        rows, next_cursor = page(list((await session.execute(stmt)).scalars().all()), limit, _cursor_of)
    return Page[SettlementPublic](items=[SettlementPublic.of(s) for s in rows], next_cursor=next_cursor)


@router.get("/settlements/{settlement_id}", response_model_exclude_unset=True)
async def get_settlement(settlement_id: str, db: DbDep, _: Operator) -> SettlementPublic:
    async with db.read() as session:
        statement = await session.get(Settlement, settlement_id)
    if statement is None:
        raise Problem(404, f"no settlement {settlement_id}")
    return SettlementPublic.of(statement)


@router.get("/dividend-deliveries")
async def list_deliveries(db: DbDep, _: Operator, status: DeliveryStatus = None, limit: Limit = 100,
                          cursor: str | None = None) -> Page[DividendDeliveryPublic]:
    if status is not None and status not in DELIVERY_STATUSES:
        raise Problem(400, f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    # Oldest first: the delivery waiting longest is the one an operator looks at first.
    stmt = _keyset(select(Settlement), decode_cursor(cursor), newest_first=False).limit(limit + 1)
    if status:
        stmt = stmt.where(Settlement.delivery_status == status)
    async with db.read() as session:
        rows, next_cursor = page(list((await session.execute(stmt)).scalars().all()), limit, _cursor_of)
        last = await _last_attempts(session, [s.id for s in rows])
    items = [DividendDeliveryPublic.of(s, last.get(s.id)) for s in rows]
    return Page[DividendDeliveryPublic](items=items, next_cursor=next_cursor)


@router.get("/dividend-deliveries/{settlement_id}")
async def get_delivery(settlement_id: str, db: DbDep, _: Operator) -> DividendDeliveryDetail:
    async with db.read() as session:
        statement = await session.get(Settlement, settlement_id)
        if statement is None:
            raise Problem(404, f"no dividend delivery {settlement_id}")
        attempts = (await session.execute(select(DeliveryAttempt).where(
            DeliveryAttempt.settlement_id == settlement_id).order_by(DeliveryAttempt.attempt_no))).scalars().all()
    return DividendDeliveryDetail.of(statement, attempts[-1] if attempts else None,
                                     attempt_history=[DeliveryAttemptPublic.model_validate(a) for a in attempts])


@router.post("/dividend-deliveries/{settlement_id}/retry", status_code=202)
async def retry_delivery(settlement_id: str, request: Request, db: DbDep, _: Operator) -> DividendDeliveryPublic:
    """Re-queue a delivery (dead, or pending whose job died) with the same key and a fresh budget."""
    async with db.transaction() as session:
        statement = await requeue_delivery(session, settlement_id, request.app.state.settings)
        last = (await _last_attempts(session, [settlement_id])).get(settlement_id)
        return DividendDeliveryPublic.of(statement, last)
