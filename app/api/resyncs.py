"""Operator resyncs (202 with a job that reports progress) and the store reconciliation report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, IdValue, Operator, ResyncIdPath, StoreIdPath
from app.api.idempotency import run_idempotent
from app.api.schemas import Page, ReconciliationReport, ResyncCreate, ResyncPublic
from app.errors import Problem
from app.models import Resync
from app.pagination import MAX_LIMIT, keyset_page
from app.services import pull
from app.services.drift import reconciliation_report

router = APIRouter(prefix="/v1", tags=["resyncs"])


# Resyncs are answered with unset fields left out: a push result refused whole names no listing_id.
@router.post("/resyncs", status_code=202, response_model=ResyncPublic, response_model_exclude_unset=True)
async def post_resync(request: Request, body: ResyncCreate, db: DbDep, principal: Operator):
    async def work(session: AsyncSession):
        resync = await pull.create_resync(session, body.store_id, body.resource, body.since, body.until)
        return 202, ResyncPublic.of(resync).model_dump(mode="json", exclude_unset=True)

    return await run_idempotent(request, db, principal, work)


@router.get("/resyncs", response_model_exclude_unset=True)
async def list_resyncs(db: DbDep, _: Operator, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
                       cursor: str | None = None, store_id: IdValue | None = None) -> Page[ResyncPublic]:
    stmt = select(Resync) if store_id is None else select(Resync).where(Resync.store_id == store_id)
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, stmt, Resync.id, limit=limit, cursor=cursor, newest_first=True)
    return Page[ResyncPublic](items=[ResyncPublic.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/resyncs/{resync_id}", response_model_exclude_unset=True)
async def get_resync(resync_id: ResyncIdPath, db: DbDep, _: Operator) -> ResyncPublic:
    async with db.read() as session:
        resync = await session.get(Resync, resync_id)
        if resync is None:
            raise Problem(404, f"no resync {resync_id}")
        return ResyncPublic.of(resync)


@router.post("/resyncs/{resync_id}/cancel", status_code=202, response_model_exclude_unset=True)
async def cancel_resync(resync_id: ResyncIdPath, db: DbDep, _: Operator) -> ResyncPublic:
    async with db.transaction() as session:
        return ResyncPublic.of(await pull.cancel_resync(session, resync_id))


@router.get("/stores/{store_id}/reconciliation")
async def reconciliation(store_id: StoreIdPath, db: DbDep, _: Operator, since: AwareDatetime,
                         until: AwareDatetime) -> ReconciliationReport:
    """Compare what the platform lists in a window with what coopsync holds (calls the platform)."""
    return ReconciliationReport.model_validate(await reconciliation_report(db, store_id, since, until))


@router.post("/stores/{store_id}/reconciliation/resync", status_code=202, response_model_exclude_unset=True)
async def reconciliation_resync(store_id: StoreIdPath, db: DbDep, _: Operator, since: AwareDatetime,
                                until: AwareDatetime) -> ResyncPublic:
    """Turn a reconciliation into a resync of the same window, in one call."""
    async with db.transaction() as session:
        resync = await pull.create_resync(session, store_id, "orders", since, until)
        return ResyncPublic.of(resync)
