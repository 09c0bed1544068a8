"""Issue 17: shares are quotas, no raise while sales may be unheard, deltas applied once, a policy change
re-plans every shop at once. The shops are fakes that behave as the real platforms do: a WooCommerce-like
shop whose PUT overwrites its count, Douyin-like and Pinduoduo-like shops taking increments."""

from __future__ import annotations

import random
import uuid

import pytest
from sqlalchemy import select

from adapters.base import Capability, PushResult
from app.domain import ledger, reconcile
from app.jobs.outcomes import Done, JobContext, Retry
from app.models import Job, Listing, Sku
from app.services import push
from tests.helpers import ADMIN, create_sku, create_store, receive

SKU = "GYNO-TEA-250G"
KEY = "tea"


class FakeShop:
    """One marketplace listing: its own count, and its sales whose orders coopsync has not applied yet."""

    def __init__(self, store_id: int) -> None:
        self.store_id = store_id
        self.count = 0
        self.sold = 0
        self.unapplied: list[int] = []
        self.raised_while_unheard = 0
        self.keys: set[str] = set()
        self.applied_deltas = 0
        self.lose_next_answer = False

    def sell(self, quantity: int) -> bool:
        if self.count < quantity:
            return False
        self.count -= quantity
        self.sold += quantity
        self.unapplied.append(quantity)
        return True


class BlindSetShop:
    """WooCommerce: a single-product PUT of ``stock_quantity`` overwrites the count; GET reads it."""

    capabilities = frozenset({Capability.STOCK_PUSH, Capability.STOCK_READ})

    def __init__(self, shop: FakeShop) -> None:
        self.shop = shop

    async def fetch_stock(self, levels):
        return {level.external_sku_key: self.shop.count for level in levels}

    async def push_stock(self, levels):
        for level in levels:
            assert level.delta is None and level.expected_quantity is None
            if level.quantity > self.shop.count and self.shop.unapplied:
                self.shop.raised_while_unheard += 1
            self.shop.count = max(0, level.quantity)
        return [PushResult(level.external_sku_key, True) for level in levels]


class DeltaShop:
    """Douyin (``idempotent``: incremental with idempotent_id, a repeated id applies nothing and answers
    success) or Pinduoduo (update_type 2, no key). ``lose_next_answer``: the change lands, the answer is lost."""

    def __init__(self, shop: FakeShop, idempotent: bool) -> None:
        self.shop = shop
        self.idempotent = idempotent
        caps = {Capability.STOCK_PUSH, Capability.STOCK_DELTA}
        self.capabilities = frozenset(caps | ({Capability.STOCK_DELTA_IDEMPOTENT} if idempotent else set()))

    async def push_stock(self, levels):
        results = []
        for level in levels:
            if level.delta is None:
                self.shop.count = max(0, level.quantity)
            elif not (self.idempotent and level.idempotency_key in self.shop.keys):
                assert not self.idempotent or level.idempotency_key
                self.shop.count += level.delta
                self.shop.applied_deltas += 1
                self.shop.keys.add(level.idempotency_key)
            if self.shop.lose_next_answer:
                self.shop.lose_next_answer = False
                results.append(PushResult(level.external_sku_key, False, "read timed out", "transient"))
            else:
                results.append(PushResult(level.external_sku_key, True))
        return results


def _wire(monkeypatch, adapters: dict[int, object]) -> None:
    """Every store's push goes to its fake shop, with that shop's capabilities."""

    async def connect(db, store, http):
        return adapters[store.id]

    monkeypatch.setattr(push, "connect", connect)
    monkeypatch.setattr(push, "store_capabilities", lambda store: adapters[store.id].capabilities)
    return push.push_store


async def _stores(client, count: int) -> list[int]:
    await create_sku(client, SKU)
    ids = []
    for i in range(count):
        name = f"shop-{i}-{uuid.uuid4().hex[:6]}"
        store = await create_store(client, "sandbox", name=name, external_shop_id=name,
                                   settings={"base_url": f"inproc://{name}", "poll_interval_s": 0})
        r = await client.put(f"/v1/stores/{store['id']}/listings", json=[{"external_sku_key": KEY, "sku": SKU}],
                             headers=ADMIN)
        assert r.status_code == 200, r.text
        ids.append(store["id"])
    return ids


def _ctx(runner, settings) -> JobContext:
    return JobContext(db=runner.db, settings=settings, job=Job(id=0, name="stock.push", payload={}), worker_id="t")


async def _apply_sale(db, shop: FakeShop, cause: str) -> None:
    """What applying the shop's order does to stock: reserve the units, count them against the listing."""
    quantity = shop.unapplied.pop(0)
    async with db.transaction() as session:
        sku = (await session.execute(select(Sku).where(Sku.sku == SKU))).scalar_one()
        try:
            await ledger.apply_movement(session, sku_id=sku.id, kind="reserve", cause_key=cause,
                                        reserved_delta=quantity)
        except ledger.InsufficientStock:
            pass  # oversold: the line is flagged, nothing reserved
        await reconcile.platform_count_changed(session, shop.store_id, KEY, quantity)


async def _listings(db) -> list[Listing]:
    async with db.read() as session:
        return list((await session.execute(select(Listing).order_by(Listing.store_id))).scalars())


async def test_a_share_policy_against_blind_set_shops_never_raises_over_unheard_sales_nor_oversells(
        client, db, runner, settings, monkeypatch):
    ids = await _stores(client, 3)
    shops = {i: FakeShop(i) for i in ids}
    push_store = _wire(monkeypatch, {i: BlindSetShop(shops[i]) for i in ids})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 50, "m-01")
    r = await client.put(f"/v1/stock/{SKU}/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(ids[0]): 70, str(ids[1]): 20, str(ids[2]): 10}})
    assert r.status_code == 200, r.text
    for i in ids:
        await push_store(ctx, i, force=False)
    assert [shops[i].count for i in ids] == [35, 10, 5]

    rng = random.Random(17)
    units, received, n = 50, False, 0
    for step in range(400):
        action = rng.random()
        if action < 0.45:  # a buyer, 60/25/15 over the shops
            shop = shops[rng.choices(ids, weights=(60, 25, 15))[0]]
            shop.sell(1 if rng.random() < 0.85 else 2)
        elif action < 0.75:  # an order is applied, seconds after its sale
            pending = [s for s in shops.values() if s.unapplied]
            if pending:
                n += 1
                await _apply_sale(db, rng.choice(pending), f"sim-sale-{n}")
        elif action < 0.98:  # a push to one shop (every sale queues them)
            await push_store(ctx, rng.choice(ids), force=False)
        elif not received and step > 100:  # a member delivers more during the sale
            await receive(client, SKU, 20, "m-02")
            units += 20
            received = True
    for shop in shops.values():
        while shop.unapplied:
            n += 1
            await _apply_sale(db, shop, f"sim-sale-{n}")
    for _ in range(2):
        for i in ids:
            await push_store(ctx, i, force=False)

    sold = sum(s.sold for s in shops.values())
    assert sold > 0
    assert sum(s.raised_while_unheard for s in shops.values()) == 0
    assert sold <= units, f"oversold {sold - units}"
    listings = await _listings(db)
    # Each shop shows its quota, and the quotas never offer more than is left.
    assert [shops[i].count for i in ids] == [max(0, l.quota) for l in listings]
    assert sum(max(0, l.quota) for l in listings) <= units - sold


async def test_a_policy_change_re_plans_every_shop_of_the_sku_at_once(client, db, runner, settings, monkeypatch):
    ids = await _stores(client, 3)
    shops = {i: FakeShop(i) for i in ids}
    push_store = _wire(monkeypatch, {i: BlindSetShop(shops[i]) for i in ids})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 500, "m-01")
    for i in ids:
        await push_store(ctx, i, force=False)
    assert [shops[i].count for i in ids] == [500, 500, 500]  # the default policy: every shop the whole stock
    r = await client.put(f"/v1/stock/{SKU}/allocation", headers=ADMIN,
                         json={"mode": "shares", "shares": {str(ids[0]): 70, str(ids[1]): 20, str(ids[2]): 10}})
    assert r.status_code == 200, r.text
    for i in ids:  # one push per shop, in store order: none waits on another
        await push_store(ctx, i, force=False)
    assert [shops[i].count for i in ids] == [350, 100, 50]
    assert [l.quota for l in await _listings(db)] == [350, 100, 50]


@pytest.mark.parametrize("idempotent", [True, False], ids=["douyin", "pinduoduo"])
async def test_a_delta_whose_answer_was_lost_applies_once(client, db, runner, settings, monkeypatch, idempotent):
    [store_id] = await _stores(client, 1)
    shop = FakeShop(store_id)
    push_store = _wire(monkeypatch, {store_id: DeltaShop(shop, idempotent)})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 30, "m-01")
    await push_store(ctx, store_id, force=False)  # never pushed: the first figure is absolute
    assert shop.count == 30
    shop.sell(4)  # not heard of yet: a delta keeps it
    await receive(client, SKU, 10, "m-02")
    shop.lose_next_answer = True
    _, outcome = await push_store(ctx, store_id, force=False)
    assert isinstance(outcome, Retry)
    assert shop.count == 36 and shop.applied_deltas == 1  # +10 landed, its answer did not
    [listing] = await _listings(db)
    assert listing.pending_delta == 10 and listing.pending_delta_key
    key = listing.pending_delta_key
    _, outcome = await push_store(ctx, store_id, force=False)  # the retry
    assert shop.count == 36 and shop.applied_deltas == 1  # applied once
    [listing] = await _listings(db)
    if idempotent:
        # Sent again under the same key; Douyin answered "already done": the delta is settled.
        assert isinstance(outcome, Done) and shop.keys == {key}
        assert (listing.pending_delta, listing.pushed_quantity, listing.push_error) == (None, 40, None)
    else:
        # No key: never resent blind; the listing waits, flagged, for the platform's count to be read.
        assert listing.pending_delta == 10 and "answer" in (listing.push_error or "")
    await _apply_sale(db, shop, "sale-1")
    if idempotent:
        await push_store(ctx, store_id, force=False)
        [listing] = await _listings(db)
        assert shop.count == 36 and listing.pushed_quantity - listing.sold_since_push == 36


class RacingBlindSetShop(BlindSetShop):
    """A blind-set shop whose buyers check out ``race_next`` units between the service's GET and its PUT,
    so the PUT overwrites them (the read-then-PUT race); their orders still arrive later."""

    def __init__(self, shop: FakeShop) -> None:
        super().__init__(shop)
        self.race_next = 0
        self.raises: list[tuple[int, int]] = []  # (count before, figure set) of every PUT that raised it

    async def fetch_stock(self, levels):
        counts = await super().fetch_stock(levels)
        while self.race_next > 0 and self.shop.sell(1):
            self.race_next -= 1
        return counts

    async def push_stock(self, levels):
        for level in levels:
            if level.quantity > self.shop.count:
                self.raises.append((self.shop.count, level.quantity))
        return await super().push_stock(levels)


async def test_a_blind_set_shop_oversold_through_a_race_is_never_raised_above_what_is_available(
        client, db, runner, settings, monkeypatch):
    """The flash-sale bench's finding under the default shared policy: a PUT that overwrote sales made
    between its GET and itself lets the shop sell more than we last set, so the orders heard since
    (sold_since_push) outnumber the figure set (pushed_quantity) and the believed count goes negative.
    Setting ``count + (wanted - believed)`` then RAISED the sold-out shop by the oversold units while
    the service had none left."""
    ids = await _stores(client, 2)
    shops = {i: FakeShop(i) for i in ids}
    adapters = {i: RacingBlindSetShop(shops[i]) for i in ids}
    push_store = _wire(monkeypatch, adapters)
    ctx = _ctx(runner, settings)
    a, b = ids
    # The race alone, without the sales-speed buffer (which would hold B lower for A's pace of sales).
    r = await client.put(f"/v1/stock/{SKU}/allocation", headers=ADMIN,
                         json={"mode": "shared", "sales_speed_buffer": False})
    assert r.status_code == 200, r.text
    await receive(client, SKU, 10, "m-01")
    for i in ids:
        await push_store(ctx, i, force=False)
    assert [shops[i].count for i in ids] == [10, 10]  # shared: each shop the whole stock
    for i in ids:
        adapters[i].raises.clear()  # from here on stock only goes out

    n = 0

    async def apply_all(shop: FakeShop) -> None:
        nonlocal n
        while shop.unapplied:
            n += 1
            await _apply_sale(db, shop, f"race-sale-{n}")

    assert shops[b].sell(2)  # unheard when B is next pushed
    for _ in range(5):
        assert shops[a].sell(1)
    await apply_all(shops[a])  # available 5: B is to be lowered from 10 to 5
    adapters[b].race_next = 3  # three buyers check out between the GET (8) and the PUT (8 - 5 = 3)
    await push_store(ctx, b, force=False)
    assert shops[b].count == 3 and shops[b].sold == 5  # the PUT put the 3 raced units back on sale
    for _ in range(3):
        assert shops[b].sell(1)  # sold again: 8 units sold at B against a figure of 10
    assert shops[b].count == 0
    await apply_all(shops[b])
    [_, listing_b] = await _listings(db)
    assert listing_b.pushed_quantity - listing_b.sold_since_push < 0  # believed negative through oversell

    for i in ids:  # the pushes the last orders queued
        await push_store(ctx, i, force=False)
    async with db.read() as session:
        sku = (await session.execute(select(Sku).where(Sku.sku == SKU))).scalar_one()
        available = max(0, sku.on_hand - sku.reserved)
    assert available == 0
    # No shop is offered more than is available, and the sold-out shop was not raised.
    assert [shops[i].count for i in ids] == [0, 0]
    assert [adapters[i].raises for i in ids] == [[], []]
    assert sum(s.raised_while_unheard for s in shops.values()) == 0
    for i in ids:  # and it stays so
        await push_store(ctx, i, force=False)
    assert [shops[i].count for i in ids] == [0, 0] and [adapters[i].raises for i in ids] == [[], []]
