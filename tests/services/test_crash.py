"""Crashes: SIGKILL of the service after acknowledging webhooks, and of a worker half-way through a
resync. After a restart everything is applied exactly once and nothing is missed."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from adapters.sandbox.market import SandboxMarket
from adapters.sandbox.server import create_app as sandbox_app
from app.services.pull import create_resync
from app.models import InboxItem, Order, Resync, Sku, StockMovement
from tests.conftest import ADMIN_TOKEN
from tests.helpers import count_rows, wait_until
from tests.procs import Service, ThreadedServer, Worker

pytestmark = pytest.mark.slow
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "crash-secret"


async def _done_rows_reach(db, n: int) -> bool:
    return await count_rows(db, InboxItem, InboxItem.status == "done") >= n


async def _resync_reached(db, resync_id: int, condition) -> bool:
    async with db.read() as session:
        return condition(await session.get(Resync, resync_id))


async def _setup(url: str, market: SandboxMarket, base_url: str | None = None, **settings) -> int:
    async with httpx.AsyncClient(base_url=url, headers=H, timeout=10) as c:
        assert (await c.post("/v1/skus", json={"sku": "GYNO-TEA-250G", "name": "tea"})).status_code == 201
        r = await c.post("/v1/stock/receipts", json={"sku": "GYNO-TEA-250G", "quantity": 100000, "member_id": "m-01"})
        assert r.status_code == 201
        r = await c.post("/v1/stores", json={
            "platform": "sandbox", "name": "crash shop", "external_shop_id": market.name, "webhook_secret": SECRET,
            "settings": {"base_url": base_url or f"inproc://{market.name}", "poll_interval_s": 0, **settings}})
        assert r.status_code == 201
        return r.json()["id"]


async def _post_all(url: str, store_id: int, deliveries) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=16)) as c:
        answers = await asyncio.gather(*[c.post(f"/webhooks/sandbox/{store_id}", content=d.body, headers=d.headers)
                                         for d in deliveries])
    return [a.status_code for a in answers]


async def test_sigkill_after_acknowledging_applies_each_delivery_exactly_once(db, database_url):
    market = SandboxMarket(f"crash-{uuid.uuid4().hex[:6]}", SECRET)
    market.add_listing("tea-250", price_minor=3990, stock=100000, merchant_sku="GYNO-TEA-250G")
    for _ in range(120):
        market.sell("tea-250", 2)
    deliveries = market.take_deliveries()

    # 1. Workers off: every delivery is acknowledged, then the process dies before applying any.
    service = Service(database_url, COOPSYNC_WORKERS="false")
    try:
        store_id = await _setup(service.url, market)
        assert await _post_all(service.url, store_id, deliveries[:60]) == [200] * 60
    finally:
        service.kill()
    assert await count_rows(db, InboxItem, InboxItem.status == "pending") == 60

    # 2. Workers on: acknowledged, killed at once, some mid-apply.
    service = Service(database_url)
    try:
        assert await _post_all(service.url, store_id, deliveries[60:]) == [200] * 60
    finally:
        service.kill()

    # 3. Restart: the leases run out, every row is applied, none twice.
    service = Service(database_url)
    try:
        await wait_until(lambda: _done_rows_reach(db, 120), timeout_s=60, interval_s=0.2)
    finally:
        service.stop()
    assert await count_rows(db, InboxItem, InboxItem.status == "done") == 120
    assert await count_rows(db, Order) == 120
    assert await count_rows(db, StockMovement, StockMovement.kind == "reserve") == 120
    async with db.read() as session:
        sku = (await session.execute(select(Sku).where(Sku.sku == "GYNO-TEA-250G"))).scalar_one()
    assert (sku.on_hand, sku.reserved) == (100000, 240)


async def test_resync_killed_half_way_goes_on_from_its_last_saved_page(db, database_url):
    market = SandboxMarket(f"resync-{uuid.uuid4().hex[:6]}", SECRET)
    market.add_listing("tea-250", price_minor=3990, stock=100000, merchant_sku="GYNO-TEA-250G")
    for _ in range(600):
        market.sell("tea-250", 1)
    market.take_deliveries()
    requests: list[str] = []
    original = market.orders_page

    def slow_page(*args, **kwargs):
        requests.append("page")
        time.sleep(0.03)  # a slow platform, so the kill lands half-way
        return original(*args, **kwargs)

    market.orders_page = slow_page
    server = ThreadedServer(sandbox_app(market))
    service = Service(database_url, COOPSYNC_WORKERS="false")
    try:
        store_id = await _setup(service.url, market, base_url=server.url, page_size=10)
    finally:
        service.stop()
    now = datetime.now(timezone.utc)
    async with db.transaction() as session:
        resync = await create_resync(session, store_id, "orders", now - timedelta(days=1), now + timedelta(minutes=5))
        resync_id = resync.id

    worker = Worker(database_url)
    try:
        await wait_until(lambda: _resync_reached(db, resync_id, lambda r: r.pages >= 20), timeout_s=60, interval_s=0.05)
    finally:
        worker.kill()
    async with db.read() as session:
        saved = await session.get(Resync, resync_id)
    saved_pages, saved_created = saved.pages, saved.created
    assert 20 <= saved_pages < 60, "the kill should land half-way"
    assert await count_rows(db, Order) == saved_created == saved_pages * 10  # records and position committed together
    requests_before = len(requests)

    worker = Worker(database_url)
    try:
        await wait_until(lambda: _resync_reached(db, resync_id, lambda r: r.status == "succeeded"), timeout_s=90)
    finally:
        worker.stop()
        server.stop()
    async with db.read() as session:
        done = await session.get(Resync, resync_id)
    assert done.status == "succeeded"
    assert await count_rows(db, Order) == 600  # nothing missed
    assert (done.fetched, done.created, done.unchanged) == (600, 600, 0)  # no page applied twice
    # It went on from the saved page: at most the one page in flight at the kill is fetched again.
    assert len(requests) - requests_before <= 60 - saved_pages + 1
