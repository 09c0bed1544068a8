"""Issue 15 point 3 and issue 17 point 3, through push_store against shops that keep their own count:
per-store rules and a live-stream lock re-plan every shop at once; the sales-speed buffer (on by
default) holds each shop's figure down by what the other shops will sell before it lands, measured
from their sales, and lets go as they slow down; a delta whose answer was lost on a platform without an
idempotency key is settled from the platform's count (never resent); a refused cut reads the count,
sets what is left and is flagged."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from adapters.base import Capability, PushResult
from app.jobs.outcomes import Done, Retry
from app.models import Job, Listing, Sku
from app.models.base import utcnow
from app.services import push
from tests.helpers import ADMIN, receive
from tests.services.test_stock_quotas import (SKU, BlindSetShop, DeltaShop, FakeShop, _apply_sale, _ctx,
                                              _listings, _stores, _wire)


async def _put(client, body: dict) -> dict:
    r = await client.put(f"/v1/stock/{SKU}/allocation", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def _push_all(push_store, ctx, ids) -> None:
    for i in ids:  # one push per shop, in store order: none waits on another
        await push_store(ctx, i, force=False)


async def _adjust(client, delta: int) -> None:
    r = await client.post("/v1/stock/adjustments", json={"sku": SKU, "delta": delta, "reason": "count"}, headers=ADMIN)
    assert r.status_code == 201, r.text


# -- rules and the lock ----------------------------------------------------------------------------


async def test_a_policy_change_with_rules_re_plans_every_shop_at_once(client, db, runner, settings, monkeypatch):
    ids = await _stores(client, 3)
    a, b, c = ids
    shops = {i: FakeShop(i) for i in ids}
    push_store = _wire(monkeypatch, {i: BlindSetShop(shops[i]) for i in ids})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 500, "m-01")
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [500, 500, 500]
    # fixed 100 for a, 50 % for b, c the rest less a buffer of 5; b delisted below 30.
    await _put(client, {"mode": "shares", "stores": {str(a): {"fixed": 100}, str(b): {"percent": 50, "delist_below": 30},
                                                     str(c): {"buffer": 5}}})
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [100, 250, 145]
    assert [l.quota for l in await _listings(db)] == [100, 250, 150]
    # A switch to shared with a live-stream lock for c: c is offered its 200, a and b share the 300 left.
    until = (utcnow() + timedelta(hours=1)).isoformat()
    await _put(client, {"mode": "shared", "lock": {"store_id": c, "units": 200, "until": until},
                        "stores": {str(a): {"max": 250}}})
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [250, 300, 200]


async def test_a_lock_is_used_up_by_its_shops_sales_and_its_end_re_plans_the_sku(client, db, runner, settings,
                                                                                 monkeypatch):
    ids = await _stores(client, 2)
    live, other = ids
    shops = {i: FakeShop(i) for i in ids}
    push_store = _wire(monkeypatch, {i: BlindSetShop(shops[i]) for i in ids})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 500, "m-01")
    until = utcnow() + timedelta(hours=1)
    await _put(client, {"lock": {"store_id": live, "units": 200, "until": until.isoformat()},
                        "sales_speed_buffer": False})
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [200, 300]
    for _ in range(50):
        assert shops[live].sell(1)
    for n in range(50):
        await _apply_sale(db, shops[live], f"live-sale-{n}")
    await _push_all(push_store, ctx, ids)
    # The live shop sold 50 of its 200; the other still shares the 300 outside the lock.
    assert [shops[i].count for i in ids] == [150, 300]
    assert [l.quota for l in await _listings(db)] == [150, None]
    async with db.read() as session:
        [job] = (await session.execute(select(Job).where(Job.name == "stock.lock_ends"))).scalars().all()
        sku_id = (await session.execute(select(Sku.id).where(Sku.sku == SKU))).scalar_one()
    assert abs((job.run_after - until).total_seconds()) < 1  # the lock's end is on the clock
    # The lock ends (its time moved into the past, as the clock would): the job drops it and re-plans.
    async with db.transaction() as session:
        sku = await session.get(Sku, sku_id)
        sku.allocation = {**sku.allocation, "lock": {**sku.allocation["lock"],
                                                     "until": (utcnow() - timedelta(seconds=1)).isoformat()}}
    outcome = await push.handle_lock_ends(_ctx(runner, settings).__class__(
        db=runner.db, settings=settings, job=job, worker_id="t"))
    assert isinstance(outcome, Done) and "ended" in outcome.note
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [450, 450]
    assert (await client.get(f"/v1/stock/{SKU}", headers=ADMIN)).json()["allocation"] == {
        "mode": "shared", "shares": {}, "caps": {}, "sales_speed_buffer": False}


# -- the sales-speed buffer ------------------------------------------------------------------------


async def _pace(db, store_id: int, **values) -> None:
    async with db.transaction() as session:
        await session.execute(update(Listing).where(Listing.store_id == store_id).values(**values))


async def test_by_default_each_shop_is_offered_less_what_the_others_will_sell_before_its_figure_lands(
        client, db, runner, settings, monkeypatch):
    ids = await _stores(client, 3)
    a, b, c = ids
    shops = {i: FakeShop(i) for i in ids}
    push_store = _wire(monkeypatch, {i: BlindSetShop(shops[i]) for i in ids})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 100, "m-01")
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [100, 100, 100]  # nobody has sold yet: nothing held back
    # a sells 20 units a second and is heard of a second late; a figure lands on b and c in 0.5 s.
    tau = push.PACE_TAU_S
    monkeypatch.setattr(push, "PACE_TAU_S", 1e9)  # no decay while the figures are checked
    now = utcnow()
    await _pace(db, a, sales_rate=20.0, sales_rated_at=now, hear_lag_s=1.0)
    await _pace(db, b, push_lag_s=0.5)
    await _pace(db, c, push_lag_s=0.5)
    await _adjust(client, -20)
    async with db.transaction() as session:  # the pushes the adjustment queued are run by hand below
        await session.execute(delete(Job).where(Job.name == "stock.push"))
    await _push_all(push_store, ctx, ids)
    # 20/s * (1 s + 0.5 s) = 30 units a will sell before b's and c's new figures land.
    assert [shops[i].count for i in ids] == [80, 50, 50]
    async with db.read() as session:
        recheck = (await session.execute(select(Job).where(
            Job.name == "stock.pace_recheck", Job.status == "queued",
            Job.payload["store_id"].as_integer() == b))).scalar_one()
    assert recheck.run_after > utcnow()  # looked at again while the buffer holds b down
    # a stops selling: its rate decays (e by every PACE_TAU_S); a minute later nothing is held back.
    monkeypatch.setattr(push, "PACE_TAU_S", tau)
    await _pace(db, a, sales_rated_at=now - timedelta(seconds=60))
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [80, 80, 80]
    # Turned off in the policy, the buffer holds nothing back whatever the rates.
    await _pace(db, a, sales_rated_at=utcnow())
    await _put(client, {"mode": "shared", "sales_speed_buffer": False})
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [80, 80, 80]


async def test_the_sales_rate_and_lags_are_measured_from_the_sales_heard_and_the_pushes(
        client, db, runner, settings, monkeypatch):
    ids = await _stores(client, 2)
    a, b = ids
    shops = {i: FakeShop(i) for i in ids}
    push_store = _wire(monkeypatch, {i: BlindSetShop(shops[i]) for i in ids})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 100, "m-01")
    await _push_all(push_store, ctx, ids)
    for _ in range(20):
        assert shops[a].sell(1)
    for n in range(20):
        await _apply_sale(db, shops[a], f"burst-{n}")
    await _push_all(push_store, ctx, ids)
    listing_a, listing_b = await _listings(db)
    # 20 units heard within a second or so: a rate of several units a second (kept on a's row, or read
    # off the sales heard since its last estimate, when that was less than PACE_WINDOW_S ago).
    assert push.listing_pace(listing_a, utcnow()) >= 2
    # b's push measured how long its figure took to land and folded its own (nil) pace.
    assert listing_b.push_lag_s is not None and listing_b.sales_rated_at is not None and listing_b.sales_rate == 0
    assert shops[b].count < 80 == shops[a].count  # b held down for a's pace; a for nobody's


# -- lost and refused deltas on platforms without an idempotency key -----------------------------------


class ReadableDeltaShop(DeltaShop):
    """Pinduoduo (no idempotency key) whose count can be read; ``refuse_cuts``: an item in a promotion
    slot (在资源位上的商品不能减少库存), ``floor_at_zero``: Douyin's 库存不足 for a cut below 0."""

    def __init__(self, shop: FakeShop, *, idempotent: bool = False, refuse_cuts: bool = False,
                 floor_at_zero: bool = False, readable: bool = True) -> None:
        super().__init__(shop, idempotent)
        if readable:
            self.capabilities = self.capabilities | {Capability.STOCK_READ}
        self.refuse_cuts = refuse_cuts
        self.floor_at_zero = floor_at_zero
        self.reads = 0
        self.sets: list[int] = []

    async def fetch_stock(self, levels):
        assert Capability.STOCK_READ in self.capabilities
        self.reads += 1
        return {level.external_sku_key: self.shop.count for level in levels}

    async def push_stock(self, levels):
        results = []
        for level in levels:
            lower = level.delta < 0 if level.delta is not None else level.quantity < self.shop.count
            if self.refuse_cuts and lower:
                results.append(PushResult(level.external_sku_key, False, "在资源位上的商品不能减少库存", "permanent"))
            elif self.floor_at_zero and level.delta is not None and self.shop.count + level.delta < 0:
                results.append(PushResult(level.external_sku_key, False, "库存不足", "permanent"))
            else:
                if level.delta is None:
                    self.sets.append(level.quantity)
                results.extend(await super().push_stock([level]))
        return results


async def test_a_delta_whose_answer_was_lost_without_a_key_is_settled_from_the_count_and_never_resent(
        client, db, runner, settings, monkeypatch):
    [store_id] = await _stores(client, 1)
    shop = FakeShop(store_id)
    adapter = ReadableDeltaShop(shop)
    push_store = _wire(monkeypatch, {store_id: adapter})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 30, "m-01")
    await push_store(ctx, store_id, force=False)
    assert shop.count == 30
    shop.sell(4)  # not heard of yet
    await receive(client, SKU, 10, "m-02")
    shop.lose_next_answer = True
    _, outcome = await push_store(ctx, store_id, force=False)
    assert isinstance(outcome, Retry) and shop.count == 36 and shop.applied_deltas == 1
    _, outcome = await push_store(ctx, store_id, force=False)  # the retry reads, then sets from the count
    assert isinstance(outcome, Done)
    assert adapter.reads == 1 and shop.applied_deltas == 1 and adapter.sets == [30, 36]
    [listing] = await _listings(db)
    assert (listing.pending_delta, listing.pending_delta_key, listing.push_error) == (None, None, None)
    assert (listing.pushed_quantity, listing.sold_since_push, listing.unheard_sales) == (36, 0, 4)
    await _apply_sale(db, shop, "sale-1")  # the 4 units' order: in the count already, not counted twice
    await push_store(ctx, store_id, force=False)
    [listing] = await _listings(db)
    assert shop.count == 36 and shop.applied_deltas == 1
    assert listing.pushed_quantity - listing.sold_since_push == 36 and listing.unheard_sales == 0
    await receive(client, SKU, 5, "m-03")  # deltas go on as before
    await push_store(ctx, store_id, force=False)
    assert shop.count == 41 and shop.applied_deltas == 2 and adapter.reads == 1


async def test_a_cut_refused_for_lack_of_stock_reads_the_count_sets_what_is_left_and_is_flagged(
        client, db, runner, settings, monkeypatch):
    [store_id] = await _stores(client, 1)
    shop = FakeShop(store_id)
    adapter = ReadableDeltaShop(shop, idempotent=True, floor_at_zero=True)  # Douyin
    push_store = _wire(monkeypatch, {store_id: adapter})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 10, "m-01")
    await push_store(ctx, store_id, force=False)
    for _ in range(8):
        assert shop.sell(1)  # the shop sold 8 we have not heard of: it shows 2
    await _adjust(client, -5)  # 5 left: a cut of 5 from the 10 we believe, refused (库存不足)
    report, outcome = await push_store(ctx, store_id, force=False)
    assert isinstance(outcome, Done)
    assert adapter.reads == 1 and adapter.sets == [10, 0] and shop.count == 0  # what is left: nothing
    [listing] = await _listings(db)
    assert "库存不足" in listing.push_error and "count 2" in listing.push_error
    assert (listing.pushed_quantity, listing.unheard_sales, listing.pending_delta) == (0, 8, None)
    for n in range(8):
        await _apply_sale(db, shop, f"late-{n}")
    await push_store(ctx, store_id, force=False)
    assert shop.count == 0 and shop.sold == 8


async def test_a_cut_refused_below_zero_where_the_count_cannot_be_read_sets_zero_and_is_flagged(
        client, db, runner, settings, monkeypatch):
    [store_id] = await _stores(client, 1)
    shop = FakeShop(store_id)
    adapter = ReadableDeltaShop(shop, idempotent=True, floor_at_zero=True, readable=False)  # Douyin today
    push_store = _wire(monkeypatch, {store_id: adapter})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 10, "m-01")
    await push_store(ctx, store_id, force=False)
    for _ in range(8):
        assert shop.sell(1)  # unheard: the shop shows 2
    await _adjust(client, -5)  # the cut of 5 goes below zero: refused, and so nothing is left
    _, outcome = await push_store(ctx, store_id, force=False)
    assert isinstance(outcome, Done) and adapter.sets == [10, 0] and shop.count == 0
    [listing] = await _listings(db)
    assert "库存不足" in listing.push_error and "taken as 0" in listing.push_error
    # Every unit we believed it showed counts as sold unheard: its orders never raise it again.
    assert (listing.pushed_quantity, listing.unheard_sales) == (0, 10)
    for n in range(8):
        await _apply_sale(db, shop, f"late-{n}")
    [listing] = await _listings(db)
    # Their orders use up the units counted as unheard (not sold_since_push): they are still sales heard,
    # and the shop's pace shows them.
    assert listing.sold_since_push == 0 and push.listing_pace(listing, utcnow()) >= 8 / push.PACE_LONGEST_S
    await receive(client, SKU, 20, "m-02")
    await push_store(ctx, store_id, force=False)
    # 2 of the 10 units counted as sold unheard have not arrived: no raise while they may still come.
    assert shop.count == 0
    await _pace(db, store_id, pushed_at=utcnow() - timedelta(seconds=push.UNHEARD_HOLD_S + 1))
    await push_store(ctx, store_id, force=False)
    # Then what is left (25 in, 8 reserved); the 2 stay counted as unheard: the next 2 sales are
    # absorbed, so its figure errs 2 low (never high) until its count is next corrected.
    assert (shop.count, shop.sold) == (25 - 8, 8)


async def test_a_cut_refused_on_an_item_in_a_promotion_slot_is_flagged_with_the_count(
        client, db, runner, settings, monkeypatch):
    [store_id] = await _stores(client, 1)
    shop = FakeShop(store_id)
    adapter = ReadableDeltaShop(shop, refuse_cuts=True)  # Pinduoduo, the item in a promotion slot
    push_store = _wire(monkeypatch, {store_id: adapter})
    ctx = _ctx(runner, settings)
    await receive(client, SKU, 10, "m-01")
    await push_store(ctx, store_id, force=False)
    await _adjust(client, -4)
    _, outcome = await push_store(ctx, store_id, force=False)
    assert isinstance(outcome, Done) and adapter.reads == 1 and shop.count == 10
    [listing] = await _listings(db)
    assert "在资源位上的商品不能减少库存" in listing.push_error and "setting 6" in listing.push_error
    assert (listing.pushed_quantity, listing.pending_delta) == (10, None)


# -- the console's editor ------------------------------------------------------------------------------


async def test_the_console_editor_keeps_rules_set_through_the_api(client, db):
    from tests.console.seed import seed
    from tests.console.test_pages import sign_in

    s = await seed(db)
    csrf = await sign_in(client)
    rules = {"stores": {str(s.store_id): {"buffer": 3, "delist_below": 2}}, "sales_speed_buffer": False}
    r = await client.put("/v1/stock/TEA/allocation", json={"mode": "shared", **rules}, headers=ADMIN)
    assert r.status_code == 200, r.text
    r = await client.post("/console/stock/TEA/allocation", data={"csrf": csrf, "mode": "shares",
                                                                   f"share:{s.store_id}": "70"})
    assert r.status_code == 303 and "error" not in r.headers["location"], r.headers["location"]
    async with db.read() as session:
        stored = (await session.execute(select(Sku.allocation).where(Sku.sku == "TEA"))).scalar_one()
    assert stored == {"mode": "shares", "shares": {str(s.store_id): 70}, "caps": {}, **rules}


# -- compare-and-set shops under the shared policy -------------------------------------------------------


class RacingCasShop:
    """A shop that takes compare-and-set (the sandbox, Shopify) and sells ``race_next`` units between the
    service's read and its write, so the write is refused with the count as it is now."""

    capabilities = frozenset({Capability.STOCK_PUSH, Capability.STOCK_READ, Capability.STOCK_COMPARE_AND_SET})

    def __init__(self, shop: FakeShop) -> None:
        self.shop = shop
        self.race_next = 0
        self.conflicts = 0

    async def fetch_stock(self, levels):
        counts = {level.external_sku_key: self.shop.count for level in levels}
        while self.race_next > 0 and self.shop.sell(1):
            self.race_next -= 1
        return counts

    async def push_stock(self, levels):
        results = []
        for level in levels:
            if level.expected_quantity is not None and level.expected_quantity != self.shop.count:
                self.conflicts += 1
                results.append(PushResult(level.external_sku_key, False, "stale", "conflict",
                                          current_quantity=self.shop.count))
                continue
            self.shop.count = level.quantity
            results.append(PushResult(level.external_sku_key, True))
        return results


async def test_a_shared_figure_refused_by_compare_and_set_is_set_again_from_the_count_within_the_push(
        client, db, runner, settings, monkeypatch):
    ids = await _stores(client, 2)
    a, b = ids
    shops = {i: FakeShop(i) for i in ids}
    adapters = {i: RacingCasShop(shops[i]) for i in ids}
    push_store = _wire(monkeypatch, adapters)
    ctx = _ctx(runner, settings)
    await _put(client, {"mode": "shared", "sales_speed_buffer": False})
    await receive(client, SKU, 100, "m-01")
    await _push_all(push_store, ctx, ids)
    assert [shops[i].count for i in ids] == [100, 100]
    for _ in range(30):
        assert shops[a].sell(1)
    for n in range(30):
        await _apply_sale(db, shops[a], f"a-{n}")  # b is to come down to 70
    adapters[b].race_next = 4  # b sells 4 between the read (100) and the write, which names 100
    _, outcome = await push_store(ctx, b, force=False)
    # Refused (100 expected, 96 there), set again at once from 96: the 4 sold stay taken.
    assert isinstance(outcome, Done) and adapters[b].conflicts == 1
    assert shops[b].count == 66 and shops[b].sold == 4
    [_, listing_b] = await _listings(db)
    assert (listing_b.pushed_quantity, listing_b.unheard_sales) == (66, 4)


async def test_a_raise_refused_because_the_shop_sold_meanwhile_waits_and_is_tried_again(
        client, db, runner, settings, monkeypatch):
    """A receipt raises b; b sells 4 between the read (100) and the write: the refusal reports 96, below
    what we believe, so the raise waits for those sales, and the push is tried again (it ended as done,
    leaving b at 96 until something else pushed it)."""
    ids = await _stores(client, 2)
    _, b = ids
    shops = {i: FakeShop(i) for i in ids}
    adapters = {i: RacingCasShop(shops[i]) for i in ids}
    push_store = _wire(monkeypatch, adapters)
    ctx = _ctx(runner, settings)
    await _put(client, {"mode": "shared", "sales_speed_buffer": False})
    await receive(client, SKU, 100, "m-01")
    await _push_all(push_store, ctx, ids)
    await receive(client, SKU, 50, "m-02")
    adapters[b].race_next = 4
    _, outcome = await push_store(ctx, b, force=False)
    assert isinstance(outcome, Retry) and adapters[b].conflicts == 1
    assert shops[b].count == 96  # never raised over the sales not heard of yet
