"""Two API processes, each with its workers, on one PostgreSQL database: webhooks spread over both
(and duplicated across them) are applied once, and each change is pushed once."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import select

from adapters.sandbox.market import SandboxMarket
from adapters.sandbox.server import create_app as sandbox_app
from app.models import InboxItem, Listing, Order, Sku, StockMovement
from tests.conftest import ADMIN_TOKEN
from tests.helpers import count_rows, wait_until
from tests.procs import Service, ThreadedServer

pytestmark = pytest.mark.slow
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "replica-secret"



async def _wait_for_replicas(predicate) -> None:
    assert await wait_until(predicate), "timed out waiting for the replicas"


async def test_two_replicas_apply_each_webhook_once_and_push_each_change_once(db, database_url, engine_name):
    if engine_name != "postgresql":
        pytest.skip("replicas coordinate through PostgreSQL; SQLite is one process")
    market = SandboxMarket(f"replica-{uuid.uuid4().hex[:6]}", SECRET)
    market.add_listing("tea-250", price_minor=3990, stock=0, merchant_sku="GYNO-TEA-250G")
    pushes: list[int] = []
    original = market.set_stock_batch

    def recording(items):
        errors = original(items)
        pushes.extend(item[1] for item, error in zip(items, errors) if error is None)
        return errors

    market.set_stock_batch = recording
    server = ThreadedServer(sandbox_app(market))
    a = Service(database_url)
    b = Service(database_url)
    try:
        async with httpx.AsyncClient(headers=H, timeout=20) as c:
            assert (await c.post(a.url + "/v1/skus", json={"sku": "GYNO-TEA-250G", "name": "tea"})).status_code == 201
            r = await c.post(a.url + "/v1/stock/receipts", json={"sku": "GYNO-TEA-250G", "quantity": 1000,
                                                                  "member_id": "m-01"})
            assert r.status_code == 201
            r = await c.post(b.url + "/v1/stores", json={
                "platform": "sandbox", "name": "replica shop", "external_shop_id": market.name,
                "webhook_secret": SECRET, "settings": {"base_url": server.url, "poll_interval_s": 0}})
            store_id = r.json()["id"]
            r = await c.put(a.url + f"/v1/stores/{store_id}/listings",
                            json=[{"external_sku_key": "tea-250", "sku": "GYNO-TEA-250G"}])
            assert r.status_code == 200
            await _wait_for_replicas(lambda: _pushed(db, 1000))

            for _ in range(60):
                assert market.sell("tea-250", 1) is not None
            deliveries = market.take_deliveries()
            posts = []
            for i, d in enumerate(deliveries):
                # Each delivery reaches one replica, and its retry the other one.
                for url in ((a.url, b.url) if i % 2 else (b.url, a.url)):
                    posts.append(c.post(f"{url}/webhooks/sandbox/{store_id}", content=d.body, headers=d.headers))
            answers = await asyncio.gather(*posts)
            assert all(r.status_code == 200 for r in answers)
            statuses = sorted(r.json()["status"] for r in answers)
            assert statuses.count("accepted") == 60 and statuses.count("duplicate") == 60

            async def applied() -> bool:
                return await count_rows(db, InboxItem, InboxItem.status == "done") == 60

            await _wait_for_replicas(applied)
            for i in range(5):  # stock changes made on either replica
                r = await c.post((a.url, b.url)[i % 2] + "/v1/stock/receipts",
                                 json={"sku": "GYNO-TEA-250G", "quantity": 10, "member_id": "m-02"})
                assert r.status_code == 201
                await _wait_for_replicas(lambda: _pushed(db, 1000 - 60 + 10 * (i + 1)))
    finally:
        a.stop()
        b.stop()
        server.stop()
    assert await count_rows(db, Order) == 60
    assert await count_rows(db, StockMovement, StockMovement.kind == "reserve") == 60
    async with db.read() as session:
        sku = (await session.execute(select(Sku))).scalar_one()
    assert (sku.on_hand, sku.reserved) == (1050, 60)
    assert market.stock("tea-250") == 990
    # Each change was pushed once: a replica repeating the other's push would send the same figure
    # twice in a row (a figure may recur later, e.g. 970 while selling and again after receipts).
    assert all(a != b for a, b in zip(pushes, pushes[1:])), pushes
    assert pushes[0] == 1000 and pushes[-1] == 990


async def _pushed(db, quantity: int) -> bool:
    async with db.read() as session:
        listing = (await session.execute(select(Listing))).scalar_one_or_none()
    return listing is not None and listing.pushed_quantity is not None and \
        listing.pushed_quantity - listing.sold_since_push == quantity
