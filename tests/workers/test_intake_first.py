"""Issue 15, point 1: acknowledgements keep their speed while a backlog drains. Loops that cannot run
the queued jobs do not spin on them, the inbox only wakes the loops that apply it, and during a
webhook burst the apply loop takes only its share of the time."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.jobs import queue
from app.jobs.catalogue import JobSpec
from app.jobs.outcomes import Done
from app.jobs.queue import IntakeLoad, insert_job as enqueue, intake_busy
from app.models import Job
from app.workers.runner import Runner
from tests.conftest import test_settings as make_settings


def _handlers():
    async def nothing(ctx):
        return Done()

    async def batch(ctxs):
        return [Done() for _ in ctxs]

    return {"stock.push": JobSpec("stock.push", nothing, priority=10),
            "inbox.apply": JobSpec("inbox.apply", nothing, batch=batch, local=True)}


async def test_a_loop_waits_only_for_jobs_it_may_claim(db, database_url):
    """An inbox job due now made the platform loops (which never take it) look again at once, in a
    loop of empty claims: on SQLite each one a write transaction competing with the intake."""
    settings = make_settings(database_url, worker_poll_s=0.5)
    async with db.transaction() as session:
        await enqueue(session, "inbox.apply", {"inbox_id": 1}, priority=100)
    runner = Runner(db, settings, _handlers(), worker_id="w")
    assert await runner._idle_wait("platform") == 0.5
    assert await runner._idle_wait("local") == 0.0
    assert await runner._idle_wait(None) == 0.0
    # A push held behind a running push of the same store is not due for anyone either.
    async with db.transaction() as session:
        await enqueue(session, "stock.push", {"store_id": 1}, priority=10, lock_key="stock.push:1")
        await session.execute(text("UPDATE job SET status = 'running' WHERE name = 'stock.push'"))
        await enqueue(session, "stock.push", {"store_id": 1, "again": True}, priority=10, lock_key="stock.push:1")
    assert await runner._idle_wait("platform") == 0.5


async def test_the_inbox_wakes_only_the_loops_that_apply_it(db, database_url):
    settings = make_settings(database_url, worker_concurrency=2)
    runner = Runner(db, settings, _handlers(), worker_id="w")
    runner._wakes = {i: (lane, asyncio.Event()) for i, lane in enumerate(["platform", "platform", "local"])}
    runner.wake(local_only=True)
    assert [event.is_set() for _, event in runner._wakes.values()] == [False, False, True]
    runner.wake()
    assert all(event.is_set() for _, event in runner._wakes.values())


async def test_during_a_burst_the_apply_loop_takes_only_its_share(db, database_url, monkeypatch):
    settings = make_settings(database_url, apply_share_under_intake=0.25, intake_burst_rows=8)
    runner = Runner(db, settings, _handlers(), worker_id="w")
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr("app.workers.runner.asyncio.sleep", sleep)
    monkeypatch.setattr(IntakeLoad, "recent", queue.deque(maxlen=9))
    apply, push = Job(name="inbox.apply", payload={}), Job(name="stock.push", payload={})

    await runner._yield_to_intake(apply, 0.04)
    assert slept == []  # no webhooks: the backlog drains at full speed
    for rows in (3, 2, 4, 1, 2):
        IntakeLoad.committed(rows)  # a steady trickle (a flash sale's few hundred a second)
    assert not intake_busy(8)
    await runner._yield_to_intake(apply, 0.04)
    assert slept == []
    for rows in (40, 64, 52, 64, 60, 64):
        IntakeLoad.committed(rows)  # deliveries queue while each commit is written: a burst
    assert intake_busy(8)
    await runner._yield_to_intake(apply, 0.04)
    assert slept == [0.04 * 3]  # 25 % of the time
    await runner._yield_to_intake(push, 0.04)
    assert slept == [0.04 * 3]  # a push (platform work) is never held back: a stale figure oversells
    IntakeLoad.last_at -= 1.0
    assert not intake_busy(8)  # the burst is over


async def test_during_a_burst_the_apply_claims_smaller_batches(db, database_url, monkeypatch):
    """Smaller batches hold SQLite's writer (and the event loop) for less time between the intake's commits."""
    from app.workers import runner as runner_module

    settings = make_settings(database_url, intake_burst_rows=8)
    seen: list[int] = []

    async def batch(ctxs):
        seen.append(len(ctxs))
        return [Done() for _ in ctxs]

    handlers = {"inbox.apply": JobSpec("inbox.apply", None, batch=batch, local=True)}
    async with db.transaction() as session:
        for i in range(100):
            await enqueue(session, "inbox.apply", {"inbox_id": i}, priority=100)
    runner = Runner(db, settings, handlers, worker_id="w")
    monkeypatch.setattr(IntakeLoad, "recent", queue.deque([64] * 9, maxlen=9))
    monkeypatch.setattr(IntakeLoad, "last_at", queue.time.monotonic() + 3600)  # a burst that goes on
    await runner.run_one(lane="local")
    monkeypatch.setattr(IntakeLoad, "last_at", 0.0)  # over
    await runner.run_one(lane="local")
    assert seen == [runner_module.BURST_BATCH_SIZE, runner_module.BATCH_SIZE]
