"""Issue 17 point 3, Tmall: a Taobao store marked ``mall: tmall`` gets its changes as increments under
``outer_biz_key`` through push_store and the real adapter; an increment whose answers were all lost is sent
again by the job's retry under the same key and applied once. The gateway is the signed TOP fake."""

from __future__ import annotations

import respx
from sqlalchemy import select

from adapters.base import Capability
from app.domain import ledger, reconcile
from app.jobs.outcomes import Done, JobContext, Retry
from app.models import Job, Listing, Sku, Store
from app.services import push
from app.services.platforms import store_capabilities
from tests.adapters.taobao.tmall_fakes import TmallItem
from tests.adapters.taobao.top_fakes import APP_KEY, BASE_URL, GATEWAY, SECRET, SESSION, FakeTop
from tests.helpers import ADMIN, create_sku, create_store, receive

SKU = "GYNO-TEA-250G"


async def _store(client, mall: str) -> dict:
    store = await create_store(client, "taobao", name=f"{mall} shop", external_shop_id=f"qinba-{mall}",
                               credentials={"app_key": APP_KEY, "app_secret": SECRET, "session": SESSION},
                               settings={"base_url": GATEWAY, "mall": mall, "poll_interval_s": 0})
    r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN, json=[
        {"external_sku_key": "5", "sku": SKU, "listing_ref": {"num_iid": "1", "sku_id": "5"}}])
    assert r.status_code == 200, r.text
    return store


async def _listing(db, store_id: int) -> Listing:
    async with db.read() as session:
        return (await session.execute(select(Listing).where(Listing.store_id == store_id))).scalar_one()


async def test_the_stock_push_sees_idempotent_deltas_on_a_tmall_store_only(client, db):
    await create_sku(client, SKU)
    tmall, taobao = await _store(client, "tmall"), await _store(client, "taobao")
    r = await client.post("/v1/stores", headers=ADMIN, json={"platform": "taobao", "name": "x", "credentials": {
        "app_key": APP_KEY, "app_secret": SECRET}, "settings": {"mall": "jd"}})
    assert r.status_code == 422  # the setting is validated
    async with db.read() as session:
        caps = {s["id"]: store_capabilities(await session.get(Store, s["id"])) for s in (tmall, taobao)}
    assert Capability.STOCK_DELTA_IDEMPOTENT in caps[tmall["id"]]
    assert Capability.STOCK_DELTA_IDEMPOTENT not in caps[taobao["id"]]


async def test_a_tmall_increment_whose_answers_were_lost_is_applied_once_under_its_key(client, db, runner, settings):
    await create_sku(client, SKU)
    store = await _store(client, "tmall")
    ctx = JobContext(db=runner.db, settings=settings, job=Job(id=0, name="stock.push", payload={}), worker_id="t")
    await receive(client, SKU, 30, "m-01")
    gateway, item = FakeTop(), TmallItem(0)
    gateway.on("tmall.item.quantity.update", item)
    with respx.mock(assert_all_mocked=True, base_url=BASE_URL) as router:
        router.post("/router/rest").mock(side_effect=gateway)
        await push.push_store(ctx, store["id"], force=False)  # never pushed: an absolute figure
        assert item.count == 30 and '"type":1' in gateway.calls[-1]["options"]

        item.count -= 4  # four sold; their orders have not reached coopsync yet
        await receive(client, SKU, 10, "m-02")
        item.lose_answers = 3  # the increment lands; the answers of all three in-call attempts are lost
        _, outcome = await push.push_store(ctx, store["id"], force=False)
        assert isinstance(outcome, Retry)
        listing = await _listing(db, store["id"])
        key = listing.pending_delta_key
        assert listing.pending_delta == 10 and key and item.applied == 1 and item.count == 36

        _, outcome = await push.push_store(ctx, store["id"], force=False)  # the job's retry
        assert isinstance(outcome, Done)
    increments = [c for c in gateway.calls if '"type":2' in c["options"]]
    assert len(increments) == 4 and {c["options"] for c in increments} == {f'{{"type":2,"outer_biz_key":"{key}"}}'}
    assert (item.applied, item.count) == (1, 36)  # +10 once: the four sales are kept, nothing doubled
    listing = await _listing(db, store["id"])
    assert (listing.pending_delta, listing.pushed_quantity, listing.push_error) == (None, 40, None)

    async with db.transaction() as session:  # the four orders arrive
        sku = (await session.execute(select(Sku).where(Sku.sku == SKU))).scalar_one()
        await ledger.apply_movement(session, sku_id=sku.id, kind="reserve", cause_key="tmall-sale", reserved_delta=4)
        await reconcile.platform_count_changed(session, store["id"], "5", 4)
    listing = await _listing(db, store["id"])
    assert listing.pushed_quantity - listing.sold_since_push == item.count == 36
