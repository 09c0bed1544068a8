"""Fees in settlement: an order waits fee_wait_days past its return window for the platform's actual fee,
then goes on the estimate; an actual fee (or subsidy) that arrives after the order was settled is a
fee_adjustment line of the next statement, the first statement untouched; bill lines are taken once;
and for any orders, fees, refunds and subsidies each statement's net is gross - refunds - fees with the
member shares adding up to it, to the fen."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import select

import app.workers.flows  # noqa: F401 - the stock pushes follow the ledger (outbox)
from adapters.base import BillLine
from app.domain.fees import fee_from_rate, import_lines, match_waiting_lines
from app.domain.settlement import order_fee_view, settle_due
from app.models import BillEntry, Order, Refund, Settlement, SettlementLine, Store
from tests.conftest import _truncate
from tests.domain.test_settlement import (T0, add_lot, assert_consistent, deliver_order, make_sku, make_store,
                                          refund_order, shares_of, statements)

REPORTS_FEES = {"expects_fees": lambda platform: True}  # as for Douyin, Taobao, Pinduoduo, Shopify


async def set_settings(db, store_id: int, **settings) -> None:
    async with db.transaction() as session:
        store = await session.get(Store, store_id)
        store.settings = {**store.settings, **settings}


async def settle(db, now, **options):
    async with db.transaction() as session:
        return await settle_due(session, now=now, **{**REPORTS_FEES, **options})


async def bill(db, store_id: int, *lines: BillLine):
    async with db.transaction() as session:
        return await import_lines(session, await session.get(Store, store_id), list(lines))


def settled_line(key: str, order: str, *, fee: int, subsidy: int = 0, gross: int = 0) -> BillLine:
    return BillLine(line_id=key, order_external_id=order, currency="CNY", kind="sale",
                    amount_minor=gross - fee + subsidy, gross_minor=gross, fee_minor=fee, subsidy_minor=subsidy,
                    fees={"commission": fee})


async def order_row(db, external_id: str) -> Order:
    async with db.read() as session:
        return (await session.execute(select(Order).where(Order.external_id == external_id))).scalar_one()


async def test_an_order_on_an_estimate_gets_its_actual_fee_as_a_line_of_the_next_statement(db):
    store = await make_store(db, return_window_days=0, fee_rate_bp=500)
    await make_sku(db, "TEA", [("m-a", 6), ("m-b", 4)])
    await deliver_order(db, store, "E-1", [("TEA", 10, 10_000)])

    assert await settle(db, T0 + timedelta(days=3)) == []  # waits for the actual fee (fee_wait_days 7)
    async with db.read() as session:
        order = (await session.execute(select(Order))).scalar_one()
        view = order_fee_view(order, (await session.get(Store, store)).options, True, T0 + timedelta(days=3))
    assert view == (None, None, True, T0 + timedelta(days=7))  # awaiting, the estimate from day 7

    (first,) = await settle(db, T0 + timedelta(days=7))  # no actual fee came: the estimate, 5 %
    assert_consistent(first)
    [line] = first.body["orders"]
    assert (line["kind"], line["platform_fees_minor"], line["fee_source"], line["net_minor"]) == (
        "sale", 500, "estimate", 9500)
    assert (first.body["platform_fees_estimated_minor"], first.body["platform_fees_actual_minor"]) == (500, 0)
    assert shares_of(first) == {"m-a": 5700, "m-b": 3800}
    frozen = dict(first.body)
    async with db.read() as session:
        first_lines = [(l.kind, l.fees_minor, l.net_minor, l.fee_source) for l in (await session.execute(
            select(SettlementLine).where(SettlementLine.settlement_id == first.id))).scalars()]

    # The platform's settlement data arrives: fee 6.20 and a subsidy of 1.00 the estimate knew nothing of.
    await bill(db, store, settled_line("S-1", "E-1", fee=620, subsidy=100, gross=10_000))
    assert (await order_row(db, "E-1")).platform_fee_minor == 620
    (second,) = await settle(db, T0 + timedelta(days=8))
    assert_consistent(second)
    [adjustment] = second.body["orders"]
    assert adjustment["kind"] == "fee_adjustment" and adjustment["external_id"] == "E-1"
    assert (adjustment["gross_minor"], adjustment["subsidy_minor"], adjustment["platform_fees_minor"],
            adjustment["net_minor"]) == (100, 100, 120, -20)
    assert (adjustment["fees_counted_before_minor"], adjustment["fee_actual_minor"], adjustment["fee_source"]) == (
        500, 620, "platform")
    assert (second.body["platform_fees_actual_minor"], second.body["platform_fees_estimated_minor"],
            second.body["subsidies_minor"]) == (120, 0, 100)
    assert shares_of(second) == {"m-a": -12, "m-b": -8}  # borne like the sale, by the lots that supplied it

    # Nothing of the first statement changed; the difference is counted once.
    async with db.read() as session:
        again = await session.get(Settlement, first.id)
        lines_now = [(l.kind, l.fees_minor, l.net_minor, l.fee_source) for l in (await session.execute(
            select(SettlementLine).where(SettlementLine.settlement_id == first.id))).scalars()]
    assert again.body == frozen and again.net_minor == 9500 and lines_now == first_lines
    assert await settle(db, T0 + timedelta(days=9)) == []
    order = await order_row(db, "E-1")
    assert (order.fee_settled_minor, order.subsidy_settled_minor, order.settlement_id) == (620, 100, first.id)


async def test_without_a_rate_an_order_waits_for_its_actual_fee_and_is_never_paid_on_a_silent_zero(db):
    store = await make_store(db, return_window_days=0)
    await deliver_order(db, store, "W-1", [("UNBOUND", 1, 3_000)])
    assert await settle(db, T0 + timedelta(days=365)) == []
    async with db.read() as session:
        order = (await session.execute(select(Order))).scalar_one()
        options = (await session.get(Store, store)).options
    assert order_fee_view(order, options, True, T0 + timedelta(days=365)) == (None, None, True, None)
    # A platform that reports no fees (the sandbox) estimates 0 at once instead.
    assert order_fee_view(order, options, False, T0) == (0, "estimate", False, None)

    await bill(db, store, settled_line("S-W", "W-1", fee=90, gross=3_000))
    (statement,) = await settle(db, T0 + timedelta(days=365))
    [line] = statement.body["orders"]
    assert (line["platform_fees_minor"], line["fee_source"], line["net_minor"]) == (90, "platform", 2_910)


async def test_an_actual_fee_that_comes_within_the_wait_is_used_and_no_adjustment_follows(db):
    store = await make_store(db, return_window_days=2, fee_rate_bp=1000)
    await deliver_order(db, store, "A-1", [("UNBOUND", 1, 5_000)])
    await bill(db, store, settled_line("S-A", "A-1", fee=150, gross=5_000))
    (statement,) = await settle(db, T0 + timedelta(days=2))  # due at the window's end: the fee is known
    assert statement.body["orders"][0]["platform_fees_minor"] == 150
    assert statement.body["platform_fees_actual_minor"] == 150
    assert await settle(db, T0 + timedelta(days=30)) == []


async def test_the_same_bill_lines_twice_make_one_set_of_fees(db):
    store = await make_store(db, return_window_days=0)
    await deliver_order(db, store, "D-1", [("UNBOUND", 1, 2_000)])
    lines = [settled_line("S-D1", "D-1", fee=40, gross=2_000), settled_line("S-D2", "D-1", fee=10),
             settled_line("S-X", "NOT-OURS", fee=1)]
    first = await bill(db, store, *lines)
    again = await bill(db, store, *lines, lines[0])
    assert (first.new, first.matched, [l.order_external_id for l in first.unmatched]) == (3, 2, ["NOT-OURS"])
    assert (again.new, again.duplicates, again.unmatched) == (0, 4, [])
    order = await order_row(db, "D-1")
    assert (order.platform_fee_minor, order.fee_source) == (50, "settlement")
    async with db.read() as session:
        assert len((await session.execute(select(BillEntry))).scalars().all()) == 3


async def test_bill_lines_win_over_the_orders_own_fee_and_a_snapshot_without_one_erases_nothing(db):
    store = await make_store(db, return_window_days=0)
    await deliver_order(db, store, "P-1", [("UNBOUND", 1, 2_000)], fee=70)
    assert ((await order_row(db, "P-1")).platform_fee_minor, (await order_row(db, "P-1")).fee_source) == (70, "order")
    await bill(db, store, settled_line("S-P", "P-1", fee=55, gross=2_000))
    await deliver_order(db, store, "P-1", [("UNBOUND", 1, 2_000)], fee=70, delivered_at=T0 + timedelta(hours=1))
    await deliver_order(db, store, "P-1", [("UNBOUND", 1, 2_000)], fee=None, delivered_at=T0 + timedelta(hours=2))
    assert (await order_row(db, "P-1")).platform_fee_minor == 55


async def test_lines_that_came_before_their_order_are_matched_when_it_arrives(db):
    store = await make_store(db, return_window_days=0)
    result = await bill(db, store, settled_line("S-E", "EARLY-1", fee=33, subsidy=7, gross=1_000))
    assert [l.order_external_id for l in result.unmatched] == ["EARLY-1"]
    await deliver_order(db, store, "EARLY-1", [("UNBOUND", 1, 1_000)])
    async with db.transaction() as session:
        assert await match_waiting_lines(session) == [(await order_row(db, "EARLY-1")).id]
    order = await order_row(db, "EARLY-1")
    assert (order.platform_fee_minor, order.subsidy_minor) == (33, 7)


# -- the property: net = gross - refunds - fees, shares = net, to the fen -----------------------------

ORDER = st.fixed_dictionaries({
    "lines": st.lists(st.tuples(st.sampled_from(["P0", "P1", "UNBOUND"]), st.integers(1, 3), st.integers(0, 9_000)),
                      min_size=1, max_size=3),
    "delivered_day": st.integers(0, 4),
    "fee": st.one_of(st.none(), st.integers(0, 900)),  # the actual fee; None: never comes
    "fee_arrives": st.sampled_from(["before", "after_first_run"]),
    "subsidy": st.integers(0, 500),
    "refunds": st.lists(st.tuples(st.sampled_from(["succeeded", "closed"]), st.integers(0, 100)), max_size=2),
    "late_refund": st.one_of(st.none(), st.integers(1, 500)),
})
WORLD = st.fixed_dictionaries({
    "lots": st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["m-a", "m-b", "m-c"]), st.integers(1, 6)),
                     max_size=4),
    "rate": st.one_of(st.none(), st.integers(0, 800)),
    "wait": st.sampled_from([0, 3]),
    "orders": st.lists(ORDER, min_size=1, max_size=4),
    "runs": st.lists(st.integers(0, 12), min_size=1, max_size=3),
})


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=WORLD)
async def test_statement_net_is_gross_less_refunds_less_fees_and_shares_add_up_to_it(db, world):
    await _truncate(db)
    store = await make_store(db, return_window_days=1, fee_rate_bp=world["rate"])
    await set_settings(db, store, fee_wait_days=world["wait"])
    skus = [await make_sku(db, f"P{i}") for i in range(2)]
    for n, (sku, member, quantity) in enumerate(world["lots"]):
        await add_lot(db, skus[sku], member, quantity, f"lot-{n}")
    for n, spec in enumerate(world["orders"]):
        ext = f"O-{n}"
        delivered = T0 + timedelta(days=spec["delivered_day"])
        total = sum(t for _, _, t in spec["lines"])
        await deliver_order(db, store, ext, spec["lines"], delivered_at=delivered)
        for k, (status, percent) in enumerate(spec["refunds"]):
            await refund_order(db, store, ext, f"{ext}-R{k}", total * percent // 100, status=status,
                               at=delivered + timedelta(hours=k + 1), lines=[(0, 1, 0, "no_restock")])
        if spec["fee"] is not None and spec["fee_arrives"] == "before":
            await bill(db, store, settled_line(f"S-{n}", ext, fee=spec["fee"], subsidy=spec["subsidy"]))

    last = T0
    for run, day in enumerate(sorted(world["runs"])):
        last = T0 + timedelta(days=day)
        await settle(db, last)
        if run == 0:
            for n, spec in enumerate(world["orders"]):
                if spec["fee"] is not None and spec["fee_arrives"] == "after_first_run":
                    await bill(db, store, settled_line(f"S-{n}", f"O-{n}", fee=spec["fee"], subsidy=spec["subsidy"]))
                order = await order_row(db, f"O-{n}")
                if spec["late_refund"] is not None and order.settlement_id is not None:
                    await refund_order(db, store, f"O-{n}", f"O-{n}-LATE", spec["late_refund"],
                                       at=last + timedelta(minutes=1), lines=[(0, 1, spec["late_refund"], "no_restock")])
    await settle(db, last + timedelta(minutes=2))

    all_statements = await statements(db)
    for statement in all_statements:
        assert_consistent(statement)  # net = gross - refunds - fees; shares and lines add up to it
        body = statement.body
        assert body["platform_fees_actual_minor"] + body["platform_fees_estimated_minor"] == body["platform_fees_minor"]
    expected = 0
    async with db.read() as session:
        for order in (await session.execute(select(Order).order_by(Order.id))).scalars().all():
            if order.settlement_id is None:
                continue
            taken_off = sum((await session.execute(select(Refund.amount_minor).where(
                Refund.order_id == order.id, Refund.settlement_id.is_not(None)))).scalars())
            fee = order.platform_fee_minor if order.platform_fee_minor is not None else \
                fee_from_rate(order.total_minor, world["rate"] or 0)
            assert order.fee_settled_minor == fee and order.subsidy_settled_minor == order.subsidy_minor
            expected += order.total_minor + order.subsidy_minor - taken_off - fee
    # Every settled order's money, with its final fee and subsidy, is in the statements exactly once.
    assert sum(s.net_minor for s in all_statements) == expected
    assert sum(sum(shares_of(s).values()) for s in all_statements) == expected
