"""Stock push: coalesced per store, compare-and-set, drift, oversold, and share policies."""

from __future__ import annotations

import uuid

import httpx
import pytest
import respx
from sqlalchemy import func, select

from adapters.sandbox.market import SandboxMarket
from app.models import Job, Listing
from app.services.drift import check_store_drift
from app.jobs.outcomes import JobContext
from tests.helpers import ADMIN, create_sku, create_store, receive
from tests.shops import SECRET, Shop, stock_of


async def _queued_pushes(db) -> int:
    async with db.read() as session:
        return (await session.execute(select(func.count()).select_from(Job).where(
            Job.name == "stock.push", Job.status == "queued"))).scalar_one()


async def _bind(client, shop: Shop, key: str = "tea-250", sku: str = "GYNO-TEA-250G") -> None:
    r = await client.put(f"/v1/stores/{shop.store['id']}/listings", json=[{"external_sku_key": key, "sku": sku}],
                         headers=ADMIN)
    assert r.status_code == 200, r.text


@pytest.fixture
async def shops(client):
    """Three sandbox shops selling one cooperative sku of 500 units."""
    await create_sku(client, "GYNO-TEA-250G")
    await receive(client, "GYNO-TEA-250G", 500, "m-01")
    made = []
    for i in range(3):
        name = f"live-{i}-{uuid.uuid4().hex[:6]}"
        market = SandboxMarket.register(SandboxMarket(name, SECRET))
        market.add_listing("tea-250", price_minor=3990, stock=0, merchant_sku="GYNO-TEA-250G")
        store = await create_store(client, "sandbox", name=name, external_shop_id=name, webhook_secret=SECRET,
                                   settings={"base_url": f"inproc://{name}", "poll_interval_s": 0})
        shop = Shop(client, store, market)
        await _bind(client, shop)
        made.append(shop)
    yield made
    for shop in made:
        SandboxMarket.unregister(shop.market.name)


async def test_a_burst_of_changes_coalesces_into_one_push_per_store(shops, client, db, runner):
    for _ in range(10):
        await receive(client, "GYNO-TEA-250G", 1)
    assert await _queued_pushes(db) == 3
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [510, 510, 510]
    r = await client.get("/v1/stock/GYNO-TEA-250G", headers=ADMIN)
    listings = r.json()["listings"]
    assert [l["pushed_quantity"] for l in listings] == [510, 510, 510]
    assert all(l["pushed_at"] for l in listings)


async def _without_sales_speed_buffer(client) -> None:
    """The shared policy with the sales-speed buffer off: every shop is told exactly what is available."""
    r = await client.put("/v1/stock/GYNO-TEA-250G/allocation", headers=ADMIN,
                         json={"mode": "shared", "sales_speed_buffer": False})
    assert r.status_code == 200, r.text


async def test_a_sale_updates_every_shop(shops, client, runner):
    await _without_sales_speed_buffer(client)
    await runner.run_until_idle()
    shops[0].market.sell("tea-250", 4)
    await shops[0].deliver()
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [496, 496, 496]


async def test_a_push_refused_by_compare_and_set_waits_for_the_sale_then_goes_through(shops, client, db, runner):
    a, b, c = (s.store["id"] for s in shops)
    r = await client.put("/v1/stock/GYNO-TEA-250G/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(a): 1, str(b): 1, str(c): 1}})
    assert r.status_code == 200
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [167, 167, 166]
    shops[1].market.sell("tea-250", 3)  # its webhook is late
    await receive(client, "GYNO-TEA-250G", 10)  # a change that pushes every shop
    await runner.run_until_idle()
    # The receipt went to the quotas by weight (4, 3, 3); the shop that sold refused the overwrite that
    # would have erased its sale; the others moved on.
    assert [s.market.stock("tea-250") for s in shops] == [171, 164, 169]
    async with db.read() as session:
        job = (await session.execute(select(Job).where(Job.name == "stock.push", Job.status == "queued"))).scalar_one()
    assert "compare-and-set" in job.last_error
    await shops[1].deliver()  # the sale arrives
    from tests.shops import make_jobs_due

    await make_jobs_due(db)
    await runner.run_until_idle()
    # Its sale used up its own quota (170 - 3): the other shops' figures do not move for it.
    assert [s.market.stock("tea-250") for s in shops] == [171, 167, 169]
    assert await stock_of(client) == (510, 3)


async def test_under_the_shared_policy_a_push_never_writes_over_a_sale_not_heard_of_yet(shops, client, runner):
    """The sandbox takes compare-and-set and can be read: a shared-policy figure is set from the shop's
    count read just before (the count as the expected figure), so a sale the shop made that we have not
    heard of stays taken, and the shop is not raised until it is heard of."""
    await _without_sales_speed_buffer(client)
    await runner.run_until_idle()
    shops[1].market.sell("tea-250", 3)  # not heard of yet
    await receive(client, "GYNO-TEA-250G", 10)
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [510, 497, 510]
    await shops[1].deliver()
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [507, 507, 507]


async def test_drift_is_found_and_corrected(shops, client, db, runner, settings):
    await runner.run_until_idle()
    shops[2].market.set_stock("tea-250", 42)  # someone edited the shop by hand
    job = Job(id=0, name="stock.drift_check", payload={"store_id": shops[2].store["id"]})
    from app.jobs.outcomes import Done

    outcome = await check_store_drift(JobContext(db=runner.db, settings=settings, job=job, worker_id="t"),
                                      shops[2].store["id"])
    assert isinstance(outcome, Done) and outcome.note == "1 drifted"
    await runner.run_until_idle()
    assert shops[2].market.stock("tea-250") == 500


async def test_paid_beyond_stock_is_flagged_oversold_and_every_shop_gets_zero(shops, client, db, runner):
    await client.post("/v1/stock/adjustments", json={"sku": "GYNO-TEA-250G", "delta": -495, "reason": "mould"},
                      headers=ADMIN)
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [5, 5, 5]
    shops[0].market.sell("tea-250", 5)
    shops[1].market.sell("tea-250", 4)  # both sold the same units before hearing of each other
    for shop in shops:
        await shop.deliver()
    await runner.run_until_idle()
    r = await client.get("/v1/orders", params={"oversold": "true"}, headers=ADMIN)
    [oversold] = r.json()["items"]
    assert oversold["lines"][0]["oversold"] == 4
    assert await stock_of(client) == (5, 5)  # nothing went negative
    assert [s.market.stock("tea-250") for s in shops] == [0, 0, 0]
    metrics = (await client.get("/metrics")).text
    assert "coopsync_oversold_lines_total" in metrics


async def test_a_share_policy_splits_and_rebalances_as_a_shop_sells_out(shops, client, db, runner):
    a, b, c = (s.store["id"] for s in shops)
    r = await client.put("/v1/stock/GYNO-TEA-250G/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(a): 70, str(b): 20, str(c): 10}})
    assert r.status_code == 200, r.text
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [350, 100, 50]
    shops[0].market.sell("tea-250", 350)  # the live-stream shop sells out its part
    await shops[0].deliver()
    for _ in range(4):
        await runner.run_until_idle()
    # A share is a quota: the shop's own sales used up its part, and nothing moved for them.
    assert [s.market.stock("tea-250") for s in shops] == [0, 100, 50]
    r = await client.post("/v1/stock/GYNO-TEA-250G/allocation/rebalance", headers=ADMIN)
    assert r.status_code == 200, r.text
    for _ in range(4):
        await runner.run_until_idle()
    stock = [s.market.stock("tea-250") for s in shops]
    assert sum(stock) <= 150  # never more on offer than there is
    assert stock == [105, 30, 15]  # an explicit rebalance splits what is left afresh


async def test_allocation_policy_is_validated(shops, client):
    r = await client.put("/v1/stock/GYNO-TEA-250G/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {"99999": 1}})
    assert r.status_code == 422
    r = await client.put("/v1/stock/GYNO-TEA-250G/allocation", headers=ADMIN, json={"mode": "shares", "shares": {}})
    assert r.status_code == 422


async def test_a_transient_push_failure_is_retried(client, db, runner):
    await create_sku(client, "sku-hosted-1")
    await receive(client, "sku-hosted-1", 7)
    store = await create_store(client, "shopify", external_shop_id="qinba.myshopify.com",
                               credentials={"access_token": "shpat_x"}, settings={"location_id": "655441491",
                                                                                 "poll_interval_s": 0})
    r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN, json=[
        {"external_sku_key": "44872881439030", "sku": "sku-hosted-1",
         "listing_ref": {"inventory_item_id": "808950810", "location_id": "655441491"}}])
    assert r.status_code == 200
    from tests.adapters.shopify.shopify_inventory_fake import FakeInventory

    shopify = FakeInventory({("808950810", "655441491"): 0})
    outage = [httpx.Response(503, json={"errors": "unavailable"})] * 3
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(url__regex=r".*/graphql\.json")
        route.side_effect = lambda request: outage.pop(0) if outage else shopify(request)
        await runner.run_until_idle()
        from tests.shops import make_jobs_due

        await make_jobs_due(db)
        await runner.run_until_idle()
    async with db.read() as session:
        listing = (await session.execute(select(Listing).where(Listing.store_id == store["id"]))).scalar_one()
    assert (listing.pushed_quantity, listing.push_error) == (7, None)
    assert route.call_count == 5  # three refused reads, then the read and the compare-and-set write
    assert [w["input"]["quantities"][0]["quantity"] for w in shopify.writes] == [7]
    assert shopify.available == {("808950810", "655441491"): 7}


async def test_a_sale_learnt_from_the_platforms_count_is_not_counted_again_when_its_order_arrives(
        shops, client, db, runner, monkeypatch):
    from app.services import push
    from tests.shops import make_jobs_due

    a, b, c = (s.store["id"] for s in shops)
    await client.put("/v1/stock/GYNO-TEA-250G/allocation", headers=ADMIN,
                     json={"mode": "shares", "shares": {str(a): 1, str(b): 1, str(c): 1}})
    await runner.run_until_idle()
    shops[1].market.sell("tea-250", 3)
    lost = shops[1].market.take_deliveries()  # its webhook is lost for now
    await receive(client, "GYNO-TEA-250G", 10)
    monkeypatch.setattr(push, "CONFLICT_PATIENCE_S", 0.0)  # give up waiting at once: believe the platform
    await runner.run_until_idle()
    await make_jobs_due(db)
    await runner.run_until_idle()
    async with db.read() as session:
        listing = (await session.execute(select(Listing).where(Listing.store_id == b))).scalar_one()
    assert listing.unheard_sales == 3
    await shops[1].deliver(lost)  # polling finds the order at last
    await runner.run_until_idle()
    assert [s.market.stock("tea-250") for s in shops] == [171, 167, 169]  # no conflict: counted once
    async with db.read() as session:
        listing = (await session.execute(select(Listing).where(Listing.store_id == b))).scalar_one()
    assert listing.unheard_sales == 0
