"""Issue 15 point 5: Shopify stock pushes are compare-and-set (inventorySetQuantities with changeFromQuantity),
so no unit is sold twice. The Shopify shops are fakes that keep their own ``available`` count, sell on their
own (also between coopsync's read and its write) and refuse a stale ``changeFromQuantity`` as Shopify does;
the pushes go through ``push_store`` and the real Shopify adapter over respx."""

from __future__ import annotations

import random
import uuid

import respx
from sqlalchemy import select

from app.domain import ledger, reconcile
from app.jobs.outcomes import Done, JobContext, Retry
from app.models import Job, Listing, Sku
from app.services import push
from tests.adapters.shopify.shopify_inventory_fake import FakeInventory
from tests.helpers import ADMIN, create_sku, create_store, receive

SKU = "GYNO-TEA-250G"
ITEM, LOCATION = "808950810", "655441491"


class Shop:
    """One Shopify store of the test: its fake inventory, its domain, and the sales coopsync has not applied."""

    def __init__(self, store_id: int, host: str) -> None:
        self.store_id = store_id
        self.host = host
        self.key = f"variant-{store_id}"
        self.inventory = FakeInventory({(ITEM, LOCATION): 0})
        self.unapplied: list[int] = []

    @property
    def shows(self) -> int:
        return self.inventory.available[(ITEM, LOCATION)]

    def sell(self, units: int) -> bool:
        if not self.inventory.sell(ITEM, LOCATION, units):
            return False
        self.unapplied.append(units)
        return True

    def sell_after_next_read(self, units: int) -> None:
        """Buyers check out in the moment between coopsync's read of the count and its write."""

        def buy(_inventory: FakeInventory) -> None:
            self.inventory.after_read = None
            self.sell(units)

        self.inventory.after_read = buy


async def _shops(client, count: int) -> list[Shop]:
    await create_sku(client, SKU)
    shops = []
    for i in range(count):
        host = f"coop-{i}-{uuid.uuid4().hex[:6]}.myshopify.com"
        store = await create_store(client, "shopify", name=host, external_shop_id=host,
                                   credentials={"access_token": "shpat_test"},
                                   settings={"location_id": LOCATION, "poll_interval_s": 0})
        shop = Shop(store["id"], host)
        r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN, json=[
            {"external_sku_key": shop.key, "sku": SKU, "listing_ref": {"inventory_item_id": ITEM}}])
        assert r.status_code == 200, r.text
        shops.append(shop)
    return shops


def _shopify(shops: list[Shop]) -> respx.MockRouter:
    """Every Shopify call of the test, answered by the fake of the shop it is addressed to."""
    router = respx.mock(assert_all_mocked=True, assert_all_called=False)
    by_host = {shop.host: shop.inventory for shop in shops}
    router.post(url__regex=r"https://[^/]+/admin/api/2026-07/graphql\.json").mock(
        side_effect=lambda request: by_host[request.url.host](request))
    router.get(url__regex=r"https://[^/]+/admin/api/2026-07/inventory_levels\.json").mock(
        side_effect=lambda request: by_host[request.url.host].rest_levels(request))
    return router


def _ctx(runner, settings) -> JobContext:
    return JobContext(db=runner.db, settings=settings, job=Job(id=0, name="stock.push", payload={}), worker_id="t")


async def _apply_sales(db, shop: Shop, cause: str) -> None:
    """What applying the shop's orders does to stock: reserve the units and count them against its listing."""
    while shop.unapplied:
        units = shop.unapplied.pop(0)
        async with db.transaction() as session:
            sku = (await session.execute(select(Sku).where(Sku.sku == SKU))).scalar_one()
            try:
                await ledger.apply_movement(session, sku_id=sku.id, kind="reserve", cause_key=f"{cause}-{uuid.uuid4().hex}",
                                            reserved_delta=units)
            except ledger.InsufficientStock:
                pass  # oversold: nothing to reserve
            await reconcile.platform_count_changed(session, shop.store_id, shop.key, units)


async def _available(db) -> int:
    async with db.read() as session:
        sku = (await session.execute(select(Sku).where(Sku.sku == SKU))).scalar_one()
        return sku.on_hand - sku.reserved


async def _listing(db, shop: Shop) -> Listing:
    async with db.read() as session:
        return (await session.execute(select(Listing).where(Listing.store_id == shop.store_id))).scalar_one()


async def test_a_sale_between_the_read_and_the_write_is_re_read_and_retried_and_no_unit_is_sold_twice(
        client, db, runner, settings):
    [shop] = await _shops(client, 1)
    shop.inventory.available[(ITEM, LOCATION)] = 6  # what the shop showed before coopsync took it over
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 10, "m-01")
    with _shopify([shop]):
        shop.sell_after_next_read(2)  # two sold while coopsync's first write is on its way
        _, outcome = await push.push_store(ctx, shop.store_id, force=False)
        assert isinstance(outcome, Done)
        stale, retried = shop.inventory.writes
        assert (stale["input"]["quantities"][0]["changeFromQuantity"], stale["input"]["quantities"][0]["quantity"]) == (6, 10)
        # Refused (4 by then), read again and retried with the two sold meanwhile kept sold.
        assert (retried["input"]["quantities"][0]["changeFromQuantity"], retried["input"]["quantities"][0]["quantity"]) == (4, 8)
        # 10 units in all: 2 sold and 8 on offer; a plain retry of 10 would have offered 12.
        assert shop.shows + shop.inventory.sold == 10

        await _apply_sales(db, shop, "sale")  # the two orders arrive
        await push.push_store(ctx, shop.store_id, force=False)
        assert shop.shows == await _available(db) == 8  # the final figure is right

        await receive(client, SKU, 5, "m-02")
        await push.push_store(ctx, shop.store_id, force=False)
        assert shop.shows == 13
        while shop.sell(1):  # a buying frenzy empties the shop
            pass
        await _apply_sales(db, shop, "frenzy")
        await push.push_store(ctx, shop.store_id, force=False)
    assert shop.inventory.sold == 15 and shop.shows == 0 and await _available(db) == 0


async def test_under_shares_a_stale_figure_waits_for_the_sales_then_goes_through(client, db, runner, settings):
    a, b = await _shops(client, 2)
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 20, "m-01")
    r = await client.put(f"/v1/stock/{SKU}/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(a.store_id): 60, str(b.store_id): 40}})
    assert r.status_code == 200, r.text
    with _shopify([a, b]):
        for shop in (a, b):
            await push.push_store(ctx, shop.store_id, force=False)
        assert (a.shows, b.shows) == (12, 8)

        assert a.sell(3)  # its orders have not reached coopsync yet
        await receive(client, SKU, 10, "m-02")  # quotas grow: A is to be raised
        _, outcome = await push.push_store(ctx, a.store_id, force=False)
        assert isinstance(outcome, Retry) and "compare-and-set conflict" in outcome.error
        last = a.inventory.writes[-1]["input"]["quantities"][0]
        assert last["changeFromQuantity"] == 12 and last["quantity"] > 12  # compared against our belief
        assert a.shows == 9  # refused: never raised over sales coopsync has not heard of

        await _apply_sales(db, a, "a")  # the orders arrive; the job's retry plans again
        _, outcome = await push.push_store(ctx, a.store_id, force=False)
        assert isinstance(outcome, Done)
        await push.push_store(ctx, b.store_id, force=False)
    listings = [await _listing(db, shop) for shop in (a, b)]
    assert [a.shows, b.shows] == [listing.quota for listing in listings]
    assert a.shows + b.shows == await _available(db) == 27  # 30 received, 3 sold


async def test_random_sales_racing_every_push_under_shares_never_sell_a_unit_twice(client, db, runner, settings):
    shops = await _shops(client, 2)
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 40, "m-01")
    r = await client.put(f"/v1/stock/{SKU}/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(shops[0].store_id): 70, str(shops[1].store_id): 30}})
    assert r.status_code == 200, r.text
    rng = random.Random(15)
    units, conflicts = 40, 0
    with _shopify(shops):
        for shop in shops:
            await push.push_store(ctx, shop.store_id, force=False)
        for step in range(250):
            shop = rng.choice(shops)
            action = rng.random()
            if action < 0.4:
                shop.sell(1 if rng.random() < 0.8 else 2)
            elif action < 0.55:
                shop.sell_after_next_read(rng.randint(1, 2))
            elif action < 0.75:
                await _apply_sales(db, shop, f"sim-{step}")
            elif action < 0.97:
                _, outcome = await push.push_store(ctx, shop.store_id, force=False)
                conflicts += isinstance(outcome, Retry)
            elif step > 80 and units == 40:
                await receive(client, SKU, 15, "m-02")  # a member delivers during the sale
                units += 15
            sold = sum(s.inventory.sold for s in shops)
            assert sold + sum(s.shows for s in shops) <= units, f"step {step}: more on offer than there is"
        for shop in shops:
            shop.inventory.after_read = None
            await _apply_sales(db, shop, "end")
        for _ in range(2):
            for shop in shops:
                await push.push_store(ctx, shop.store_id, force=False)
    sold = sum(s.inventory.sold for s in shops)
    assert conflicts > 0 and 0 < sold <= units  # the races happened, and no unit was sold twice
    listings = [await _listing(db, shop) for shop in shops]
    assert [s.shows for s in shops] == [listing.quota for listing in listings]
    assert sum(s.shows for s in shops) == await _available(db) == units - sold


async def test_under_the_shared_policy_a_raise_never_writes_over_sales_not_heard_of_yet(client, db, runner, settings):
    [shop] = await _shops(client, 1)
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 10, "m-01")
    with _shopify([shop]):
        await push.push_store(ctx, shop.store_id, force=False)
        assert shop.sell(3)  # its orders have not reached coopsync yet
        await receive(client, SKU, 5, "m-02")
        await push.push_store(ctx, shop.store_id, force=False)
    # 15 received, 3 sold: at most 12 may be on offer (15 would let 3 units be sold twice).
    assert shop.shows + shop.inventory.sold <= 15
