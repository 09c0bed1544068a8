"""Retention: finished jobs and applied inbox rows leave the database once they are old enough.

Every webhook leaves a job row and an inbox row with its raw body (a few KB); a busy shop would
otherwise grow the database without bound. Dead jobs and failed inbox rows are kept: an operator
still has to look at them."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from sqlalchemy import delete, select

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.jobs.catalogue import job, kept_job_names
from app.jobs.outcomes import Done, JobContext, Outcome
from app.models import InboxItem, Job
from app.models.base import utcnow

log = logging.getLogger("coopsync.maintenance")

PRUNE_CHUNK = 2000  # rows per transaction: short write locks, even on SQLite


async def _delete_in_chunks(db: Database, model, *where, between_chunks: Callable[[], Awaitable[None]] | None) -> int:
    removed = 0
    while True:
        async with db.transaction() as session:
            ids = select(model.id).where(*where).order_by(model.id).limit(PRUNE_CHUNK)
            result = await session.execute(delete(model).where(model.id.in_(ids.scalar_subquery()))
                                           .execution_options(synchronize_session=False))
        removed += result.rowcount or 0
        if (result.rowcount or 0) < PRUNE_CHUNK:
            return removed
        if between_chunks is not None:
            await between_chunks()


async def prune(db: Database, settings: Settings, now: datetime | None = None, *,
                between_chunks: Callable[[], Awaitable[None]] | None = None) -> dict[str, int]:
    """Delete finished jobs older than ``job_retention_days`` and applied inbox rows older than
    ``inbox_retention_days`` (0 keeps them for ever); how many of each went. ``between_chunks`` runs
    after each full chunk (the job keeps its lease with it)."""
    now = now or utcnow()
    removed = {"jobs": 0, "inbox": 0}
    if settings.job_retention_days > 0:
        cutoff = now - timedelta(days=settings.job_retention_days)
        removed["jobs"] = await _delete_in_chunks(db, Job, Job.status == "done", Job.finished_at < cutoff,
                                                  Job.name.not_in(kept_job_names()), between_chunks=between_chunks)
    if settings.inbox_retention_days > 0:
        cutoff = now - timedelta(days=settings.inbox_retention_days)
        removed["inbox"] = await _delete_in_chunks(db, InboxItem, InboxItem.status == "done",
                                                   InboxItem.processed_at < cutoff, between_chunks=between_chunks)
    if removed["jobs"] or removed["inbox"]:
        log.info("pruned finished jobs and applied inbox rows", extra=removed)
    return removed


def _day_key(payload: dict) -> str:
    return f"maintenance.prune:{payload['day']}"


async def schedule_prune(session: AsyncSession, now: datetime, settings: Settings) -> None:
    """Once a day, whoever ticks first (the day's key outlives the rows it deletes)."""
    payload = {"day": int(now.timestamp() // 86400)}
    ran = (await session.execute(select(Job.id).where(Job.name == handle_prune.name,
                                                      Job.dedupe_key == _day_key(payload)).limit(1))).first()
    if ran is None:
        await handle_prune.enqueue(session, payload)


@job("maintenance.prune", dedupe=_day_key, lock=lambda _payload: "maintenance.prune", schedule=schedule_prune,
     local=True)
async def handle_prune(ctx: JobContext) -> Outcome:
    removed = await prune(ctx.db, ctx.settings, between_chunks=ctx.extend_lease)
    return Done(f"removed {removed['jobs']} jobs, {removed['inbox']} inbox rows")
