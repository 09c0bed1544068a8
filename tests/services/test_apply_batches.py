"""Applying inbox rows in batches on PostgreSQL: two batches whose rows touch the same skus in
opposite orders both finish (no deadlock), because each takes its listing and sku locks up front,
in id order."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from app.models import Job
from app.services import apply as inbox
from app.jobs.outcomes import Done, JobContext
from tests.helpers import create_sku, receive
from tests.shops import stock_of


async def _two_listings_in_steady_state(shop, client, runner) -> None:
    """A second listing and sku; both listings exist already (one order of each applied)."""
    shop.market.add_listing("tea-500", price_minor=6990, stock=1000, merchant_sku="GYNO-TEA-500G")
    await create_sku(client, "GYNO-TEA-500G")
    await receive(client, "GYNO-TEA-500G", 100, "m-02")
    shop.market.sell("tea-250", 1)
    shop.market.sell("tea-500", 1)
    await shop.deliver()
    await runner.run_until_idle()


class FirstStepBarrier:
    """Wraps apply steps: after its first call in a transaction, a step waits (up to a second) until
    a second transaction made its first call too. Locks taken record by record would then have each
    transaction hold one sku and want the other's."""

    def __init__(self) -> None:
        self.first_done: set[int] = set()
        self.both_started = asyncio.Event()

    def wrap(self, real):
        async def step_then_wait(session, *args, **kwargs):
            result = await real(session, *args, **kwargs)
            if id(session) not in self.first_done:
                self.first_done.add(id(session))
                if len(self.first_done) == 2:
                    self.both_started.set()
                try:
                    await asyncio.wait_for(self.both_started.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
            return result
        return step_then_wait


async def test_two_batches_crossing_the_same_skus_both_apply_without_a_deadlock(shop, client, db, app, runner,
                                                                                settings, monkeypatch):
    if db.is_sqlite:
        pytest.skip("SQLite runs one writer at a time: batches cannot interleave")
    await _two_listings_in_steady_state(shop, client, runner)

    # Batch A sells 250 g then 500 g; batch B sells 500 g then 250 g.
    for key in ("tea-250", "tea-500", "tea-500", "tea-250"):
        shop.market.sell(key, 1)
    await shop.deliver()
    async with db.read() as session:
        jobs = (await session.execute(select(Job).where(Job.name == "inbox.apply", Job.status == "queued")
                                      .order_by(Job.id))).scalars().all()
    assert len(jobs) == 4
    contexts = [JobContext(db=db, settings=settings, job=job, worker_id="test") for job in jobs]

    monkeypatch.setattr(inbox, "apply_prepared", FirstStepBarrier().wrap(inbox.apply_prepared))
    outcomes = await asyncio.gather(inbox.handle_inbox_batch(contexts[:2]), inbox.handle_inbox_batch(contexts[2:]))
    assert all(isinstance(o, Done) and o.note is None for batch in outcomes for o in batch), outcomes
    assert await stock_of(client, "GYNO-TEA-250G") == (100, 3)
    assert await stock_of(client, "GYNO-TEA-500G") == (100, 3)


async def test_a_poll_page_and_a_batch_crossing_the_same_skus_both_apply_without_a_deadlock(
        shop, client, db, app, runner, settings, monkeypatch):
    if db.is_sqlite:
        pytest.skip("SQLite runs one writer at a time: transactions cannot interleave")
    from app.models import Store
    from app.services import pull
    from app.services.platforms import make_adapter

    await _two_listings_in_steady_state(shop, client, runner)

    # The webhooks of two sales (250 g, then 500 g) wait in the inbox; a poll page brings two other
    # sales (500 g, then 250 g).
    shop.market.sell("tea-250", 1)
    shop.market.sell("tea-500", 1)
    await shop.deliver()
    shop.market.sell("tea-500", 1)
    shop.market.sell("tea-250", 1)
    async with db.read() as session:
        store = await session.get(Store, shop.store["id"])
        jobs = (await session.execute(select(Job).where(Job.name == "inbox.apply", Job.status == "queued")
                                      .order_by(Job.id))).scalars().all()
    adapter = make_adapter(store)
    page = [snap for d in shop.market.take_deliveries() for snap in adapter.parse_webhook(d.headers, d.body).orders]
    assert len(jobs) == 2 and len(page) == 2

    # One barrier for both: the batch's first order and the page's first order.
    barrier = FirstStepBarrier()
    monkeypatch.setattr(inbox, "upsert_order", barrier.wrap(inbox.upsert_order))
    monkeypatch.setattr(pull, "upsert_order", barrier.wrap(pull.upsert_order))

    async def poll_page() -> pull.Counts:
        counts = pull.Counts()
        async with db.transaction() as session:
            await pull.apply_items(session, store, "orders", page, counts, "poll")
        return counts

    batch, counts = await asyncio.gather(
        inbox.handle_inbox_batch([JobContext(db=db, settings=settings, job=j, worker_id="test") for j in jobs]),
        poll_page())
    assert all(isinstance(o, Done) and o.note is None for o in batch), batch
    assert counts.created == 2 and counts.failed == 0, counts
    assert await stock_of(client, "GYNO-TEA-250G") == (100, 3)
    assert await stock_of(client, "GYNO-TEA-500G") == (100, 3)


async def _real_deadlock(db) -> Exception:
    """Two transactions that each lock a row the other then wants: PostgreSQL kills one of them."""
    from sqlalchemy import text

    from app.models import Sku

    async with db.transaction() as session:
        session.add_all([Sku(sku="LOCK-A", name="a"), Sku(sku="LOCK-B", name="b")])
    first_locked, second_locked = asyncio.Event(), asyncio.Event()

    async def lock(mine: str, theirs: str, locked: asyncio.Event, other: asyncio.Event) -> None:
        async with db.transaction() as session:
            await session.execute(text("SELECT 1 FROM sku WHERE sku = :s FOR UPDATE"), {"s": mine})
            locked.set()
            await other.wait()
            await session.execute(text("SELECT 1 FROM sku WHERE sku = :s FOR UPDATE"), {"s": theirs})

    results = await asyncio.gather(lock("LOCK-A", "LOCK-B", first_locked, second_locked),
                                   lock("LOCK-B", "LOCK-A", second_locked, first_locked), return_exceptions=True)
    [error] = [r for r in results if isinstance(r, Exception)]
    return error


async def test_a_row_that_hits_a_deadlock_is_retried_not_kept_as_failed(shop, client, db, runner, monkeypatch):
    if db.is_sqlite:
        pytest.skip("SQLite has no deadlock detection: one writer at a time")
    from app.db import is_transient_db_error
    from app.models import InboxItem

    error = await _real_deadlock(db)
    assert is_transient_db_error(error), repr(error)
    shop.market.sell("tea-250", 1)
    await shop.deliver()

    real_upsert = inbox.upsert_order
    calls = {"n": 0}

    async def deadlocked_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return await real_upsert(*args, **kwargs)

    monkeypatch.setattr(inbox, "upsert_order", deadlocked_once)
    await runner.run_until_idle()
    from tests.shops import make_jobs_due

    await make_jobs_due(db)
    await runner.run_until_idle()
    async with db.read() as session:
        [row] = (await session.execute(select(InboxItem))).scalars().all()
    assert row.status == "done", row.error
    assert calls["n"] == 2
    assert await stock_of(client) == (100, 1)
