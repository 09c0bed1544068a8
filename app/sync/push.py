"""Stock push: every change of available stock queues one coalesced push per store of that sku.

One job per store may be queued and one may run (``dedupe_key`` / ``lock_key``): the latest
quantity always wins, a slow push never piles up work, and a change made while a push is in
flight queues exactly one more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, TransientError
from app.domain.allocation import ShopDemand, allocate
from app.metrics import STOCK_PUSHES
from app.models import Listing, Sku, Store
from app.models.base import utcnow
from app.sync.adapters import adapter_class, make_adapter
from app.workers.jobs import enqueue
from app.workers.runner import Done, JobContext, Outcome, Retry

log = logging.getLogger("coopsync.push")

PUSH_JOB = "stock.push"


async def queue_stock_push(session: AsyncSession, sku_id: int) -> None:
    store_ids = (await session.execute(
        select(Listing.store_id).where(Listing.sku_id == sku_id).distinct()
    )).scalars().all()
    for store_id in store_ids:
        await queue_store_push(session, store_id)


async def queue_store_push(session: AsyncSession, store_id: int, *, force: bool = False) -> None:
    key = f"{PUSH_JOB}:{store_id}"
    await enqueue(session, PUSH_JOB, {"store_id": store_id, "force": force}, dedupe_key=key, lock_key=key)


@dataclass(frozen=True)
class PlannedPush:
    listing_id: int
    external_sku_key: str
    quantity: int
    listing_ref: dict


async def desired_quantities(session: AsyncSession, sku_ids: set[int]) -> dict[int, int]:
    """Sellable quantity per listing id for every listing of ``sku_ids``, by each sku's policy."""
    if not sku_ids:
        return {}
    skus = (await session.execute(select(Sku).where(Sku.id.in_(sku_ids)))).scalars().all()
    rows = (await session.execute(
        select(Listing, Store).join(Store, Store.id == Listing.store_id).where(Listing.sku_id.in_(sku_ids))
    )).all()
    by_sku: dict[int, list[ShopDemand]] = {}
    for listing, store in rows:
        safety = int((store.settings or {}).get("safety_stock", 0) or 0)
        by_sku.setdefault(listing.sku_id, []).append(ShopDemand(listing.id, store.id, safety))
    result: dict[int, int] = {}
    for sku in skus:
        result.update(allocate(sku.on_hand - sku.reserved, by_sku.get(sku.id, []), sku.allocation))
    return result


async def plan_store_push(session: AsyncSession, store_id: int, *, force: bool) -> list[PlannedPush]:
    listings = (await session.execute(
        select(Listing).where(Listing.store_id == store_id, Listing.sku_id.is_not(None))
    )).scalars().all()
    wanted = await desired_quantities(session, {l.sku_id for l in listings})
    plan = []
    for listing in listings:
        quantity = wanted.get(listing.id, 0)
        if force or listing.pushed_quantity != quantity or listing.push_error:
            plan.append(PlannedPush(listing.id, listing.external_sku_key, quantity, dict(listing.listing_ref or {})))
    return plan


async def push_store(ctx: JobContext, store_id: int, *, force: bool) -> tuple[list[dict], Outcome]:
    """Push what differs; returns a result per listing and the job outcome."""
    async with ctx.db.transaction() as session:
        store = await session.get(Store, store_id)
        if store is None:
            return [], Done("store gone")
        if Capability.STOCK_PUSH not in adapter_class(store.platform).capabilities:
            return [], Done("platform cannot take stock pushes")
        plan = await plan_store_push(session, store_id, force=force)
    if not plan:
        return [], Done("nothing to push")
    adapter = make_adapter(store, ctx.services.get("http"))
    levels = [StockLevel(p.external_sku_key, p.quantity, p.listing_ref) for p in plan]
    outcome: Outcome = Done()
    try:
        results = await adapter.push_stock(levels)
    except AdapterError as exc:
        results = []
        error = str(exc)
        async with ctx.db.transaction() as session:
            if isinstance(exc, AuthExpiredError):
                await mark_auth_expired(session, store_id, error)
            for p in plan:
                listing = await session.get(Listing, p.listing_id)
                listing.push_error = error[:1000]
        STOCK_PUSHES.labels(store.platform, "error").inc(len(plan))
        if isinstance(exc, TransientError):
            return [], Retry(exc.retry_after_s or 5.0, error)
        return [{"external_sku_key": p.external_sku_key, "quantity": p.quantity, "ok": False, "error": error}
                for p in plan], Done(error)
    by_key = {r.external_sku_key: r for r in results}
    report = []
    retry_after = None
    now = utcnow()
    async with ctx.db.transaction() as session:
        for p in plan:
            listing = await session.get(Listing, p.listing_id, with_for_update=True)
            result = by_key.get(p.external_sku_key)
            if result is not None and result.ok:
                listing.pushed_quantity = p.quantity
                listing.pushed_at = now
                listing.push_error = None
                STOCK_PUSHES.labels(store.platform, "ok").inc()
            else:
                error = result.error if result else "no result from the adapter"
                listing.push_error = (error or "failed")[:1000]
                STOCK_PUSHES.labels(store.platform, "error").inc()
                if result is not None and result.error_kind in ("transient", "throttled"):
                    retry_after = max(retry_after or 0, result.retry_after_s or 5.0)
            listing.updated_at = now
            report.append({"listing_id": p.listing_id, "external_sku_key": p.external_sku_key,
                           "quantity": p.quantity, "ok": bool(result and result.ok),
                           "error": None if result and result.ok else (result.error if result else "no result")})
    if retry_after is not None:
        outcome = Retry(retry_after, "some listings were throttled or unavailable")
    return report, outcome


async def mark_auth_expired(session: AsyncSession, store_id: int, error: str) -> None:
    store = await session.get(Store, store_id, with_for_update=True)
    if store is not None:
        store.auth_status = "expired"
        store.auth_error = f"{error[:800]} Resolution: re-authorise the store and PATCH its credentials."
        store.updated_at = utcnow()


async def handle_stock_push(ctx: JobContext) -> Outcome:
    _, outcome = await push_store(ctx, int(ctx.job.payload["store_id"]), force=bool(ctx.job.payload.get("force")))
    return outcome
