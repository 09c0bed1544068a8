"""Retention: old finished jobs and old applied inbox rows go; recent ones, dead jobs, failed rows
and pending work stay. The scheduler queues the prune once a day."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app.models import InboxItem, Job, Store
from app.models.base import utcnow
from app.services import maintenance
from app.jobs.catalogue import kept_job_names
from app.services.maintenance import handle_prune, prune
from app.services.settlement import handle_settlement

PRUNE_JOB = handle_prune.name
SETTLEMENT_JOB = handle_settlement.name
from app.workers.schedule import Scheduler


async def _store(db) -> int:
    async with db.transaction() as session:
        store = Store(platform="sandbox", name="shop", external_shop_id="s-1", webhook_secret="x")
        session.add(store)
        await session.flush()
        return store.id


def _job(status: str, age_days: float | None, name: str = "inbox.apply") -> Job:
    finished = utcnow() - timedelta(days=age_days) if age_days is not None else None
    return Job(name=name, payload={}, status=status, finished_at=finished)


def _row(store_id: int, key: str, status: str, age_days: float | None) -> InboxItem:
    processed = utcnow() - timedelta(days=age_days) if age_days is not None else None
    return InboxItem(store_id=store_id, platform="sandbox", dedupe_key=key, body=b"{}", status=status,
                     processed_at=processed)


async def test_prune_keeps_what_is_recent_unfinished_dead_or_failed(db, settings, monkeypatch):
    monkeypatch.setattr(maintenance, "PRUNE_CHUNK", 2)  # several chunks, and one that comes back short
    store_id = await _store(db)
    async with db.transaction() as session:
        session.add_all([_job("done", 31), _job("done", 40), _job("done", 45), _job("done", 29),
                         _job("dead", 100), _job("queued", None), _job("running", None)])
        session.add_all([_row(store_id, "old-done-1", "done", 91), _row(store_id, "old-done-2", "done", 200),
                         _row(store_id, "new-done", "done", 89), _row(store_id, "old-failed", "failed", 200),
                         _row(store_id, "pending", "pending", None)])
    assert await prune(db, settings) == {"jobs": 3, "inbox": 2}
    async with db.read() as session:
        jobs = sorted((j.status, j.finished_at is not None) for j in (await session.execute(select(Job))).scalars())
        keys = sorted((await session.execute(select(InboxItem.dedupe_key))).scalars())
    assert jobs == [("dead", True), ("done", True), ("queued", False), ("running", False)]
    assert keys == ["new-done", "old-failed", "pending"]
    assert await prune(db, settings) == {"jobs": 0, "inbox": 0}


async def test_settlement_runs_are_kept_and_a_long_prune_keeps_its_lease(db, settings, monkeypatch):

    assert SETTLEMENT_JOB in kept_job_names()  # the scheduler's "this interval ran" record
    monkeypatch.setattr(maintenance, "PRUNE_CHUNK", 2)
    async with db.transaction() as session:
        session.add_all([_job("done", 400, name=SETTLEMENT_JOB)] + [_job("done", 50) for _ in range(5)])
    extended = []

    async def extend() -> None:
        extended.append(1)

    assert await prune(db, settings, between_chunks=extend) == {"jobs": 5, "inbox": 0}
    assert len(extended) == 2  # after each full chunk of 2; the last, short one ends it
    async with db.read() as session:
        assert (await session.execute(select(Job.name))).scalars().all() == [SETTLEMENT_JOB]


async def test_zero_days_keeps_everything(db, settings):
    store_id = await _store(db)
    async with db.transaction() as session:
        session.add_all([_job("done", 400), _row(store_id, "ancient", "done", 400)])
    kept = settings.model_copy(update={"job_retention_days": 0, "inbox_retention_days": 0})
    assert await prune(db, kept) == {"jobs": 0, "inbox": 0}


async def test_the_scheduler_queues_one_prune_a_day_and_the_runner_runs_it(db, settings, runner):
    store_id = await _store(db)
    async with db.transaction() as session:
        session.add_all([_job("done", 60, name="stock.push"), _row(store_id, "old", "done", 100)])
    scheduler = Scheduler(db, settings)
    await scheduler.tick()
    await scheduler.tick()  # a second pass the same day (or a second process) adds none
    async with db.read() as session:
        queued = (await session.execute(select(func.count()).select_from(Job).where(
            Job.name == PRUNE_JOB))).scalar_one()
    assert queued == 1
    await runner.run_until_idle()
    async with db.read() as session:
        prune_job = (await session.execute(select(Job).where(Job.name == PRUNE_JOB))).scalar_one()
        left = (await session.execute(select(func.count()).select_from(InboxItem))).scalar_one()
        old_push = (await session.execute(select(func.count()).select_from(Job).where(
            Job.name == "stock.push"))).scalar_one()
    assert prune_job.status == "done" and left == 0 and old_push == 0
    await scheduler.tick()  # after it ran, the same day still adds none
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(Job).where(
            Job.name == PRUNE_JOB))).scalar_one() == 1
