"""Drift check: where a platform reports its stock, compare it with what we want it to show and
push again where they differ (a 200 on a push is not proof that the platform applied it)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from adapters.base import Capability, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, TransientError
from app.domain import ledger
from app.models import Listing, Store
from app.models.base import utcnow
from app.sync.adapters import adapter_class, make_adapter
from app.sync.push import desired_quantities, mark_auth_expired, queue_store_push
from app.workers.runner import Done, JobContext, Outcome, Retry

log = logging.getLogger("coopsync.drift")


async def check_store_drift(ctx: JobContext, store_id: int) -> Outcome:
    async with ctx.db.read() as session:
        store = await session.get(Store, store_id)
        if store is None or Capability.STOCK_READ not in adapter_class(store.platform).capabilities:
            return Done("platform cannot report stock")
        listings = (await session.execute(select(Listing).where(
            Listing.store_id == store_id, Listing.sku_id.is_not(None)))).scalars().all()
        wanted = await desired_quantities(session, {l.sku_id for l in listings})
    if not listings:
        return Done("no bound listings")
    adapter = make_adapter(store, ctx.services.get("http"))
    try:
        actual = await adapter.fetch_stock([StockLevel(l.external_sku_key, 0, dict(l.listing_ref or {}))
                                            for l in listings])
    except TransientError as exc:
        return Retry(exc.retry_after_s or 60.0, str(exc))
    except AuthExpiredError as exc:
        async with ctx.db.transaction() as session:
            await mark_auth_expired(session, store_id, str(exc))
        return Done("auth expired")
    except AdapterError as exc:
        return Done(f"drift check failed: {exc}")
    drifted = 0
    now = utcnow()
    async with ctx.db.transaction() as session:
        for row in await ledger.lock_listings(session, Listing.id.in_([l.id for l in listings])):
            seen = actual.get(row.external_sku_key)
            row.platform_quantity = seen
            row.platform_checked_at = now
            if seen is not None and seen != wanted.get(row.id, 0):
                drifted += 1
                # Forget what we believe we pushed, so the next push sends this listing again.
                row.pushed_quantity = None
                log.warning("stock drift", extra={"store_id": store_id, "listing": row.external_sku_key,
                                                  "platform": seen, "wanted": wanted.get(row.id, 0)})
        if drifted:
            await queue_store_push(session, store_id)
    return Done(f"{drifted} drifted")
