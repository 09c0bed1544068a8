"""Gauges read from the database when ``/metrics`` is scraped: pending dividends and their age, and each
store's token: seconds to its expiry, and how many stores wait for a human to authorise them."""

from __future__ import annotations

from sqlalchemy import func, select

from app.db import Database
from app.metrics import DIVIDEND_OLDEST_AGE, DIVIDEND_PENDING, STORE_TOKEN_EXPIRES_IN, STORES_NEEDING_AUTHORIZATION
from app.models import Settlement, Store
from app.models.base import utcnow


async def refresh_gauges(db: Database) -> None:
    async with db.read() as session:
        count, oldest = (await session.execute(
            select(func.count(), func.min(Settlement.created_at)).where(Settlement.delivery_status != "delivered")
        )).one()
        stores = (await session.execute(select(Store.id, Store.platform, Store.auth_status, Store.auth_expires_at))).all()
    now = utcnow()
    DIVIDEND_PENDING.set(count or 0)
    DIVIDEND_OLDEST_AGE.set((now - _aware(oldest)).total_seconds() if oldest else 0)
    STORE_TOKEN_EXPIRES_IN.clear()  # stores deleted or no longer expiring leave no stale series
    waiting: dict[str, int] = {platform: 0 for _, platform, _, _ in stores}
    for store_id, platform, status, expires_at in stores:
        if expires_at is not None:
            STORE_TOKEN_EXPIRES_IN.labels(str(store_id), platform).set((expires_at - now).total_seconds())
        if status in ("expired", "revoked"):
            waiting[platform] = waiting.get(platform, 0) + 1
    STORES_NEEDING_AUTHORIZATION.clear()
    for platform, n in waiting.items():
        STORES_NEEDING_AUTHORIZATION.labels(platform).set(n)


def _aware(moment):
    from datetime import timezone

    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
