"""Gauges read from the database when ``/metrics`` is scraped (pending dividends and their age)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.db import Database
from app.metrics import DIVIDEND_OLDEST_AGE, DIVIDEND_PENDING
from app.models import Settlement
from app.models.base import utcnow


async def refresh_gauges(db: Database) -> None:
    async with db.read() as session:
        count, oldest = (await session.execute(
            select(func.count(), func.min(Settlement.created_at)).where(Settlement.delivery_status != "delivered")
        )).one()
    DIVIDEND_PENDING.set(count or 0)
    DIVIDEND_OLDEST_AGE.set((utcnow() - _aware(oldest)).total_seconds() if oldest else 0)


def _aware(moment):
    from datetime import timezone

    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
