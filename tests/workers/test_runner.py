"""The job runner: leases, stalled jobs, lock keys, dedupe keys, retries and two workers at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, text

from app.models import Job
from app.models.base import utcnow
from app.jobs.queue import insert_job as enqueue
from app.jobs.outcomes import Dead, Done, Retry
from app.jobs.catalogue import JobSpec
from app.workers.runner import Runner


def _runner(db, settings, handlers, name="w1") -> Runner:
    return Runner(db, settings, handlers, worker_id=name)


async def _jobs(db) -> list[Job]:
    async with db.read() as session:
        return (await session.execute(select(Job).order_by(Job.id))).scalars().all()


async def test_done_retry_and_dead_are_recorded(db, settings):
    calls = []

    async def ok(ctx):
        calls.append("ok")
        return Done()

    async def flaky(ctx):
        return Retry(0, "not yet") if ctx.job.attempts < 3 else Done()

    async def doomed(ctx):
        return Dead("never")

    async with db.transaction() as s:
        await enqueue(s, "t.ok")
        await enqueue(s, "t.flaky")
        await enqueue(s, "t.doomed")
    runner = _runner(db, settings, {"t.ok": ok, "t.flaky": flaky, "t.doomed": doomed})
    await runner.run_until_idle()
    jobs = {j.name: j for j in await _jobs(db)}
    assert calls == ["ok"]
    assert (jobs["t.flaky"].status, jobs["t.flaky"].attempts) == ("done", 3)
    assert (jobs["t.doomed"].status, jobs["t.doomed"].last_error) == ("dead", "never")


async def test_an_unexpected_exception_is_retried_then_dead_at_max_attempts(db, settings):
    async def boom(ctx):
        raise RuntimeError("bug")

    async with db.transaction() as s:
        await enqueue(s, "t.boom", max_attempts=2)
    runner = _runner(db, settings, {"t.boom": boom})
    for _ in range(2):
        async with db.transaction() as s:
            await s.execute(text("UPDATE job SET run_after = created_at"))
        await runner.run_one()
    [job] = await _jobs(db)
    assert job.status == "dead" and "bug" in job.last_error


async def test_a_job_whose_lease_ran_out_is_picked_up_again(db, settings):
    async with db.transaction() as s:
        await enqueue(s, "t.slow")
    dead_worker = _runner(db, settings, {})
    job = await dead_worker.claim()  # claimed, then the process "dies"
    assert job is not None
    async with db.transaction() as s:
        await s.execute(text("UPDATE job SET lease_until = :t"),
                        {"t": (utcnow() - timedelta(seconds=1)).replace(tzinfo=None) if db.engine.dialect.name == "sqlite"
                         else utcnow() - timedelta(seconds=1)})
    ran = []

    async def slow(ctx):
        ran.append(ctx.job.id)
        return Done()

    survivor = _runner(db, settings, {"t.slow": slow}, name="w2")
    assert await survivor.run_until_idle() == 1
    assert ran == [job.id]
    # The dead worker's late answer is fenced off: it no longer holds the job.
    await dead_worker._record(job, Retry(0, "late"))
    [after] = await _jobs(db)
    assert after.status == "done"


async def test_dedupe_key_keeps_one_queued_job(db):
    async with db.transaction() as s:
        results = [await enqueue(s, "stock.push", {"n": i}, dedupe_key="stock.push:1") for i in range(5)]
    assert results == [True, False, False, False, False]
    assert len(await _jobs(db)) == 1


async def test_lock_key_keeps_one_running_job_across_workers(db, settings):
    # SQLite too: several loops run platform jobs there, and a poll must still run once per store.
    started = asyncio.Event()
    release = asyncio.Event()
    running = []

    async def poll(ctx):
        running.append(ctx.worker_id)
        started.set()
        await release.wait()
        return Done()

    async with db.transaction() as s:
        await enqueue(s, "sync.poll", lock_key="sync.poll:1")
        await enqueue(s, "sync.poll", lock_key="sync.poll:1")
    a = _runner(db, settings, {"sync.poll": poll}, name="a")
    b = _runner(db, settings, {"sync.poll": poll}, name="b")
    first = asyncio.create_task(a.run_one())
    await started.wait()
    assert await b.claim() is None  # the other job shares the lock key and must wait
    release.set()
    await first
    assert await b.run_one() is not None
    assert len(running) == 2


async def test_two_workers_claim_every_job_exactly_once(db, settings):
    seen: list[int] = []

    async def work(ctx):
        seen.append(ctx.job.id)
        await asyncio.sleep(0)
        return Done()

    async with db.transaction() as s:
        for i in range(60):
            await enqueue(s, "t.work", {"i": i})
    workers = [_runner(db, settings, {"t.work": work}, name=f"w{i}") for i in range(4)]
    await asyncio.gather(*[w.run_until_idle() for w in workers])
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 60


async def test_flood_jobs_are_claimed_and_recorded_in_batches(db, settings):
    from app.workers.runner import BATCH_SIZE

    seen = []

    async def apply(ctx):
        seen.append(ctx.job.id)
        return Done()

    async def apply_batch(ctxs):
        return [await apply(ctx) for ctx in ctxs]

    async with db.transaction() as s:
        for i in range(BATCH_SIZE + 4):
            await enqueue(s, "inbox.apply", {"inbox_id": i})
        await enqueue(s, "stock.push", {"store_id": 1}, lock_key="stock.push:1")
    # A kind declared with a batch handler is claimed in batches; one without runs a job at a time.
    batched = JobSpec(name="inbox.apply", handler=apply, batch=apply_batch)
    runner = _runner(db, settings, {"inbox.apply": batched, "stock.push": apply})
    await runner.run_one()
    assert len(seen) == BATCH_SIZE  # one claim, one record for the whole batch
    await runner.run_until_idle()
    assert len(seen) == BATCH_SIZE + 5 and len(set(seen)) == len(seen)
    assert {j.status for j in await _jobs(db)} == {"done"}


async def test_a_stock_push_runs_before_an_older_backlog(db, settings):
    from app.services.push import handle_stock_push

    order = []

    async def record(ctx):
        order.append(ctx.job.name)
        return Done()

    async with db.transaction() as s:
        for i in range(5):
            await enqueue(s, "t.backlog", {"i": i})
        await enqueue(s, "stock.push", {"store_id": 1}, priority=handle_stock_push.priority)
    runner = _runner(db, settings, {"t.backlog": record, "stock.push": record})
    await runner.run_until_idle()
    assert order[0] == "stock.push" and order.count("t.backlog") == 5


async def test_a_stalled_job_with_a_queued_twin_is_superseded_and_reaping_goes_on(db, settings):
    async with db.transaction() as s:
        await enqueue(s, "stock.push", {"store_id": 1}, dedupe_key="stock.push:1", lock_key="stock.push:1")
        await enqueue(s, "t.other", {})
    dead = _runner(db, settings, {})
    stalled = await dead.claim()
    assert stalled.name == "stock.push"
    other = await dead.claim()  # a second stalled job of another kind
    async with db.transaction() as s:  # a sale queues the push's twin while the worker is dead
        await enqueue(s, "stock.push", {"store_id": 1}, dedupe_key="stock.push:1", lock_key="stock.push:1")
        past = utcnow() - timedelta(seconds=1)
        await s.execute(text("UPDATE job SET lease_until = :t WHERE status = 'running'"),
                        {"t": past.replace(tzinfo=None) if db.engine.dialect.name == "sqlite" else past})
    ran = []

    async def work(ctx):
        ran.append(ctx.job.name)
        return Done()

    survivor = _runner(db, settings, {"stock.push": work, "t.other": work}, name="w2")
    assert await survivor.reap() == 2
    await survivor.run_until_idle()
    assert sorted(ran) == ["stock.push", "t.other"]  # the twin ran, and the other stalled job too
    statuses = {j.id: j.status for j in await _jobs(db)}
    assert statuses[stalled.id] == "done" and statuses[other.id] == "done"


async def test_a_retry_that_collides_with_a_queued_twin_ends_as_superseded(db, settings):
    async def conflict(ctx):
        async with db.transaction() as s:  # a newer change queues the twin during this run
            await enqueue(s, "stock.push", {"store_id": 1}, dedupe_key="stock.push:1", lock_key="stock.push:1")
        return Retry(0.05, "compare-and-set conflict", counts=False)

    async with db.transaction() as s:
        await enqueue(s, "stock.push", {"store_id": 1}, dedupe_key="stock.push:1", lock_key="stock.push:1")
    runner = _runner(db, settings, {"stock.push": conflict})
    first = await runner.run_one()
    jobs = {j.id: j for j in await _jobs(db)}
    assert jobs[first.id].status == "done" and "superseded" in jobs[first.id].last_error
    assert [j.status for j in jobs.values() if j.id != first.id] == ["queued"]


async def test_a_late_answer_from_an_earlier_claim_by_the_same_runner_is_fenced_off(db, settings):
    async with db.transaction() as s:
        await enqueue(s, "stock.push", {"store_id": 1}, lock_key="stock.push:1")
    runner = _runner(db, settings, {})
    first = await runner.claim()  # task A of this runner; its lease runs out while it still works
    past = utcnow() - timedelta(seconds=1)
    async with db.transaction() as s:
        await s.execute(text("UPDATE job SET lease_until = :t"),
                        {"t": past.replace(tzinfo=None) if db.engine.dialect.name == "sqlite" else past})
    await runner.reap()
    second = await runner.claim()  # task B of the same runner takes the job again
    assert second.id == first.id and second.locked_by != first.locked_by
    await runner._record(first, Done())  # A finishes late: must not end B's run or free the lock
    [job] = await _jobs(db)
    assert job.status == "running" and job.locked_by == second.locked_by
