"""Settlement runs and statements, and the dividend deliveries operators watch and re-queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, Operator, OrdersRead
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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def statement_out(statement: Settlement) -> dict:
    # The frozen body exactly as sent, plus the live delivery state (which is not part of what is sent).
    return {**statement.body, "run_id": statement.run_id,
            "delivery": {"status": statement.delivery_status, "attempts": statement.delivery_attempts,
                         "delivered_at": _iso(statement.delivered_at)}}


def attempt_out(row: DeliveryAttempt | None) -> dict | None:
    if row is None:
        return None
    return {"attempt_no": row.attempt_no, "started_at": _iso(row.started_at), "duration_ms": row.duration_ms,
            "status_code": row.status_code, "outcome": row.outcome, "error_kind": row.error_kind,
            "response_excerpt": row.response_excerpt}


async def _last_attempts(session: AsyncSession, ids: list[str]) -> dict[str, DeliveryAttempt]:
    if not ids:
        return {}
    newest = (select(DeliveryAttempt.settlement_id, func.max(DeliveryAttempt.attempt_no).label("n"))
              .where(DeliveryAttempt.settlement_id.in_(ids)).group_by(DeliveryAttempt.settlement_id).subquery())
    rows = (await session.execute(select(DeliveryAttempt).join(newest, and_(
        DeliveryAttempt.settlement_id == newest.c.settlement_id, DeliveryAttempt.attempt_no == newest.c.n)))).scalars()
    return {r.settlement_id: r for r in rows}


def delivery_out(statement: Settlement, last: DeliveryAttempt | None) -> dict:
    return {"id": statement.id, "settlement_id": statement.id, "idempotency_key": statement.id,
            "currency": statement.currency, "net_minor": statement.net_minor, "status": statement.delivery_status,
            "attempts": statement.delivery_attempts, "created_at": _iso(statement.created_at),
            "delivered_at": _iso(statement.delivered_at), "last_attempt": attempt_out(last)}


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


@router.post("/settlements/run")
async def run_now(request: Request, db: DbDep, principal: Operator):
    """Settle what is due now: 201 with the statements written, 200 with an empty list if none."""
    settings = request.app.state.settings

    async def work(session: AsyncSession):
        try:
            created = await run_settlement(session, settings)
        except SettlementConflict as exc:
            raise Problem(409, f"{exc}; run again to settle the rest") from None
        items = [statement_out(s) for s in created]
        return (201 if items else 200), {"run_id": created[0].run_id if created else None, "items": items}

    return await run_idempotent(request, db, principal, work)


@router.get("/settlements")
async def list_settlements(db: DbDep, _: OrdersRead, limit: Limit = 100, cursor: str | None = None,
                           currency: str | None = None, delivery_status: str | None = None):
    stmt = _keyset(select(Settlement), decode_cursor(cursor), newest_first=True).limit(limit + 1)
    if currency:
        stmt = stmt.where(Settlement.currency == currency.upper())
    if delivery_status:
        stmt = stmt.where(Settlement.delivery_status == delivery_status)
    async with db.read() as session:
        rows, next_cursor = page(list((await session.execute(stmt)).scalars().all()), limit, _cursor_of)
    return {"items": [statement_out(s) for s in rows], "next_cursor": next_cursor}


@router.get("/settlements/{settlement_id}")
async def get_settlement(settlement_id: str, db: DbDep, _: OrdersRead):
    async with db.read() as session:
        statement = await session.get(Settlement, settlement_id)
    if statement is None:
        raise Problem(404, f"no settlement {settlement_id}")
    return statement_out(statement)


@router.get("/dividend-deliveries")
async def list_deliveries(db: DbDep, _: Operator, status: str | None = None, limit: Limit = 100,
                          cursor: str | None = None):
    if status is not None and status not in DELIVERY_STATUSES:
        raise Problem(400, f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    # Oldest first: the delivery waiting longest is the one an operator looks at first.
    stmt = _keyset(select(Settlement), decode_cursor(cursor), newest_first=False).limit(limit + 1)
    if status:
        stmt = stmt.where(Settlement.delivery_status == status)
    async with db.read() as session:
        rows, next_cursor = page(list((await session.execute(stmt)).scalars().all()), limit, _cursor_of)
        last = await _last_attempts(session, [s.id for s in rows])
    return {"items": [delivery_out(s, last.get(s.id)) for s in rows], "next_cursor": next_cursor}


@router.get("/dividend-deliveries/{settlement_id}")
async def get_delivery(settlement_id: str, db: DbDep, _: Operator):
    async with db.read() as session:
        statement = await session.get(Settlement, settlement_id)
        if statement is None:
            raise Problem(404, f"no dividend delivery {settlement_id}")
        attempts = (await session.execute(select(DeliveryAttempt).where(
            DeliveryAttempt.settlement_id == settlement_id).order_by(DeliveryAttempt.attempt_no))).scalars().all()
    out = delivery_out(statement, attempts[-1] if attempts else None)
    out["attempt_history"] = [attempt_out(a) for a in attempts]
    return out


@router.post("/dividend-deliveries/{settlement_id}/retry", status_code=202)
async def retry_delivery(settlement_id: str, request: Request, db: DbDep, _: Operator):
    """Re-queue a delivery (dead, or pending whose job died) with the same key and a fresh budget."""
    async with db.transaction() as session:
        statement = await requeue_delivery(session, settlement_id, request.app.state.settings)
        last = (await _last_attempts(session, [settlement_id])).get(settlement_id)
        return delivery_out(statement, last)
