"""Operator resyncs (202 with a job that reports progress) and the store reconciliation report."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, Operator
from app.api.idempotency import run_idempotent
from app.errors import Problem
from app.models import Resync
from app.pagination import MAX_LIMIT, keyset_page
from app.services import pull
from app.services.drift import reconciliation_report

router = APIRouter(prefix="/v1", tags=["resyncs"])

class ResyncCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_id: int
    resource: Literal["orders", "refunds", "inventory"]
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


def resync_out(r: Resync) -> dict:
    return {"id": r.id, "store_id": r.store_id, "resource": r.resource,
            "since": r.since.isoformat() if r.since else None, "until": r.until.isoformat() if r.until else None,
            "status": r.status, "progress": {"pages": r.pages, "fetched": r.fetched, "created": r.created,
                                             "updated": r.updated, "unchanged": r.unchanged, "failed": r.failed,
                                             "windows": (r.position or {}).get("windows"),
                                             "window": (r.position or {}).get("window")},
            "results": r.results or [], "error": r.error, "created_at": r.created_at.isoformat(),
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "finished_at": r.finished_at.isoformat() if r.finished_at else None}


@router.post("/resyncs", status_code=202)
async def post_resync(request: Request, body: ResyncCreate, db: DbDep, principal: Operator):
    async def work(session: AsyncSession):
        resync = await pull.create_resync(session, body.store_id, body.resource, body.since, body.until)
        return 202, resync_out(resync)

    return await run_idempotent(request, db, principal, work)


@router.get("/resyncs")
async def list_resyncs(db: DbDep, _: Operator, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
                       cursor: str | None = None, store_id: int | None = None):
    stmt = select(Resync) if store_id is None else select(Resync).where(Resync.store_id == store_id)
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, stmt, Resync.id, limit=limit, cursor=cursor, newest_first=True)
    return {"items": [resync_out(r) for r in rows], "next_cursor": next_cursor}


@router.get("/resyncs/{resync_id}")
async def get_resync(resync_id: int, db: DbDep, _: Operator):
    async with db.read() as session:
        resync = await session.get(Resync, resync_id)
        if resync is None:
            raise Problem(404, f"no resync {resync_id}")
        return resync_out(resync)


@router.post("/resyncs/{resync_id}/cancel", status_code=202)
async def cancel_resync(resync_id: int, db: DbDep, _: Operator):
    async with db.transaction() as session:
        return resync_out(await pull.cancel_resync(session, resync_id))


@router.get("/stores/{store_id}/reconciliation")
async def reconciliation(store_id: int, db: DbDep, _: Operator, since: AwareDatetime, until: AwareDatetime):
    """Compare what the platform lists in a window with what coopsync holds (calls the platform)."""
    return await reconciliation_report(db, store_id, since, until)


@router.post("/stores/{store_id}/reconciliation/resync", status_code=202)
async def reconciliation_resync(store_id: int, db: DbDep, _: Operator, since: AwareDatetime, until: AwareDatetime):
    """Turn a reconciliation into a resync of the same window, in one call."""
    async with db.transaction() as session:
        resync = await pull.create_resync(session, store_id, "orders", since, until)
        return resync_out(resync)
