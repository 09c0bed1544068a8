"""Drift: where a platform reports its stock, compare it with what we want it to show and push again
where they differ (a 200 on a push is not proof that the platform applied it); and the operator's
reconciliation report, which compares a window of the platform's orders and its stock with ours."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, TransientError
from app.config import Settings
from app.db import Database
from app.domain import ledger
from app.domain.windows import split_windows
from app.jobs.catalogue import job, per_store
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.models import Listing, Order, Store
from app.models.base import utcnow
from app.services.errors import Conflict, Invalid, NotFound, PlatformUnavailable
from app.services.platforms import adapter_class
from app.services.pull import StopPull, fetch_page
from app.services.push import desired_quantities, queue_store_push
from app.services.connections import connect

log = logging.getLogger("coopsync.drift")

DRIFT_INTERVAL_S = 900.0  # seconds between stock drift checks of a store that can report stock
RECONCILE_MAX_PAGES = 50  # the report fetches at most this many pages; narrow the window for more


@dataclass
class StockComparison:
    listings: list[Listing]
    wanted: dict[int, int]  # listing id -> what we want the shop to show
    actual: dict[str, int]  # external sku key -> what the shop shows
    read: bool  # False: the platform cannot report stock, or nothing is bound

    def drifted(self, listing: Listing) -> bool:
        seen = self.actual.get(listing.external_sku_key)
        return seen is not None and seen != self.wanted.get(listing.id, 0)

    def report(self) -> list[dict]:
        return [{"external_sku_key": l.external_sku_key, "pushed_quantity": l.pushed_quantity,
                 "wanted_quantity": self.wanted.get(l.id, 0), "platform_quantity": self.actual.get(l.external_sku_key),
                 "matches": self.actual.get(l.external_sku_key) == self.wanted.get(l.id, 0)}
                for l in self.listings]


async def compare_stock(db: Database, store: Store, adapter) -> StockComparison:
    """What the shop shows of each bound listing against what we want it to show (the platform is
    read outside any transaction). Empty when the platform cannot report stock."""
    async with db.read() as session:
        listings = (await session.execute(select(Listing).where(
            Listing.store_id == store.id, Listing.sku_id.is_not(None)).order_by(Listing.id))).scalars().all()
        wanted = await desired_quantities(session, {l.sku_id for l in listings})
    if not listings or Capability.STOCK_READ not in adapter_class(store.platform).capabilities:
        return StockComparison(list(listings), wanted, {}, read=False)
    actual = await adapter.fetch_stock([StockLevel(l.external_sku_key, 0, dict(l.listing_ref or {}))
                                        for l in listings])
    return StockComparison(list(listings), wanted, actual, read=True)


async def check_store_drift(ctx: JobContext, store_id: int) -> Outcome:
    async with ctx.db.read() as session:
        store = await session.get(Store, store_id)
    if store is None or Capability.STOCK_READ not in adapter_class(store.platform).capabilities:
        return Done("platform cannot report stock")
    try:
        comparison = await compare_stock(ctx.db, store, await connect(ctx.db, store, ctx.services.get("http")))
    except TransientError as exc:
        return Retry(exc.retry_after_s or 60.0, str(exc))
    except AuthExpiredError as exc:
        return Done(f"store needs authorisation: {exc}")  # checked again on schedule once it is authorised
    except AdapterError as exc:
        return Done(f"drift check failed: {exc}")
    if not comparison.listings:
        return Done("no bound listings")
    drifted = 0
    now = utcnow()
    async with ctx.db.transaction() as session:
        for row in await ledger.lock_listings(session, Listing.id.in_([l.id for l in comparison.listings])):
            row.platform_quantity = comparison.actual.get(row.external_sku_key)
            row.platform_checked_at = now
            if comparison.drifted(row):
                drifted += 1
                # Forget what we believe we pushed, so the next push sends this listing again.
                row.pushed_quantity = None
                log.warning("stock drift", extra={"store_id": store_id, "listing": row.external_sku_key,
                                                  "platform": row.platform_quantity,
                                                  "wanted": comparison.wanted.get(row.id, 0)})
        if drifted:
            await queue_store_push(session, store_id)
    return Done(f"{drifted} drifted")


async def schedule_drift_checks(session: AsyncSession, now: datetime, settings: Settings) -> None:
    for store_id in (await session.execute(select(Store.id).order_by(Store.id))).scalars():
        await handle_drift_check.enqueue(session, {"store_id": store_id},
                                         run_after=now + timedelta(seconds=DRIFT_INTERVAL_S))


@job("stock.drift_check", dedupe=per_store("stock.drift_check"), lock=per_store("stock.drift_check"),
     schedule=schedule_drift_checks)
async def handle_drift_check(ctx: JobContext) -> Outcome:
    return await check_store_drift(ctx, int(ctx.job.payload["store_id"]))


async def reconciliation_report(db: Database, store_id: int, since: datetime, until: datetime,
                                http=None) -> dict:
    """What the platform lists in a window against what coopsync holds, orders and stock.

    The one flow that calls a marketplace while the operator waits (a report has to), so it is
    bounded: at most ``RECONCILE_MAX_PAGES`` pages, each through ``fetch_page`` (throttles waited
    out, short outages retried) with the adapter's timeouts."""
    if until <= since:
        raise Invalid("until must be after since")
    async with db.read() as session:
        store = await session.get(Store, store_id)
    if store is None:
        raise NotFound(f"no store {store_id}")
    cls = adapter_class(store.platform)
    platform_orders: dict[str, str] = {}
    truncated = False
    try:
        adapter = await connect(db, store, http)
        if Capability.ORDERS_PULL in cls.capabilities:
            pages = 0
            for window in split_windows(since, until, cls.max_window):
                cursor = None
                while True:
                    page = await fetch_page(adapter, "orders", window, cursor)
                    pages += 1
                    platform_orders.update((snap.external_id, str(snap.status)) for snap in page.items)
                    cursor = page.next_cursor
                    if cursor is None or pages >= RECONCILE_MAX_PAGES:
                        break
                if pages >= RECONCILE_MAX_PAGES:
                    truncated = True
                    break
        comparison = await compare_stock(db, store, adapter)
    except AuthExpiredError as exc:
        raise Conflict(f"the store needs authorisation: {exc}") from None
    except (AdapterError, StopPull) as exc:
        raise PlatformUnavailable(f"the platform did not answer the reconciliation: {exc}") from None
    async with db.read() as session:
        held = dict((await session.execute(select(Order.external_id, Order.status).where(
            Order.store_id == store_id, Order.external_id.in_(list(platform_orders) or [""])))).all())
    stock = comparison.report() if comparison.read else []
    missing = sorted(e for e in platform_orders if e not in held)
    differs = [{"external_id": e, "platform_status": s, "status": held[e]}
               for e, s in sorted(platform_orders.items()) if e in held and held[e] != s]
    return {"store_id": store_id, "since": since.isoformat(), "until": until.isoformat(),
            "platform_orders": len(platform_orders), "missing_here": missing, "status_differs": differs,
            "stock": stock, "truncated": truncated,
            "resync": {"store_id": store_id, "resource": "orders", "since": since.isoformat(),
                       "until": until.isoformat()},
            "in_sync": not missing and not differs and all(s["matches"] for s in stock)}
