"""After-sales on the ledger: exchanges and reships send a replacement out once, as a line of its own
that settlement counts as no sale; a return's goods come back on receipt or after inspection, and a
defective unit is written off without moving the sale's attribution to the member households.

The Pinduoduo, Taobao and Douyin after-sales are hand-made fixtures (tests/fixtures/*/SOURCES.md): no
published payload of an exchange or a reship exists for these platforms."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from adapters.base import OrderLineSnapshot, OrderSnapshot, OrderStatus, RefundLineSnapshot, RefundSnapshot
from adapters.base import RefundStatus
from adapters.douyin import mapping as douyin
from adapters.pinduoduo import mapping as pdd
from adapters.taobao import mapping as taobao
from app.domain import ledger
from app.domain.reconcile import apply_after_sale_detail, upsert_order, upsert_refund
from app.models import LotConsumption, MemberLot, Order, OrderLine, Refund, StockMovement, Store
from app.services.aftersales import InspectedLine, inspect_refund
from app.services.errors import Invalid
from app.workers import flows  # noqa: F401 - every flow follows the stock outbox, as in the service
from tests.conftest import FIXTURES
from tests.domain.test_settlement import T0, assert_consistent, make_sku, settle

LATER = datetime(2025, 1, 1, tzinfo=timezone.utc)  # past every return window of these orders


def load(path: str) -> dict:
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"))


async def make_store(db, platform: str, **settings) -> int:
    async with db.transaction() as session:
        store = Store(platform=platform, name=platform, credentials={}, settings={"return_window_days": 30, **settings})
        session.add(store)
        await session.flush()
        return store.id


async def take_in(db, store_id: int, *snaps) -> None:
    for snap in snaps:
        async with db.transaction() as session:
            store = await session.get(Store, store_id)
            if isinstance(snap, RefundSnapshot):
                await upsert_refund(session, store, snap, via="poll")
            else:
                await upsert_order(session, store, snap, via="poll")


async def stock(db, sku_id: int) -> tuple[int, int]:
    async with db.read() as session:
        held = await ledger.balance(session, sku_id)
    return held.on_hand, held.reserved


async def replacement_lines(db) -> list[OrderLine]:
    async with db.read() as session:
        return list((await session.execute(select(OrderLine).where(OrderLine.kind == "replacement"))).scalars())


async def ship_movements(db, line_id: int) -> list[int]:
    async with db.read() as session:
        return list((await session.execute(select(StockMovement.on_hand_delta).where(
            StockMovement.order_line_id == line_id, StockMovement.kind == "ship"))).scalars())


def _pdd_row(name: str, status: int, minutes: int = 0) -> RefundSnapshot:
    row = load(f"pinduoduo/{name}")
    row["after_sales_status"] = status
    row["updated_time"] = (pdd.pdd_time(row["updated_time"]) + timedelta(minutes=minutes) + timedelta(hours=8)
                           ).strftime("%Y-%m-%d %H:%M:%S")
    return pdd.map_refund(row)


def _taobao(name: str, status: str, minutes: int = 0) -> RefundSnapshot:
    row = load(f"taobao/{name}")
    row["status"] = status
    row["modified"] = (taobao.from_beijing(row["modified"]) + timedelta(minutes=minutes, hours=8)
                       ).strftime("%Y-%m-%d %H:%M:%S")
    return taobao.map_refund(row)


def _douyin(name: str, status: int, seconds: int = 0) -> RefundSnapshot:
    item = copy.deepcopy(load(f"douyin/{name}"))
    item["aftersale_info"]["aftersale_status"] = status
    item["aftersale_info"]["update_time"] += seconds
    return douyin.refund_from_douyin(item)


# platform → (order snapshot, its sku's merchant code, [(kind, fixture, statuses due / shipped / done)])
CASES = {
    "pinduoduo": (lambda: pdd.map_order(load("pinduoduo/order-240601-100000000000001.json")), "QB-MAOJIAN-250G",
                  {"exchange": ("refund-9100000003.json", "refund-information-9100000003.json", (14, 18, 16)),
                   "reship": ("refund-9100000004.json", "refund-information-9100000004.json", (32, 18, 16))}),
    "taobao": (lambda: taobao.map_trade(load("taobao/trade-3300000000000002.json")), "QB-FUNGUS-1KG",
               {"exchange": ("refund-150000000000003.json", None,
                             ("WAIT_SELLER_CONSIGN_GOODS", "WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS", "SUCCESS")),
                "reship": ("refund-150000000000004.json", None,
                           ("WAIT_SELLER_CONSIGN_GOODS", "WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS", "SUCCESS"))}),
    "douyin": (lambda: douyin.order_from_douyin(load("douyin/order-6920000000000000002.json")), "FUNGUS-100G",
               {"exchange": ("aftersale-7010000000000000003.json", None, (8, 13, 14)),
                "reship": ("aftersale-7010000000000000004.json", None, (8, 13, 14))}),
}
SNAPSHOT = {"pinduoduo": _pdd_row, "taobao": _taobao, "douyin": _douyin}


@pytest.mark.parametrize("kind", ["exchange", "reship"])
@pytest.mark.parametrize("platform", sorted(CASES))
async def test_the_replacement_leaves_stock_once_and_settlement_gross_is_unchanged(db, platform, kind):
    make_order, code, kinds = CASES[platform]
    fixture, detail_fixture, (due, shipped, done) = kinds[kind]
    snapshot = SNAPSHOT[platform]
    # These platforms report actual fees: with a rate set, settlement estimates once it waited for one.
    store_id = await make_store(db, platform, fee_rate_bp=0)
    sku_id = await make_sku(db, code, [("m-01", 10)])
    order = make_order()
    await take_in(db, store_id, order)
    sold = sum(line.quantity for line in order.lines)
    assert await stock(db, sku_id) == (10 - sold, 0)

    await take_in(db, store_id, snapshot(fixture, due))
    if detail_fixture is not None:
        # Pinduoduo: the list does not say what kind of after-sale this is; nothing moved yet.
        assert await replacement_lines(db) == []
        async with db.read() as session:
            refund = (await session.execute(select(Refund))).scalar_one()
        assert (refund.kind, refund.kind_pending) == (None, True)
        async with db.transaction() as session:
            await apply_after_sale_detail(session, refund.id, pdd.map_after_sale_detail(load(f"pinduoduo/{detail_fixture}")))
    [line] = await replacement_lines(db)
    assert (line.kind, line.quantity, line.total_minor, line.unit_price_minor) == ("replacement", 1, 0, 0)
    assert line.sku_id == sku_id and line.reserved_qty == 1
    assert (await stock(db, sku_id))[1] == 1  # reserved for the replacement

    # The platform says the replacement went out, then that the after-sale is done; each twice.
    for status, later in ((shipped, 10), (shipped, 10), (done, 20), (done, 20)):
        await take_in(db, store_id, snapshot(fixture, status, later))
    assert await ship_movements(db, line.id) == [-1]  # left stock once
    back = 1 if kind == "exchange" else 0  # the exchanged unit came back, on hand on receipt (on_receipt)
    assert await stock(db, sku_id) == (10 - sold + back - 1, 0)
    assert len(await replacement_lines(db)) == 1

    (statement,) = await settle(db, LATER)
    async with db.read() as session:
        held = (await session.execute(select(Order))).scalar_one()
    # The order's own revenue (a platform subsidy, where it has one, is revenue too): the replacement
    # adds no sale, and the exchange or reship took no money back.
    assert statement.gross_minor == held.total_minor + getattr(held, "subsidy_minor", 0) > 0
    assert statement.refunds_minor == 0
    assert len(statement.body["orders"]) == 1  # one line: the order's sale
    assert_consistent(statement)


def _order(quantity: int = 4) -> OrderSnapshot:
    return OrderSnapshot(
        platform="sandbox", external_id="R-1", status=OrderStatus.DELIVERED, currency="CNY",
        total_minor=3000 * quantity,
        lines=[OrderLineSnapshot(external_line_id="R-1-0", merchant_sku="TEA", quantity=quantity,
                                 unit_price_minor=3000, total_minor=3000 * quantity)],
        created_at=T0, paid_at=T0, shipped_at=T0, delivered_at=T0, updated_at=T0)


def _return(status: str = "succeeded", *, return_status=None, quantity: int = 4, minutes: int = 60) -> RefundSnapshot:
    return RefundSnapshot(
        platform="sandbox", external_id="RF-1", order_external_id="R-1", status=RefundStatus(status),
        currency="CNY", amount_minor=3000 * quantity, kind="return", return_status=return_status,
        lines=[RefundLineSnapshot(external_line_id="R-1-0", quantity=quantity, amount_minor=3000 * quantity,
                                  restock="return")],
        updated_at=T0 + timedelta(minutes=minutes))


async def _lots(db) -> dict[str, int]:
    async with db.read() as session:
        return {m: r for m, r in (await session.execute(select(MemberLot.member_id, MemberLot.remaining)))}


async def _sale_attribution(db) -> list[tuple]:
    """The sale's lot consumption: rows of the ship movements (what the sale took from whom)."""
    async with db.read() as session:
        return sorted((await session.execute(
            select(LotConsumption.lot_id, LotConsumption.member_id, LotConsumption.quantity)
            .join(StockMovement, StockMovement.id == LotConsumption.movement_id)
            .where(StockMovement.kind == "ship"))).all())


async def _net_by_member_for_line(db) -> dict[str | None, int]:
    async with db.read() as session:
        rows = (await session.execute(
            select(LotConsumption.member_id, func.sum(LotConsumption.quantity))
            .where(LotConsumption.order_line_id.is_not(None)).group_by(LotConsumption.member_id))).all()
    return {m: int(q) for m, q in rows if q}


async def _inspect(db, good: int, defective: int) -> None:
    async with db.transaction() as session:
        refund = (await session.execute(select(Refund))).scalar_one()
        line_id = (await session.execute(select(OrderLine.id).where(OrderLine.kind == "sale"))).scalar_one()
        await inspect_refund(session, refund.id, [InspectedLine(line_id=line_id, good=good, defective=defective)])


@pytest.mark.parametrize("mode", ["on_receipt", "after_inspection"])
async def test_a_return_inspected_3_good_1_defective_puts_3_on_hand_and_writes_1_off(db, mode):
    store_id = await make_store(db, "sandbox", restock_returns=mode)
    sku_id = await make_sku(db, "TEA", [("m-01", 4), ("m-02", 10)])
    await take_in(db, store_id, _order())
    assert await stock(db, sku_id) == (10, 0)
    sale = await _sale_attribution(db)
    assert [(member, qty) for _, member, qty in sale] == [("m-01", 4)]

    await take_in(db, store_id, _return())  # goods back: the refund succeeded
    assert (await stock(db, sku_id))[0] == (14 if mode == "on_receipt" else 10)  # held apart until inspected

    await _inspect(db, good=3, defective=1)
    assert await stock(db, sku_id) == (13, 0)  # on hand +3 either way
    async with db.read() as session:
        offs = (await session.execute(select(StockMovement.on_hand_delta, StockMovement.kind).where(
            StockMovement.kind == "write_off"))).all()
        refund = (await session.execute(select(Refund))).scalar_one()
    assert len(offs) == 1  # one write-off of the defective unit, never back on sale
    assert offs[0][0] == (-1 if mode == "on_receipt" else 0)
    assert refund.return_status == "inspected"
    # The sale's attribution is untouched; the defective unit stays the supplying household's sale
    # (m-01), and nobody else's lot pays for it.
    assert await _sale_attribution(db) == sale
    assert await _lots(db) == {"m-01": 3, "m-02": 10}
    assert await _net_by_member_for_line(db) == {"m-01": 1}


async def test_inspecting_more_than_came_back_is_refused_and_changes_nothing(db):
    store_id = await make_store(db, "sandbox")
    sku_id = await make_sku(db, "TEA", [("m-01", 10)])
    await take_in(db, store_id, _order(), _return())
    before = await stock(db, sku_id)
    with pytest.raises(Invalid):
        await _inspect(db, good=4, defective=1)
    await _inspect(db, good=2, defective=0)
    with pytest.raises(Invalid):
        await _inspect(db, good=2, defective=1)  # 2 inspected already: 3 more would make 5 of 4
    assert await stock(db, sku_id) == before


async def test_the_warehouse_inspection_is_a_receipt_the_platform_has_not_reported_yet(db):
    """Taobao says WAIT_SELLER_CONFIRM_GOODS until the seller confirms, which follows the warehouse's check."""
    store_id = await make_store(db, "sandbox", restock_returns="after_inspection")
    sku_id = await make_sku(db, "TEA", [("m-01", 10)])
    await take_in(db, store_id, _order(), _return("open", return_status="awaiting_goods"))
    assert await stock(db, sku_id) == (6, 0)
    await _inspect(db, good=2, defective=0)
    assert await stock(db, sku_id) == (8, 0)
    # The platform then reports the goods back and the refund done: the 2 more units wait for inspection.
    await take_in(db, store_id, _return(return_status="received", minutes=120))
    assert await stock(db, sku_id) == (8, 0)
    async with db.read() as session:
        refund = (await session.execute(select(Refund))).scalar_one()
    assert refund.return_status == "received"
    await _inspect(db, good=2, defective=0)
    assert await stock(db, sku_id) == (10, 0)


async def test_a_return_that_is_not_back_yet_restocks_nothing_even_when_paid_out(db):
    """A speed refund pays before the goods come back: the stock waits for the goods."""
    store_id = await make_store(db, "sandbox")
    sku_id = await make_sku(db, "TEA", [("m-01", 10)])
    await take_in(db, store_id, _order(), _return(return_status="awaiting_goods"))
    assert await stock(db, sku_id) == (6, 0)
    await take_in(db, store_id, _return(return_status="received", minutes=90))
    assert await stock(db, sku_id) == (10, 0)


async def test_a_refund_only_takes_nothing_to_inspect(db):
    store_id = await make_store(db, "sandbox")
    await make_sku(db, "TEA", [("m-01", 10)])
    only = RefundSnapshot(platform="sandbox", external_id="RF-1", order_external_id="R-1",
                          status=RefundStatus.SUCCEEDED, currency="CNY", amount_minor=500, kind="refund_only",
                          lines=[RefundLineSnapshot(external_line_id="R-1-0", quantity=1, amount_minor=500)],
                          updated_at=T0 + timedelta(hours=1))
    await take_in(db, store_id, _order(), only)
    with pytest.raises(Invalid):
        await _inspect(db, good=1, defective=0)
