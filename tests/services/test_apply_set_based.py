"""The set-based apply gives what row-by-row gives: random batches (duplicates, out-of-order updates,
refunds before their orders, unbound and unknown skus, scarce stock) applied both ways on the same
database, in two worlds of their own, and compared row for row."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot
from adapters.base import RefundStatus
import app.workers.flows  # noqa: F401  (the flows that follow stock changes)
from app.domain import new_orders
from app.jobs.outcomes import Retry
from app.models import InboxItem, Listing, Order, OrderLine, Refund, Sku, StockMovement, Store
from app.services import apply as inbox

T0 = datetime(2026, 11, 11, 20, 0, tzinfo=timezone.utc)
ORDER_IDS = ["o1", "o2", "o3", "o4", "o5", "o6"]
# Line keys: two bound listings, one listing bound to nothing, a key no listing has yet whose merchant
# code is a sku (it binds itself), a key no listing has and no sku matches, and a line with no key.
KEYS = ["bound-a", "bound-b", "unbound", "new-coded", "new-unknown", None]

line_st = st.tuples(st.sampled_from(KEYS), st.integers(min_value=0, max_value=4))
order_st = st.fixed_dictionaries({
    "kind": st.just("order"), "order": st.sampled_from(ORDER_IDS),
    "status": st.sampled_from([OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.PAID, OrderStatus.PAID,
                               OrderStatus.CANCELLED, OrderStatus.SHIPPED]),
    "minute": st.integers(min_value=0, max_value=5), "lines": st.lists(line_st, min_size=1, max_size=3)})
refund_st = st.fixed_dictionaries({
    "kind": st.just("refund"), "order": st.sampled_from(ORDER_IDS), "minute": st.integers(min_value=0, max_value=5),
    "status": st.sampled_from([RefundStatus.OPEN, RefundStatus.SUCCEEDED, RefundStatus.CLOSED])})
BATCH = st.lists(st.one_of(order_st, order_st, order_st, refund_st), min_size=2, max_size=14)
STOCK = st.tuples(st.integers(min_value=0, max_value=12), st.integers(min_value=0, max_value=12))


def _order(event: dict, lines: dict[str, list]) -> OrderSnapshot:
    # An order's lines are fixed by its first event (a platform does not change what was bought), so
    # later events are status updates, earlier or later in time than what we hold.
    chosen = lines.setdefault(event["order"], event["lines"])
    return OrderSnapshot(
        platform="shopify", external_id=event["order"], status=event["status"], currency="CNY",
        total_minor=sum(q for _, q in chosen) * 1990, updated_at=T0 + timedelta(minutes=event["minute"]),
        created_at=T0, raw={"id": event["order"]},
        lines=[OrderLineSnapshot(external_line_id=f"{event['order']}-{n}", external_sku_key=key,
                                 merchant_sku=("W-CODED" if key == "new-coded" else None), quantity=quantity,
                                 unit_price_minor=1990, total_minor=1990 * quantity, title=f"tea {key}",
                                 listing_ref={"variant_id": key} if key else {})
               for n, (key, quantity) in enumerate(chosen)])


def _refund(event: dict, lines: dict[str, list]) -> RefundSnapshot:
    chosen = lines.get(event["order"]) or [("bound-a", 1)]
    return RefundSnapshot(
        platform="shopify", external_id=f"r-{event['order']}", order_external_id=event["order"],
        status=event["status"], currency="CNY", amount_minor=1990, updated_at=T0 + timedelta(minutes=event["minute"]),
        lines=[RefundLineSnapshot(external_line_id=f"{event['order']}-0", external_sku_key=chosen[0][0],
                                  quantity=min(1, chosen[0][1]), amount_minor=1990, restock="cancel")])


async def _world(db, stock: tuple[int, int]) -> tuple[int, dict[str, int], str]:
    """A store with its skus (a world of its own in the shared database): two bound listings, one
    unbound; the sku codes carry a tag so that two worlds never share a row."""
    tag = uuid.uuid4().hex[:8]
    async with db.transaction() as session:
        store = Store(platform="shopify", name=f"shop-{tag}", external_shop_id=f"{tag}.myshopify.com")
        skus = {name: Sku(sku=f"{name}-{tag}", name=name, on_hand=qty) for name, qty in zip(("A", "B"), stock)}
        skus["W"] = Sku(sku=f"W-{tag}", name="W", on_hand=5)
        session.add_all([store, *skus.values()])
        await session.flush()
        session.add_all([
            Listing(store_id=store.id, external_sku_key="bound-a", sku_id=skus["A"].id, listing_ref={"variant_id": "bound-a"}),
            Listing(store_id=store.id, external_sku_key="bound-b", sku_id=skus["B"].id, listing_ref={"variant_id": "bound-b"}),
            Listing(store_id=store.id, external_sku_key="unbound", listing_ref={"variant_id": "unbound"})])
        return store.id, {name: sku.id for name, sku in skus.items()}, tag


def _tagged(snapshot, tag: str):
    """The same snapshot, with the world's own merchant code for the self-binding line."""
    if isinstance(snapshot, OrderSnapshot):
        lines = [line.model_copy(update={"merchant_sku": f"W-{tag}"}) if line.merchant_sku else line
                 for line in snapshot.lines]
        return snapshot.model_copy(update={"lines": lines})
    return snapshot


async def _rows(db, store_id: int, count: int) -> list[int]:
    async with db.transaction() as session:
        rows = [InboxItem(store_id=store_id, platform="shopify", dedupe_key=uuid.uuid4().hex, body=b"{}")
                for _ in range(count)]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


def _prepared(inbox_id: int, store_id: int, snapshot) -> inbox.Prepared:
    ctx = SimpleNamespace(job=SimpleNamespace(created_at=datetime.now(timezone.utc), attempts=1))
    prepared = inbox.Prepared(ctx, inbox_id, store_id)
    (prepared.orders if isinstance(snapshot, OrderSnapshot) else prepared.refunds).append(snapshot)
    return prepared


async def _apply(db, store_id: int, snapshots: list, together: bool) -> list:
    """Apply the deliveries as the runner would: one batch (or one row at a time), then the rows told
    to wait (a refund before its order) again, until none waits."""
    ids = await _rows(db, store_id, len(snapshots))
    todo = [_prepared(i, store_id, snap) for i, snap in zip(ids, snapshots)]
    outcomes = []
    for _ in range(4):
        if together:
            results = await inbox.apply_batch(db, todo)
        else:
            results = [(await inbox.apply_batch(db, [p]))[0] for p in todo]
        outcomes.append([type(o).__name__ for o in results])
        todo = [p for p, outcome in zip(todo, results) if isinstance(outcome, Retry)]
        if not todo:
            break
    return outcomes


async def _state(db, store_id: int, skus: dict[str, int], tag: str = "") -> dict:
    """Everything the apply writes, with database ids replaced by what names them."""
    async with db.read() as session:
        orders = {o.id: o for o in (await session.execute(select(Order).where(Order.store_id == store_id))).scalars()}
        lines = {l.id: l for l in (await session.execute(
            select(OrderLine).where(OrderLine.order_id.in_(orders)))).scalars()}
        sku_names = {v: k for k, v in skus.items()}
        movements = (await session.execute(select(StockMovement).where(StockMovement.sku_id.in_(skus.values()))
                                           .order_by(StockMovement.id))).scalars().all()
        refunds = (await session.execute(select(Refund).where(Refund.store_id == store_id))).scalars().all()
        listings = (await session.execute(select(Listing).where(Listing.store_id == store_id))).scalars().all()
        sku_rows = (await session.execute(select(Sku).where(Sku.id.in_(skus.values())))).scalars().all()
        statuses = Counter((await session.execute(select(InboxItem.status).where(InboxItem.store_id == store_id))).scalars())
    skip = {"id", "order_id", "created_at", "updated_at", "sku_id"}
    return {
        "orders": sorted((o.external_id, tuple(sorted((k, str(v)) for k, v in o.model_dump().items()
                                                      if k not in skip | {"store_id"}))) for o in orders.values()),
        "lines": sorted((orders[l.order_id].external_id, l.external_line_id, sku_names.get(l.sku_id),
                         tuple(sorted((k, str(v).replace(tag, "T")) for k, v in l.model_dump().items() if k not in skip)))
                        for l in lines.values()),
        "movements": [(sku_names[m.sku_id], m.kind, m.on_hand_delta, m.reserved_delta, m.on_hand_after,
                       m.reserved_after, (orders[lines[m.order_line_id].order_id].external_id,
                                          lines[m.order_line_id].external_line_id) if m.order_line_id else None)
                      for m in movements],
        "refunds": sorted((r.external_id, r.status, r.order_id is not None, r.amount_minor) for r in refunds),
        "listings": sorted((l.external_sku_key, sku_names.get(l.sku_id), l.sold_since_push, l.unheard_sales, l.quota,
                            l.bound_by, str(sorted(l.listing_ref.items())), str(l.merchant_sku).replace(tag, "T"))
                           for l in listings),
        "skus": sorted((sku_names[s.id], s.on_hand, s.reserved) for s in sku_rows),
        "inbox": dict(statuses),
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=BATCH, stock=STOCK)
async def test_a_batch_applies_exactly_as_row_by_row_would(db, batch, stock):
    lines: dict[str, list] = {}
    snapshots = [_order(e, lines) if e["kind"] == "order" else _refund(e, lines) for e in batch]
    states, runs = [], []
    for together in (False, True):
        store_id, skus, tag = await _world(db, stock)
        runs.append(await _apply(db, store_id, [_tagged(s, tag) for s in snapshots], together))
        states.append(await _state(db, store_id, skus, tag))
    assert runs[0] == runs[1]
    for part in states[0]:
        one_by_one, together = states[0][part], states[1][part]
        if isinstance(one_by_one, list) and part != "movements":
            one_by_one, together = set(one_by_one), set(together)
            left, right = sorted(one_by_one - together), sorted(together - one_by_one)
            fields = [set(a[-1]) ^ set(b[-1]) for a, b in zip(left, right) if isinstance(a[-1], tuple)]
            assert one_by_one == together, (part, fields or (left, right))
        assert one_by_one == together, part


async def test_a_run_of_new_orders_goes_the_set_based_way_and_the_rest_row_by_row(db, monkeypatch):
    """The property above would hold with everything row by row: here the set-based path is shown to
    take the new orders (and only them)."""
    store_id, skus, _ = await _world(db, (3, 10))
    calls = []
    real = new_orders.insert_new_orders

    async def spy(session, held, work):
        calls.append([snap.external_id for _, snap, _ in work])
        return await real(session, held, work)

    monkeypatch.setattr(new_orders, "insert_new_orders", spy)
    lines: dict[str, list] = {}
    paid = [_order({"order": f"n{i}", "status": OrderStatus.PAID, "minute": 0, "lines": [("bound-a", 1)]}, lines)
            for i in range(5)]
    update = _order({"order": "n1", "status": OrderStatus.CANCELLED, "minute": 1, "lines": []}, lines)
    outcomes = await _apply(db, store_id, [paid[0], paid[1], paid[2], update, paid[3], paid[4]], together=True)
    assert outcomes == [["Done"] * 6]
    # n1 is named twice (created, then cancelled): both go row by row, in their places.
    assert calls == [["n0"], ["n2"], ["n3", "n4"]]
    state = await _state(db, store_id, skus)
    # 3 units for 4 paid orders (n1 cancelled gave its unit back): n4 is the one oversold.
    assert ("A", 3, 3) in state["skus"]
    oversold = [o for o, fields in state["orders"] if ("oversold", "True") in fields]
    assert oversold == ["n4"]


async def test_a_listing_changed_by_a_row_applied_alone_sends_later_rows_of_it_alone(db):
    store_id, skus, tag = await _world(db, (10, 10))
    lines: dict[str, list] = {}
    first = _tagged(_order({"order": "c1", "status": OrderStatus.PAID, "minute": 0, "lines": [("new-coded", 1)]}, lines), tag)
    second = _tagged(_order({"order": "c2", "status": OrderStatus.PAID, "minute": 0, "lines": [("new-coded", 2)]}, lines), tag)
    outcomes = await _apply(db, store_id, [first, second], together=True)
    assert outcomes == [["Done", "Done"]]
    state = await _state(db, store_id, skus)
    assert ("W", 5, 3) in state["skus"]  # both lines bound to W through the merchant code, both reserved



async def _pull(db, store_id: int, pages: list[list[OrderSnapshot]]) -> list[dict]:
    from app.services.pull import Counts, apply_items

    summaries = []
    for page in pages:
        counts = Counts()
        async with db.transaction() as session:
            store = await session.get(Store, store_id)
            await apply_items(session, store, "orders", page, counts, via="resync")
        summaries.append({k: getattr(counts, k) for k in ("fetched", "created", "updated", "unchanged", "failed")})
    return summaries


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(order_st, min_size=2, max_size=14), stock=STOCK, cut=st.integers(min_value=1, max_value=13))
async def test_a_pulled_page_applies_exactly_as_record_by_record_would(db, batch, stock, cut):
    lines: dict[str, list] = {}
    snapshots = [_order(e, lines) for e in batch]
    states, summaries = [], []
    for together in (False, True):
        store_id, skus, tag = await _world(db, stock)
        tagged = [_tagged(s, tag) for s in snapshots]
        pages = [tagged[:cut], tagged[cut:]] if cut < len(tagged) else [tagged]
        with pytest.MonkeyPatch.context() as patch:
            if not together:
                patch.setattr(new_orders, "fits", lambda held, store_id, snap: False)
            summaries.append(await _pull(db, store_id, pages))
        states.append(await _state(db, store_id, skus, tag))
    assert summaries[0] == summaries[1]
    assert {k: v for k, v in states[0].items() if k != "inbox"} == {k: v for k, v in states[1].items() if k != "inbox"}


async def test_a_pulled_run_that_fails_is_applied_record_by_record(db, monkeypatch):
    store_id, skus, _ = await _world(db, (10, 10))

    async def broken(session, held, work):
        raise RuntimeError("a bug in the set-based path")

    monkeypatch.setattr(new_orders, "insert_new_orders", broken)
    lines: dict[str, list] = {}
    page = [_order({"order": f"p{i}", "status": OrderStatus.PAID, "minute": 0, "lines": [("bound-a", 1)]}, lines)
            for i in range(4)]
    assert await _pull(db, store_id, [page]) == [{"fetched": 4, "created": 4, "updated": 0, "unchanged": 0, "failed": 0}]
    state = await _state(db, store_id, skus)
    assert ("A", 10, 4) in state["skus"] and len(state["orders"]) == 4


async def test_a_refund_stored_while_the_run_was_planned_is_linked_to_its_new_order(db):
    """On PostgreSQL a poll may store a refund for an order after the batch looked for waiting refunds
    and before it inserts the order: the order's creation links it, as one by one would."""
    from app.domain.reconcile import upsert_refund

    store_id, skus, _ = await _world(db, (10, 10))
    lines: dict[str, list] = {}
    order = _order({"order": "late", "status": OrderStatus.PAID, "minute": 0, "lines": [("bound-a", 2)]}, lines)
    refund = _refund({"order": "late", "minute": 1, "status": RefundStatus.SUCCEEDED}, lines)
    async with db.transaction() as session:
        store = await session.get(Store, store_id)
        held = await new_orders.read_held(session, [(store_id, order)])
        assert new_orders.fits(held, store_id, order)
        await upsert_refund(session, store, refund, via="poll", wait_for_order=False)  # the poll, meanwhile
        await new_orders.insert_new_orders(session, held, [(store, order, "webhook")])
    state = await _state(db, store_id, skus)
    assert state["refunds"] == [("r-late", "succeeded", True, 1990)]
    assert ("A", 10, 1) in state["skus"]  # 2 reserved, 1 released by the refund before shipping
