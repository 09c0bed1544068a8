"""Gauges read from the database when ``/metrics`` is scraped: pending dividends and their age, each
store's token: seconds to its expiry, and how many stores wait for a human to authorise them, and the
runner's watchdog: how long the oldest due job has waited (overall and per name), and expired leases."""

from __future__ import annotations

from sqlalchemy import func, select

from app.db import Database
from app.metrics import (DIVIDEND_OLDEST_AGE, DIVIDEND_PENDING, JOBS_DUE, JOBS_LEASE_EXPIRED, JOBS_OLDEST_DUE_AGE,
                         JOBS_OLDEST_DUE_AGE_BY_NAME, STORE_TOKEN_EXPIRES_IN, STORES_NEEDING_AUTHORIZATION)
from app.models import Job, Settlement, Store
from app.models.base import utcnow


async def refresh_gauges(db: Database) -> None:
    async with db.read() as session:
        count, oldest = (await session.execute(
            select(func.count(), func.min(Settlement.created_at)).where(Settlement.delivery_status != "delivered")
        )).one()
        stores = (await session.execute(select(Store.id, Store.platform, Store.auth_status, Store.auth_expires_at))).all()
        now = utcnow()
        due = (await session.execute(
            select(Job.name, func.count(), func.min(Job.run_after))
            .where(Job.status == "queued", Job.run_after <= now).group_by(Job.name))).all()
        expired = (await session.execute(
            select(func.count()).where(Job.status == "running", Job.lease_until < now))).scalar()
    _job_gauges(due, expired or 0, now)
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


def _job_gauges(due, expired: int, now) -> None:
    JOBS_DUE.clear()
    JOBS_OLDEST_DUE_AGE_BY_NAME.clear()
    oldest = 0.0
    for name, count, first in due:
        age = max(0.0, (now - _aware(first)).total_seconds())
        JOBS_DUE.labels(name).set(count)
        JOBS_OLDEST_DUE_AGE_BY_NAME.labels(name).set(age)
        oldest = max(oldest, age)
    JOBS_OLDEST_DUE_AGE.set(oldest)
    JOBS_LEASE_EXPIRED.set(expired)


def _aware(moment):
    from datetime import timezone

    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
