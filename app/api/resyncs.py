"""Operator resyncs (202 with a job that reports progress) and the store reconciliation report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, StockLevel
from adapters.errors import AdapterError
from app.api.deps import DbDep, Operator
from app.errors import Problem
from app.idempotency import run_idempotent
from app.models import Listing, Order, Resync, Store
from app.pagination import MAX_LIMIT, keyset_page
from app.sync.adapters import adapter_class, make_adapter
from app.sync.pull import RESYNC_JOB
from app.sync.push import desired_quantities
from app.sync.windows import split_windows
from app.workers.jobs import enqueue

router = APIRouter(prefix="/v1", tags=["resyncs"])

RESOURCE_CAPABILITY = {"orders": Capability.ORDERS_PULL, "refunds": Capability.REFUNDS_PULL,
                       "inventory": Capability.STOCK_PUSH}
MAX_RESYNC_SPAN = timedelta(days=92)  # platforms keep about three months of incremental history
RECONCILE_MAX_PAGES = 50  # the report fetches at most this many pages; narrow the window for more


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


async def create_resync(session: AsyncSession, store_id: int, resource: str, since: datetime | None,
                        until: datetime | None) -> Resync:
    """Validate and queue a resync in the caller's transaction (the API and the CLI share it)."""
    store = await session.get(Store, store_id)
    if store is None:
        raise Problem(404, f"no store {store_id}")
    capabilities = adapter_class(store.platform).capabilities
    if RESOURCE_CAPABILITY[resource] not in capabilities:
        raise Problem(422, f"{store.platform} stores cannot resync {resource}")
    if resource != "inventory":
        if since is None or until is None:
            raise Problem(422, "since and until are required for orders and refunds")
        if until <= since:
            raise Problem(422, "until must be after since")
        if until - since > MAX_RESYNC_SPAN:
            raise Problem(422, f"a resync covers at most {MAX_RESYNC_SPAN.days} days")
        windows = len(split_windows(since, until, adapter_class(store.platform).max_window))
    else:
        windows = 1
    resync = Resync(store_id=store_id, resource=resource, since=since, until=until,
                    position={"window": 0, "cursor": None, "windows": windows})
    session.add(resync)
    await session.flush()
    # An inventory resync pushes the store's stock itself: it shares the lock of the store's push
    # jobs, so the two never set the same listings at once.
    lock = f"stock.push:{store_id}" if resource == "inventory" else f"resync:{store_id}:{resource}"
    await enqueue(session, RESYNC_JOB, {"resync_id": resync.id}, lock_key=lock, max_attempts=50)
    return resync


@router.post("/resyncs", status_code=202)
async def post_resync(request: Request, body: ResyncCreate, db: DbDep, principal: Operator):
    async def work(session: AsyncSession):
        resync = await create_resync(session, body.store_id, body.resource, body.since, body.until)
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
        resync = await session.get(Resync, resync_id, with_for_update=True)
        if resync is None:
            raise Problem(404, f"no resync {resync_id}")
        if resync.status in ("succeeded", "failed", "cancelled"):
            raise Problem(409, f"resync {resync_id} already {resync.status}")
        resync.cancel_requested = True  # a running job stops at its next page
        if resync.status == "queued":
            from app.models.base import utcnow

            resync.status, resync.finished_at = "cancelled", utcnow()
        return resync_out(resync)


@router.get("/stores/{store_id}/reconciliation")
async def reconciliation(store_id: int, db: DbDep, _: Operator, since: AwareDatetime, until: AwareDatetime):
    """Compare what the platform lists in a window with what coopsync holds.

    This is the one route that calls a marketplace while the operator waits (a report has to), so
    it is bounded: at most ``RECONCILE_MAX_PAGES`` pages, each call with the adapter's timeouts."""
    if until <= since:
        raise Problem(422, "until must be after since")
    async with db.read() as session:
        store = await session.get(Store, store_id)
        if store is None:
            raise Problem(404, f"no store {store_id}")
    cls = adapter_class(store.platform)
    adapter = make_adapter(store)
    platform_orders: dict[str, str] = {}
    truncated = False
    try:
        if Capability.ORDERS_PULL in cls.capabilities:
            pages = 0
            for window in split_windows(since, until, cls.max_window):
                cursor = None
                while True:
                    result = await adapter.fetch_orders(window, cursor)
                    pages += 1
                    for snap in result.items:
                        platform_orders[snap.external_id] = str(snap.status)
                    cursor = result.next_cursor
                    if cursor is None or pages >= RECONCILE_MAX_PAGES:
                        break
                if pages >= RECONCILE_MAX_PAGES:
                    truncated = True
                    break
        stock_report = []
        async with db.read() as session:
            held = dict((await session.execute(select(Order.external_id, Order.status).where(
                Order.store_id == store_id, Order.external_id.in_(list(platform_orders) or [""])))).all())
            listings = (await session.execute(select(Listing).where(
                Listing.store_id == store_id, Listing.sku_id.is_not(None)))).scalars().all()
            wanted = await desired_quantities(session, {l.sku_id for l in listings})
        if Capability.STOCK_READ in cls.capabilities and listings:
            actual = await adapter.fetch_stock([StockLevel(l.external_sku_key, 0, dict(l.listing_ref or {}))
                                                for l in listings])
            for l in listings:
                stock_report.append({"external_sku_key": l.external_sku_key, "pushed_quantity": l.pushed_quantity,
                                     "wanted_quantity": wanted.get(l.id, 0),
                                     "platform_quantity": actual.get(l.external_sku_key),
                                     "matches": actual.get(l.external_sku_key) == wanted.get(l.id, 0)})
    except AdapterError as exc:
        raise Problem(502, f"the platform did not answer the reconciliation: {exc}") from None
    missing = sorted(e for e in platform_orders if e not in held)
    differs = [{"external_id": e, "platform_status": s, "status": held[e]}
               for e, s in sorted(platform_orders.items()) if e in held and held[e] != s]
    return {"store_id": store_id, "since": since.isoformat(), "until": until.isoformat(),
            "platform_orders": len(platform_orders), "missing_here": missing, "status_differs": differs,
            "stock": stock_report, "truncated": truncated,
            "resync": {"store_id": store_id, "resource": "orders", "since": since.isoformat(),
                       "until": until.isoformat()},
            "in_sync": not missing and not differs and all(s["matches"] for s in stock_report)}


@router.post("/stores/{store_id}/reconciliation/resync", status_code=202)
async def reconciliation_resync(store_id: int, db: DbDep, _: Operator, since: AwareDatetime, until: AwareDatetime):
    """Turn a reconciliation into a resync of the same window, in one call."""
    async with db.transaction() as session:
        resync = await create_resync(session, store_id, "orders", since, until)
        return resync_out(resync)
