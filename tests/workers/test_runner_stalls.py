"""Issue 15, point 2: the runner never stalls. A job stuck on an unreachable platform (or a leaked
cancellation, or a lease that ran out) cannot stop the other jobs, on SQLite's one-writer set-up too."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import select, text

from app.jobs.catalogue import JobSpec
from app.jobs.outcomes import Done
from app.jobs.queue import insert_job as enqueue
from app.models import Job
from app.models.base import utcnow
from app.workers.gauges import refresh_gauges
from app.workers.runner import Runner
from tests.conftest import test_settings as make_settings
from tests.helpers import wait_until


async def _jobs(db) -> list[Job]:
    async with db.read() as session:
        return (await session.execute(select(Job).order_by(Job.id))).scalars().all()


async def _statuses(db, name: str) -> list[str]:
    return [j.status for j in await _jobs(db) if j.name == name]


async def test_inbox_jobs_finish_while_a_push_hangs_on_an_unreachable_platform(db, database_url):
    """The stall seen on ``make run``: a stock push whose platform never answers sits ahead of inbox jobs
    (priority 10); on SQLite the only worker took it and nothing else ran again."""
    settings = make_settings(database_url, job_lease_s=2.0, worker_poll_s=0.05)
    never = asyncio.Event()
    pushes = []

    async def hang(ctx):  # an httpx call to a shop that never answers
        pushes.append(ctx.job.attempts)
        await never.wait()
        return Done()

    async def apply(ctx):
        async with ctx.db.transaction() as session:
            await session.execute(text("SELECT 1"))
        return Done()

    async def apply_batch(ctxs):
        return [await apply(ctx) for ctx in ctxs]

    handlers = {"stock.push": JobSpec("stock.push", hang, priority=10),
                "inbox.apply": JobSpec("inbox.apply", apply, batch=apply_batch, local=True)}
    async with db.transaction() as s:
        await enqueue(s, "stock.push", {"store_id": 1}, priority=10, lock_key="stock.push:1",
                      dedupe_key="stock.push:1")
    runner = Runner(db, settings, handlers, worker_id="w")
    await runner.start()
    try:
        assert await wait_until(lambda: asyncio.sleep(0, bool(pushes)), timeout_s=5)  # the push is stuck
        async with db.transaction() as s:
            for i in range(60):
                await enqueue(s, "inbox.apply", {"i": i})
        assert await wait_until(lambda: _all_done(db, "inbox.apply"), timeout_s=10), await _statuses(db, "inbox.apply")
        # The hung push was cut off before its lease ran out and queued again with a back-off.
        assert await wait_until(lambda: _push_timed_out(db), timeout_s=10)
        [push] = [j for j in await _jobs(db) if j.name == "stock.push"]
        assert push.status in ("queued", "running")
        assert "timed out" in (push.last_error or "")
    finally:
        never.set()
        await runner.stop()


async def _all_done(db, name: str) -> bool:
    statuses = await _statuses(db, name)
    return bool(statuses) and all(s == "done" for s in statuses)


async def _push_timed_out(db) -> bool:
    return any(j.name == "stock.push" and "timed out" in (j.last_error or "") for j in await _jobs(db))


async def test_a_job_past_its_timeout_is_retried_with_back_off(db, database_url):
    settings = make_settings(database_url, job_lease_s=10.0, job_timeout_s=0.3)

    async def hang(ctx):
        await asyncio.sleep(3600)

    async with db.transaction() as s:
        await enqueue(s, "t.hang")
    runner = Runner(db, settings, {"t.hang": hang}, worker_id="w")
    started = asyncio.get_running_loop().time()
    await runner.run_one()
    assert asyncio.get_running_loop().time() - started < 3
    [job] = await _jobs(db)
    assert job.status == "queued" and job.attempts == 1 and "timed out after 0.3" in job.last_error
    assert job.run_after > utcnow()  # backed off, not hot-looping


async def test_extending_the_lease_extends_the_timeout(db, database_url):
    settings = make_settings(database_url, job_lease_s=0.6)  # timeout ~0.54 s

    async def long_resync(ctx):
        for _ in range(5):  # 1 s in all, progress every 0.2 s
            await asyncio.sleep(0.2)
            await ctx.extend_lease()
        return Done()

    async with db.transaction() as s:
        await enqueue(s, "t.resync")
    runner = Runner(db, settings, {"t.resync": long_resync}, worker_id="w")
    await runner.run_one()
    [job] = await _jobs(db)
    assert job.status == "done", job.last_error


async def test_the_job_timeout_is_shorter_than_the_lease(database_url):
    runner_settings = make_settings(database_url, job_lease_s=30.0, job_timeout_s=600.0)
    assert Runner.timeout_for(runner_settings) < 30.0
    assert Runner.timeout_for(make_settings(database_url, job_lease_s=60.0, job_timeout_s=20.0)) == 20.0


async def test_a_cancellation_leaking_out_of_a_handler_does_not_kill_the_worker(db, database_url):
    settings = make_settings(database_url, worker_poll_s=0.05)
    ran = []

    async def leaky(ctx):
        raise asyncio.CancelledError()  # e.g. a library's own cancel scope gone wrong

    async def ok(ctx):
        ran.append(ctx.job.id)
        return Done()

    async with db.transaction() as s:
        await enqueue(s, "t.leaky", priority=1)
        await enqueue(s, "t.ok", priority=2)
    runner = Runner(db, settings, {"t.leaky": leaky, "t.ok": ok}, worker_id="w")
    await runner.start()
    try:
        assert await wait_until(lambda: asyncio.sleep(0, bool(ran)), timeout_s=5)
        leaked = [j for j in await _jobs(db) if j.name == "t.leaky"][0]
        assert leaked.status == "queued" and "cancel" in leaked.last_error
    finally:
        await runner.stop()


async def test_a_running_job_whose_lease_expired_is_reclaimed_by_the_running_loop(db, database_url):
    settings = make_settings(database_url, worker_poll_s=0.05)
    ran = []

    async def work(ctx):
        ran.append(ctx.job.id)
        return Done()

    async with db.transaction() as s:
        await enqueue(s, "t.work")
    orphan = await Runner(db, settings, {}, worker_id="dead").claim()
    past = utcnow() - timedelta(seconds=1)
    async with db.transaction() as s:
        await s.execute(text("UPDATE job SET lease_until = :t"),
                        {"t": past.replace(tzinfo=None) if db.is_sqlite else past})
    runner = Runner(db, settings, {"t.work": work}, worker_id="w")
    await runner.start()
    try:
        assert await wait_until(lambda: asyncio.sleep(0, ran == [orphan.id]), timeout_s=5)
    finally:
        await runner.stop()


def _gauge(name: str, labels: dict | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


async def test_oldest_due_job_age_gauge(db):
    await refresh_gauges(db)
    assert _gauge("coopsync_jobs_oldest_due_age_seconds") == 0
    now = utcnow()
    async with db.transaction() as s:
        await enqueue(s, "inbox.apply", run_after=now - timedelta(seconds=120))
        await enqueue(s, "inbox.apply", run_after=now - timedelta(seconds=30))
        await enqueue(s, "stock.push", run_after=now - timedelta(seconds=50))
        await enqueue(s, "sync.poll", run_after=now + timedelta(seconds=600))  # not due: not counted
    await refresh_gauges(db)
    assert 119 <= _gauge("coopsync_jobs_oldest_due_age_seconds") < 150
    assert 119 <= _gauge("coopsync_jobs_oldest_due_age_seconds_by_name", {"name": "inbox.apply"}) < 150
    assert 49 <= _gauge("coopsync_jobs_oldest_due_age_seconds_by_name", {"name": "stock.push"}) < 80
    assert _gauge("coopsync_jobs_oldest_due_age_seconds_by_name", {"name": "sync.poll"}) is None
    assert _gauge("coopsync_jobs_due", {"name": "inbox.apply"}) == 2


async def test_shopify_orders_apply_while_shopify_never_answers_a_stock_push(client, app, db, database_url):
    """End to end, as on ``make run``: orders/create webhooks for a Shopify store whose API never answers
    (a stock push per order hangs until cut off); every order is applied all the same."""
    import json

    import respx

    from app.workers.flows import default_handlers
    from tests.helpers import create_sku, create_store, receive
    from tests.shops import SECRET, shopify_headers

    shop = "qinba-tea.myshopify.com"
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "shopify" / "order_rest_single_shopify_python_api.json"
    for code in ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"):
        await create_sku(client, code)
        await receive(client, code, 1000)
    store = await create_store(client, "shopify", external_shop_id=shop, webhook_secret=SECRET,
                               credentials={"access_token": "shpat_test"},
                               settings={"poll_interval_s": 0, "location_id": "1"})
    settings = make_settings(database_url, job_lease_s=2.0, worker_poll_s=0.05)
    runner = Runner(app.state.db, settings, default_handlers(), worker_id="w")
    called = asyncio.Event()

    async def never_answers(request):
        called.set()
        await asyncio.Event().wait()

    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        mock.route(host=shop).mock(side_effect=never_answers)
        await runner.start()
        try:
            for i in range(30):
                order = json.loads(fixture.read_text())["order"]
                order["id"] = 7_000_000 + i
                order["name"] = f"#{7000 + i}"
                body = json.dumps(order).encode()
                r = await client.post(f"/webhooks/shopify/{store['id']}", content=body,
                                      headers=shopify_headers(body, "orders/create"))
                assert r.json()["status"] == "accepted", r.text
            assert await wait_until(lambda: _all_done(db, "inbox.apply"), timeout_s=20), \
                await _statuses(db, "inbox.apply")
            assert called.is_set()  # something did call Shopify and hang
        finally:
            await runner.stop()
