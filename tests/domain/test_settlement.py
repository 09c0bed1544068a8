"""Settlement: what is due, fees, member shares to the fen, late refunds as negative lines, one
statement per currency with its outbox job, and no order in two statements (also under concurrency)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import func, select

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot, RefundStatus
from app.domain import ledger
from app.domain.reconcile import upsert_order, upsert_refund
from app.domain.settlement import COOPERATIVE, SettlementConflict, fee_from_rate, member_split
from app.services.dividends import deliver as DELIVER_SPEC
from app.services.settlement import run_settlement
from app.models import Job, MemberShare, Order, Refund, Settlement, SettlementLine, Sku, Store
from tests.conftest import _truncate

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
DELIVER_JOB = DELIVER_SPEC.name


# -- builders shared with the delivery and API tests ------------------------------------------------
async def make_store(db, *, return_window_days: int | None = 30, fee_rate_bp: int | None = None,
                     name: str = "shop") -> int:
    settings: dict = {}
    if return_window_days is not None:
        settings["return_window_days"] = return_window_days
    if fee_rate_bp is not None:
        settings["fee_rate_bp"] = fee_rate_bp
    async with db.transaction() as session:
        store = Store(platform="sandbox", name=name, credentials={}, settings=settings)
        session.add(store)
        await session.flush()
        return store.id


async def make_sku(db, code: str, lots: list[tuple[str, int]] = ()) -> int:
    """A cooperative sku with member lots received in the given order (oldest first)."""
    async with db.transaction() as session:
        sku = Sku(sku=code, name=code)
        session.add(sku)
        await session.flush()
        for n, (member, quantity) in enumerate(lots):
            await ledger.receive(session, sku_id=sku.id, quantity=quantity, member_id=member, lot_ref=None,
                                 cause_key=f"test-receipt:{code}:{n}")
        return sku.id


async def add_lot(db, sku_id: int, member: str, quantity: int, key: str) -> None:
    async with db.transaction() as session:
        await ledger.receive(session, sku_id=sku_id, quantity=quantity, member_id=member, lot_ref=None, cause_key=key)


async def deliver_order(db, store_id: int, external_id: str, lines: list[tuple[str, int, int]], *,
                        currency: str = "CNY", delivered_at: datetime = T0, fee: int | None = None,
                        total: int | None = None) -> int:
    """A delivered order; ``lines`` are (merchant sku code, quantity, line total in minor units)."""
    snap = OrderSnapshot(
        platform="sandbox", external_id=external_id, status=OrderStatus.DELIVERED, currency=currency,
        total_minor=sum(t for _, _, t in lines) if total is None else total, platform_fee_minor=fee,
        lines=[OrderLineSnapshot(external_line_id=f"{external_id}-{i}", merchant_sku=code, quantity=qty,
                                 unit_price_minor=line_total // max(qty, 1), total_minor=line_total)
               for i, (code, qty, line_total) in enumerate(lines)],
        created_at=delivered_at - timedelta(days=3), paid_at=delivered_at - timedelta(days=3),
        shipped_at=delivered_at - timedelta(days=2), delivered_at=delivered_at, updated_at=delivered_at)
    async with db.transaction() as session:
        store = await session.get(Store, store_id)
        result = await upsert_order(session, store, snap, via="poll")
        return result.order_id


async def refund_order(db, store_id: int, order_external_id: str, external_id: str, amount: int, *,
                       status: str = "succeeded", currency: str = "CNY", at: datetime = T0,
                       lines: list[tuple[int, int, int, str]] = ()) -> int:
    """``lines``: (order line index, quantity, amount, restock)."""
    snap = RefundSnapshot(
        platform="sandbox", external_id=external_id, order_external_id=order_external_id,
        status=RefundStatus(status), currency=currency, amount_minor=amount,
        lines=[RefundLineSnapshot(external_line_id=f"{order_external_id}-{i}", quantity=q, amount_minor=a, restock=r)
               for i, q, a, r in lines],
        updated_at=at)
    async with db.transaction() as session:
        store = await session.get(Store, store_id)
        return (await upsert_refund(session, store, snap, via="poll")).refund_id


async def settle(db, now: datetime) -> list[Settlement]:
    async with db.transaction() as session:
        return await run_settlement(session, now=now)


async def statements(db) -> list[Settlement]:
    async with db.read() as session:
        return list((await session.execute(select(Settlement).order_by(Settlement.created_at, Settlement.id))).scalars())


def shares_of(statement: Settlement) -> dict[str, int]:
    return {s["member_id"]: s["net_minor"] for s in statement.body["member_shares"]}


def assert_consistent(statement: Settlement) -> None:
    body = statement.body
    assert body["id"] == statement.id
    assert body["net_minor"] == body["gross_minor"] - body["refunds_minor"] - body["platform_fees_minor"]
    assert sum(shares_of(statement).values()) == body["net_minor"]
    assert sum(o["net_minor"] for o in body["orders"]) == body["net_minor"]
    assert (statement.gross_minor, statement.refunds_minor, statement.platform_fees_minor, statement.net_minor) == (
        body["gross_minor"], body["refunds_minor"], body["platform_fees_minor"], body["net_minor"])
    assert "delivery" not in body  # live state is added by the API, never frozen into what is sent


# -- pure arithmetic ---------------------------------------------------------------------------------
def test_fee_rate_rounds_half_up_with_integers():
    assert fee_from_rate(10_000, 250) == 250
    assert fee_from_rate(20, 250) == 1  # 0.5 -> 1
    assert fee_from_rate(19, 250) == 0  # 0.475 -> 0
    assert fee_from_rate(199, 50) == 1  # 0.995 -> 1
    assert fee_from_rate(10**15 + 1, 1) == 100_000_000_000  # no float precision loss on big sums
    assert fee_from_rate(0, 9999) == 0


def test_member_split_adds_up_and_gives_unsupplied_stock_to_the_cooperative():
    assert member_split(100, {(1, "m-a"): 1, (2, "m-b"): 2}) == {"m-a": 33, "m-b": 67}
    assert member_split(-100, {(1, "m-a"): 1, (2, "m-b"): 2}) == {"m-a": -33, "m-b": -67}
    assert member_split(10, {(1, "m-a"): 1, (None, None): 1}) == {"m-a": 5, COOPERATIVE: 5}
    assert member_split(7, {}) == {COOPERATIVE: 7}
    assert member_split(9, {(1, "m-a"): 1, (3, "m-a"): 1, (2, "m-b"): 1}) == {"m-a": 6, "m-b": 3}


# -- due or not ------------------------------------------------------------------------------------
async def test_return_window_is_respected(db):
    week = await make_store(db, return_window_days=7)
    await make_sku(db, "TEA", [("m-01", 10)])
    await deliver_order(db, week, "W-1", [("TEA", 1, 1000)], delivered_at=T0)
    assert await settle(db, T0 + timedelta(days=7) - timedelta(seconds=1)) == []
    created = await settle(db, T0 + timedelta(days=7))
    assert len(created) == 1 and [o["external_id"] for o in created[0].body["orders"]] == ["W-1"]


async def test_store_with_zero_day_window_settles_at_delivery_and_default_is_thirty_days(db):
    now_store = await make_store(db, return_window_days=0)
    default_store = await make_store(db, return_window_days=None, name="default")
    await make_sku(db, "TEA", [("m-01", 10)])
    await deliver_order(db, now_store, "Z-1", [("TEA", 1, 500)], delivered_at=T0)
    await deliver_order(db, default_store, "D-1", [("TEA", 1, 700)], delivered_at=T0)
    assert await settle(db, T0 - timedelta(seconds=1)) == []
    first = await settle(db, T0)
    assert [o["external_id"] for o in first[0].body["orders"]] == ["Z-1"]
    assert await settle(db, T0 + timedelta(days=29)) == []
    later = await settle(db, T0 + timedelta(days=30))
    assert [o["external_id"] for o in later[0].body["orders"]] == ["D-1"]


async def test_unshipped_and_cancelled_orders_are_never_due(db):
    store = await make_store(db, return_window_days=0)
    for external_id, status in (("P-1", OrderStatus.PAID), ("X-1", OrderStatus.CANCELLED)):
        snap = OrderSnapshot(platform="sandbox", external_id=external_id, status=status, currency="CNY",
                             total_minor=100, lines=[OrderLineSnapshot(external_line_id="l", quantity=1,
                                                                       unit_price_minor=100, total_minor=100)],
                             paid_at=T0, updated_at=T0)
        async with db.transaction() as session:
            await upsert_order(session, await session.get(Store, store), snap)
    assert await settle(db, T0 + timedelta(days=90)) == []


def _shipped(external_id: str, *, at=T0) -> OrderSnapshot:
    return OrderSnapshot(platform="sandbox", external_id=external_id, status=OrderStatus.SHIPPED, currency="CNY",
                         total_minor=100, lines=[OrderLineSnapshot(external_line_id="l", quantity=1,
                                                                   unit_price_minor=100, total_minor=100)],
                         paid_at=at - timedelta(days=1), shipped_at=at, updated_at=at)


async def test_a_shipped_order_with_no_delivered_signal_is_due_delivery_assumed_days_after_shipping(db):
    """Some orders never get a delivered signal (the buyer never confirms, the platform never says):
    settings.delivery_assumed_days (15 by default) after shipping they count as delivered, and their
    return window runs from then."""
    default = await make_store(db, return_window_days=7, name="default")
    async with db.transaction() as session:
        quick = Store(platform="sandbox", name="quick", credentials={},
                      settings={"return_window_days": 0, "delivery_assumed_days": 3})
        session.add(quick)
        await session.flush()
        quick_id = quick.id
    async with db.transaction() as session:
        await upsert_order(session, await session.get(Store, default), _shipped("S-15"))
        await upsert_order(session, await session.get(Store, quick_id), _shipped("S-3"))
    assert await settle(db, T0 + timedelta(days=3) - timedelta(seconds=1)) == []
    (first,) = await settle(db, T0 + timedelta(days=3))
    assert [o["external_id"] for o in first.body["orders"]] == ["S-3"]
    assert await settle(db, T0 + timedelta(days=15 + 7) - timedelta(seconds=1)) == []
    (second,) = await settle(db, T0 + timedelta(days=15 + 7))
    assert [o["external_id"] for o in second.body["orders"]] == ["S-15"]
    assert second.gross_minor == 100


async def test_open_refund_blocks_until_it_is_decided(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-01", 10)])
    await deliver_order(db, store, "R-1", [("TEA", 2, 2000)])
    await refund_order(db, store, "R-1", "RF-1", 500, status="open", at=T0 + timedelta(hours=1))
    assert await settle(db, T0 + timedelta(days=1)) == []
    await refund_order(db, store, "R-1", "RF-1", 500, status="succeeded", at=T0 + timedelta(hours=2))
    (statement,) = await settle(db, T0 + timedelta(days=1))
    assert (statement.gross_minor, statement.refunds_minor, statement.net_minor) == (2000, 500, 1500)
    assert shares_of(statement) == {"m-01": 1500}
    # The refund is accounted in this statement, so it never comes back as a "late" one.
    assert await settle(db, T0 + timedelta(days=2)) == []


async def test_closed_refund_does_not_block_or_count(db):
    store = await make_store(db, return_window_days=0)
    await deliver_order(db, store, "C-1", [("NOPE", 1, 900)])
    await refund_order(db, store, "C-1", "RF-C", 900, status="closed", at=T0 + timedelta(hours=1))
    (statement,) = await settle(db, T0 + timedelta(hours=2))
    assert (statement.refunds_minor, statement.net_minor) == (0, 900)
    assert shares_of(statement) == {COOPERATIVE: 900}  # unbound line: no member lot supplied it


# -- money ---------------------------------------------------------------------------------------------
async def test_fee_rate_fallback_and_platform_fee(db):
    store = await make_store(db, return_window_days=0, fee_rate_bp=250)
    await make_sku(db, "TEA", [("m-01", 10)])
    await deliver_order(db, store, "F-1", [("TEA", 1, 1999)])  # 2.5 % of 19.99 = 0.49975 -> 50 fen
    await deliver_order(db, store, "F-2", [("TEA", 1, 1000)], fee=7)  # reported by the platform: used as is
    (statement,) = await settle(db, T0)
    by_ext = {o["external_id"]: o for o in statement.body["orders"]}
    assert by_ext["F-1"]["platform_fees_minor"] == 50 and by_ext["F-1"]["net_minor"] == 1949
    assert by_ext["F-2"]["platform_fees_minor"] == 7 and by_ext["F-2"]["net_minor"] == 993
    assert statement.platform_fees_minor == 57 and statement.net_minor == 2999 - 57
    assert_consistent(statement)


async def test_member_shares_follow_fifo_lots_pro_rata(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-old", 3), ("m-new", 5)])
    honey = await make_sku(db, "HONEY", [("m-bee", 1)])
    async with db.transaction() as session:  # the cooperative's own stock: on hand with no member lot
        await ledger.adjust(session, sku_id=honey, delta=5, reason="found in the store room", cause_key="own-honey")
    # 6 tea units: 3 from m-old's lot, 3 from m-new's; 2 honey units: 1 from m-bee, 1 the cooperative's.
    await deliver_order(db, store, "M-1", [("TEA", 6, 600), ("HONEY", 2, 401)], fee=100)
    (statement,) = await settle(db, T0)
    assert statement.net_minor == 901
    shares = shares_of(statement)
    assert sum(shares.values()) == 901
    # Fees come off pro rata by line total: tea 600 - 60 = 540 (270 / 270); honey 401 - 40 = 361.
    assert shares["m-old"] == 270 and shares["m-new"] == 270
    assert shares["m-bee"] + shares[COOPERATIVE] == 361 and abs(shares["m-bee"] - shares[COOPERATIVE]) == 1
    async with db.read() as session:
        rows = (await session.execute(select(MemberShare).where(MemberShare.settlement_id == statement.id))).scalars()
        assert {r.member_id: r.net_minor for r in rows} == shares


async def test_units_shipped_beyond_the_ledger_are_the_cooperatives(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "HONEY", [("m-bee", 1)])
    await deliver_order(db, store, "OV-1", [("HONEY", 4, 400)])  # oversold: 3 units no lot supplied
    (statement,) = await settle(db, T0)
    assert shares_of(statement) == {"m-bee": 100, COOPERATIVE: 300}


async def test_refund_of_one_line_comes_off_that_lines_members(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-tea", 10)])
    await make_sku(db, "HONEY", [("m-bee", 10)])
    await deliver_order(db, store, "L-1", [("TEA", 1, 1000), ("HONEY", 1, 1000)])
    await refund_order(db, store, "L-1", "RF-L", 1000, at=T0 + timedelta(hours=1), lines=[(1, 1, 1000, "return")])
    (statement,) = await settle(db, T0 + timedelta(hours=2))
    assert shares_of(statement) == {"m-tea": 1000}


async def test_one_statement_per_currency_each_with_its_outbox_job(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-01", 10)])
    await deliver_order(db, store, "CNY-1", [("TEA", 1, 1000)], currency="CNY")
    await deliver_order(db, store, "USD-1", [("TEA", 1, 250)], currency="USD")
    await deliver_order(db, store, "CNY-2", [("TEA", 2, 3000)], currency="CNY")
    created = await settle(db, T0)
    assert sorted(s.currency for s in created) == ["CNY", "USD"]
    assert len({s.run_id for s in created}) == 1
    async with db.read() as session:
        jobs = (await session.execute(select(Job).where(Job.name == DELIVER_JOB))).scalars().all()
        orders = (await session.execute(select(Order))).scalars().all()
    assert sorted(j.dedupe_key for j in jobs) == sorted(f"dividend:{s.id}" for s in created)
    assert all(j.lock_key == j.dedupe_key and j.payload["settlement_id"] in j.dedupe_key for j in jobs)
    by_currency = {s.currency: s.id for s in created}
    assert all(o.settlement_id == by_currency[o.currency] for o in orders)
    for s in created:
        assert_consistent(s)


async def test_rolled_back_run_leaves_no_statement_and_no_job(db):
    store = await make_store(db, return_window_days=0)
    await deliver_order(db, store, "RB-1", [("X", 1, 100)])
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await run_settlement(session, now=T0)
            raise RuntimeError("the business transaction fails after the statement was written")
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(Settlement))).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(Job).where(Job.name == DELIVER_JOB))).scalar_one() == 0
        assert (await session.execute(select(Order.settlement_id))).scalar_one() is None
    assert len(await settle(db, T0)) == 1


# -- late refunds --------------------------------------------------------------------------------------
async def test_late_refund_is_a_negative_line_in_the_next_statement_and_the_first_is_untouched(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-old", 5), ("m-new", 5)])
    await deliver_order(db, store, "LR-1", [("TEA", 10, 10_000)])
    (first,) = await settle(db, T0)
    assert shares_of(first) == {"m-old": 5000, "m-new": 5000}
    frozen = (dict(first.body), first.net_minor, first.created_at)
    async with db.read() as session:
        first_lines = [(l.kind, l.net_minor) for l in (await session.execute(
            select(SettlementLine).where(SettlementLine.settlement_id == first.id))).scalars()]

    # Three units come back: they return to the newest lot (m-new), so m-new bears this refund.
    await refund_order(db, store, "LR-1", "RF-LATE", 3000, at=T0 + timedelta(days=3), lines=[(0, 3, 3000, "return")])
    (second,) = await settle(db, T0 + timedelta(days=3))
    assert second.id != first.id
    (line,) = second.body["orders"]
    assert line["kind"] == "refund" and line["external_id"] == "LR-1" and line["net_minor"] == -3000
    assert (second.gross_minor, second.refunds_minor, second.net_minor) == (0, 3000, -3000)
    assert shares_of(second) == {"m-new": -3000}
    assert_consistent(second)

    async with db.read() as session:
        again = await session.get(Settlement, first.id)
        refund = (await session.execute(select(Refund).where(Refund.external_id == "RF-LATE"))).scalar_one()
        order = (await session.execute(select(Order).where(Order.external_id == "LR-1"))).scalar_one()
        lines = [(l.kind, l.net_minor) for l in (await session.execute(
            select(SettlementLine).where(SettlementLine.settlement_id == first.id))).scalars()]
    assert (again.body, again.net_minor, again.created_at) == frozen and lines == first_lines
    assert refund.settlement_id == second.id and order.settlement_id == first.id
    assert await settle(db, T0 + timedelta(days=9)) == []  # taken off once only


async def test_money_only_late_refund_is_borne_like_the_sale(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-a", 1), ("m-b", 2)])
    await deliver_order(db, store, "MO-1", [("TEA", 3, 3000)])
    await settle(db, T0)
    await refund_order(db, store, "MO-1", "RF-MO", 301, at=T0 + timedelta(days=1))
    (second,) = await settle(db, T0 + timedelta(days=1))
    assert shares_of(second) == {"m-a": -100, "m-b": -201}


# -- concurrency -------------------------------------------------------------------------------------
async def test_two_concurrent_runs_never_put_an_order_in_two_statements(db):
    store = await make_store(db, return_window_days=0)
    await make_sku(db, "TEA", [("m-01", 100)])
    for n in range(12):
        await deliver_order(db, store, f"CC-{n}", [("TEA", 1, 100 + n)])

    async def one_run():
        try:
            return await settle(db, T0)
        except SettlementConflict:
            return []

    results = await asyncio.gather(one_run(), one_run(), one_run())
    settled = [o["order_id"] for r in results for s in r for o in s.body["orders"]]
    assert len(settled) == 12 and len(set(settled)) == 12
    async with db.read() as session:
        lines = (await session.execute(select(SettlementLine.order_id))).scalars().all()
    assert sorted(lines) == sorted(settled)


async def test_a_large_backlog_settles_in_chunks_exactly_once(db):
    from sqlalchemy import insert

    store = await make_store(db, return_window_days=0, fee_rate_bp=100)
    now = T0
    rows = [dict(store_id=store, platform="sandbox", external_id=f"BIG-{n}", status="delivered", currency="CNY",
                 total_minor=1000 + n, refunded_minor=0, platform_updated_at=now, delivered_at=now,
                 has_unbound=False, oversold=False, seen_via="poll", raw=None, created_at=now, updated_at=now)
             for n in range(2500)]
    async with db.transaction() as session:
        await session.execute(insert(Order), rows)
    (statement,) = await settle(db, now)
    gross = sum(r["total_minor"] for r in rows)
    fees = sum(fee_from_rate(r["total_minor"], 100) for r in rows)
    assert (statement.gross_minor, statement.platform_fees_minor, statement.net_minor) == (gross, fees, gross - fees)
    assert shares_of(statement) == {COOPERATIVE: gross - fees}  # no lines, so no member lot supplied them
    async with db.read() as session:
        unsettled = (await session.execute(select(func.count()).select_from(Order)
                                           .where(Order.settlement_id.is_(None)))).scalar_one()
    assert unsettled == 0 and len(statement.body["orders"]) == 2500


# -- properties over random orders, refunds and lots ------------------------------------------------
LINE = st.tuples(st.sampled_from(["P0", "P1", "UNBOUND"]), st.integers(1, 4), st.integers(0, 5000))
REFUND = st.tuples(st.sampled_from(["open", "succeeded", "closed"]), st.integers(0, 100),
                   st.sampled_from(["no_restock", "return"]))
ORDER = st.fixed_dictionaries({
    "lines": st.lists(LINE, min_size=1, max_size=3),
    "currency": st.sampled_from(["CNY", "USD"]),
    "store": st.integers(0, 1),
    "delivered_day": st.integers(0, 6),
    "fee": st.one_of(st.none(), st.integers(0, 300)),
    "refunds": st.lists(REFUND, max_size=2),
    "late_refund": st.one_of(st.none(), st.integers(1, 100)),
})
WORLD = st.fixed_dictionaries({
    "lots": st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["m-a", "m-b", "m-c"]), st.integers(1, 6)),
                     max_size=5),
    "windows": st.tuples(st.sampled_from([0, 2, 30]), st.sampled_from([0, 3])),
    "fee_rates": st.tuples(st.integers(0, 500), st.integers(0, 500)),
    "orders": st.lists(ORDER, min_size=1, max_size=5),
    "runs": st.lists(st.integers(0, 10), min_size=1, max_size=3),
})


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=WORLD)
async def test_settlement_properties(db, world):
    await _truncate(db)
    stores = [await make_store(db, return_window_days=w, fee_rate_bp=f, name=f"s{i}")
              for i, (w, f) in enumerate(zip(world["windows"], world["fee_rates"]))]
    skus = [await make_sku(db, f"P{i}") for i in range(2)]
    for n, (sku, member, quantity) in enumerate(world["lots"]):
        await add_lot(db, skus[sku], member, quantity, f"lot-{n}")
    for n, spec in enumerate(world["orders"]):
        ext = f"O-{n}"
        delivered = T0 + timedelta(days=spec["delivered_day"])
        total = sum(t for _, _, t in spec["lines"])
        await deliver_order(db, stores[spec["store"]], ext, spec["lines"], currency=spec["currency"],
                            delivered_at=delivered, fee=spec["fee"])
        for k, (status, percent, restock) in enumerate(spec["refunds"]):
            await refund_order(db, stores[spec["store"]], ext, f"{ext}-R{k}", total * percent // 100,
                               status=status, currency=spec["currency"], at=delivered + timedelta(hours=k + 1),
                               lines=[(0, 1, 0, restock)])

    last = T0
    for n, day in enumerate(sorted(world["runs"])):
        last = T0 + timedelta(days=day)
        await settle(db, last)
        # Refunds that succeed after their order was settled, before the next run.
        for k, spec in enumerate(world["orders"]):
            if spec["late_refund"] is not None and n == 0:
                async with db.read() as session:
                    order = (await session.execute(select(Order).where(Order.external_id == f"O-{k}"))).scalar_one()
                if order.settlement_id is not None:
                    await refund_order(db, stores[spec["store"]], f"O-{k}", f"O-{k}-LATE",
                                       spec["late_refund"], currency=spec["currency"], at=last + timedelta(minutes=1),
                                       lines=[(0, 1, spec["late_refund"], "return")])
    await settle(db, last + timedelta(minutes=2))

    all_statements = await statements(db)
    for statement in all_statements:
        assert_consistent(statement)
    settled_orders = [o["order_id"] for s in all_statements for o in s.body["orders"] if o["kind"] == "sale"]
    late_refunds = [o["refund_id"] for s in all_statements for o in s.body["orders"] if o["kind"] == "refund"]
    assert len(settled_orders) == len(set(settled_orders)), "an order is in two statements"
    assert len(late_refunds) == len(set(late_refunds)), "a refund was taken off twice"

    async with db.read() as session:
        orders = (await session.execute(select(Order))).scalars().all()
        refunds = (await session.execute(select(Refund))).scalars().all()
        store_rows = {s.id: s for s in (await session.execute(select(Store))).scalars()}
    final = last + timedelta(minutes=2)
    open_orders = {r.order_id for r in refunds if r.status == "open"}
    by_statement = {s.id: s for s in all_statements}
    expected_net = 0
    for order in orders:
        window = timedelta(days=store_rows[order.store_id].settings.get("return_window_days", 30))
        due = order.delivered_at + window <= final and order.id not in open_orders
        assert (order.settlement_id is not None) == due, f"order {order.external_id} due={due}"
        if order.settlement_id is not None:
            assert settled_orders.count(order.id) == 1
            assert by_statement[order.settlement_id].currency == order.currency
            rate = store_rows[order.store_id].settings.get("fee_rate_bp", 0)
            fee = order.platform_fee_minor if order.platform_fee_minor is not None else fee_from_rate(order.total_minor, rate)
            expected_net += order.total_minor - fee
        else:
            assert order.id not in settled_orders
    for refund in refunds:
        order = next(o for o in orders if o.id == refund.order_id)
        if refund.status == "succeeded" and order.settlement_id is not None:
            assert refund.settlement_id is not None, "a succeeded refund of a settled order was never taken off"
            expected_net -= refund.amount_minor
        else:
            assert refund.settlement_id is None
    # Every fen of every settled order, less its refunds and fees, is in exactly one statement.
    assert sum(s.net_minor for s in all_statements) == expected_net
    assert sum(sum(shares_of(s).values()) for s in all_statements) == expected_net
