"""Settlement: settle what is due into one frozen statement per currency, with its lines, member shares
and the outbox job that delivers it, all in one transaction.

Lines of a statement: ``sale`` (an order: its total and the platform's subsidy, less refunds and the fee),
``refund`` (a refund that succeeded after its order was settled) and ``fee_adjustment`` (an actual fee or
subsidy that arrived after its order was settled on an estimate, or changed: the difference). Net = gross
- refunds - fees, and the member shares add up to it to the fen."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

import orjson
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.domain.allocation import largest_remainder
from app.domain.fees import FeeDecision, decide_fee, fee_from_rate, public_source  # noqa: F401 - fee_from_rate: kept importable here
from app.domain.windows import return_window_closes
from app.models import (
    LotConsumption,
    MemberShare,
    Order,
    OrderLine,
    Refund,
    RefundLine,
    Settlement,
    SettlementLine,
    StockMovement,
    Store,
    StoreSettings,
)
from app.models.base import utcnow

COOPERATIVE = "cooperative"  # the member id of stock that no member household supplied

_DELIVERED = "delivered"
_SHIPPED = "shipped"
_OPEN = "open"
_SUCCEEDED = "succeeded"
SALE, REFUND, FEE_ADJUSTMENT = "sale", "refund", "fee_adjustment"  # statement line kinds


IN_CHUNK = 1000  # ids per IN list: asyncpg takes at most 32767 bind parameters per statement


def _chunks(ids) -> list[list]:
    ordered = sorted(ids, key=lambda i: (i is None, i))
    return [ordered[i:i + IN_CHUNK] for i in range(0, len(ordered), IN_CHUNK)]


async def _scalars_in(session: AsyncSession, make, ids) -> list:
    """``make(chunk)`` run over ascending chunks of ``ids`` (ascending keeps lock order across chunks)."""
    out: list = []
    for chunk in _chunks(ids):
        out.extend((await session.execute(make(chunk))).scalars().all())
    return out


async def _rows_in(session: AsyncSession, make, ids) -> list:
    out: list = []
    for chunk in _chunks(ids):
        out.extend((await session.execute(make(chunk))).all())
    return out


async def _update_in(session: AsyncSession, make, ids) -> int:
    count = 0
    for chunk in _chunks(ids):
        count += (await session.execute(make(chunk).execution_options(synchronize_session=False))).rowcount
    return count


class SettlementConflict(Exception):
    """Another run settled some of the same orders or refunds first; nothing was written."""


def body_bytes(body: dict) -> bytes:
    """The one serialisation of a statement body: sorted keys, no spaces, so every retry sends the
    very same bytes and the signature is over exactly what goes on the wire."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _no_actual_fees(platform: str) -> bool:
    return False


def return_window(options: StoreSettings | None) -> timedelta:
    return timedelta(days=max(0, (options or StoreSettings()).return_window_days))


def window_closes(status: str, delivered_at: datetime | None, shipped_at: datetime | None,
                  options: StoreSettings | None) -> datetime | None:
    """When an order's money becomes due: its return window, run from its delivered signal, or from
    ``delivery_assumed_days`` after shipping for an order that never gets one; None: not yet delivered."""
    options = options or StoreSettings()
    return return_window_closes(status, delivered_at, shipped_at, window=return_window(options),
                                assumed_after=timedelta(days=options.delivery_assumed_days))


def split(amount: int, weights: dict) -> dict:
    """Largest-remainder split over positive weights; with none, the whole amount sits under ``None``
    (the caller gives it to the cooperative), so parts always add up to ``amount``."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive:
        return {None: amount}
    return largest_remainder(amount, positive)


def line_weights(lines: list[OrderLine]) -> dict[int, int]:
    """Order lines weighted by their total; by quantity when no line carries money. A replacement line
    (an exchange's or a reship's) is no sale: it weighs nothing."""
    lines = [l for l in lines if l.kind != "replacement"]
    by_total = {l.id: l.total_minor for l in lines if l.total_minor > 0}
    if by_total:
        return by_total
    return {l.id: l.quantity for l in lines if l.quantity > 0}


def refund_weights(refund_lines: list[RefundLine], lines: list[OrderLine]) -> dict[int, int]:
    """Where a refund's money came off: its lines' amounts, else their value at unit price, else the
    order's lines pro rata (a refund without line detail)."""
    known = {l.id: l for l in lines}
    amounts: dict[int, int] = defaultdict(int)
    for rl in refund_lines:
        if rl.order_line_id in known and rl.amount_minor > 0:
            amounts[rl.order_line_id] += rl.amount_minor
    if amounts:
        return dict(amounts)
    for rl in refund_lines:
        if rl.order_line_id in known and rl.quantity > 0:
            amounts[rl.order_line_id] += rl.quantity * max(0, known[rl.order_line_id].unit_price_minor)
    if sum(amounts.values()) > 0:
        return dict(amounts)
    return line_weights(lines)


def _lot_sort_key(key: tuple[int | None, str | None]):
    lot_id, member = key
    return (lot_id is None, lot_id or 0, member or "")


@dataclass
class _Line:
    kind: str
    order: Order
    gross: int  # what the buyer paid and the platform added (subsidy)
    refunds: int
    fees: int
    refund: Refund | None = None
    subsidy: int = 0  # part of gross
    fee_source: str | None = None  # platform, bill, estimate
    extra: dict = field(default_factory=dict)  # further keys of its body entry

    @property
    def net(self) -> int:
        return self.gross - self.refunds - self.fees


@dataclass
class _Draft:
    currency: str
    lines: list[_Line] = field(default_factory=list)
    shares: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refund_ids: list[int] = field(default_factory=list)  # succeeded refunds settled with their order


def _is_due(status: str, delivered_at: datetime | None, shipped_at: datetime | None,
            options: StoreSettings | None, now: datetime) -> bool:
    closes = window_closes(status, delivered_at, shipped_at, options)
    return closes is not None and closes <= now


def fee_decision(order, options: StoreSettings | None, expects_fees: Callable[[str], bool],
                 now: datetime) -> FeeDecision | None:
    """The fee an order would be settled with now; None while it is not due (its return window runs) or
    waits for its actual fee. ``order``: an Order, or a row with its columns."""
    closes = window_closes(order.status, order.delivered_at, order.shipped_at, options)
    if closes is None or closes > now:
        return None
    decision = decide_fee(order, options, expects_fees(order.platform), closes, now)
    return None if decision.wait else decision


def order_fee_view(order: Order, options: StoreSettings | None, expects_actual: bool,
                   now: datetime) -> tuple[int | None, str | None, bool, datetime | None]:
    """An order's fee as answers show it: (fee, source, awaiting its actual fee, when the estimate takes
    over). The actual fee; else what its statement counted (an estimate); else the estimate it would be
    settled with now, or None while it waits (``awaiting``: due, held only by the missing fee)."""
    if order.platform_fee_minor is not None:
        return order.platform_fee_minor, public_source(order.fee_source), False, None
    if order.settlement_id is not None and order.fee_settled_minor is not None:
        return order.fee_settled_minor, "estimate", False, None
    closes = window_closes(order.status, order.delivered_at, order.shipped_at, options)
    decision = decide_fee(order, options, expects_actual, closes, now)
    if decision.wait:
        return None, None, closes is not None and closes <= now, decision.estimate_from
    return decision.fee, decision.source, False, None


async def due_order_ids(session: AsyncSession, now: datetime,
                        expects_fees: Callable[[str], bool] = _no_actual_fees) -> list[int]:
    """Delivered (or shipped and assumed delivered) unsettled orders whose store's return window has
    passed, that have no open refund, and whose fee is known (or may be estimated by now)."""
    open_refund = exists().where(Refund.order_id == Order.id, Refund.status == _OPEN)
    rows = (await session.execute(
        select(Order.id, Order.platform, Order.status, Order.delivered_at, Order.shipped_at, Order.total_minor,
               Order.platform_fee_minor, Order.fee_source, Store.settings)
        .join(Store, Store.id == Order.store_id)
        .where(Order.status.in_((_DELIVERED, _SHIPPED)), Order.settlement_id.is_(None),
               or_(Order.delivered_at <= now, Order.shipped_at <= now), ~open_refund)
        .order_by(Order.id)
    )).all()
    return [row.id for row in rows
            if fee_decision(row, StoreSettings.of(row.settings), expects_fees, now) is not None]


async def adjustment_order_ids(session: AsyncSession) -> list[int]:
    """Settled orders whose actual fee or subsidy differs from what statements counted for them."""
    rows = (await session.execute(
        select(Order.id).where(
            Order.settlement_id.is_not(None), Order.fee_settled_minor.is_not(None),
            or_(and_(Order.platform_fee_minor.is_not(None), Order.platform_fee_minor != Order.fee_settled_minor),
                Order.subsidy_minor != func.coalesce(Order.subsidy_settled_minor, 0)))
        .order_by(Order.id)
    )).scalars().all()
    return list(rows)


def _deltas(order: Order) -> tuple[int, int]:
    """(fee, subsidy) the statements have not counted for a settled order yet."""
    fee = 0 if order.platform_fee_minor is None else order.platform_fee_minor - (order.fee_settled_minor or 0)
    return fee, order.subsidy_minor - (order.subsidy_settled_minor or 0)


async def late_refund_ids(session: AsyncSession) -> list[int]:
    """Succeeded refunds whose order was settled already and that no statement has taken off yet."""
    rows = (await session.execute(
        select(Refund.id).join(Order, Order.id == Refund.order_id)
        .where(Refund.status == _SUCCEEDED, Refund.settlement_id.is_(None), Order.settlement_id.is_not(None))
        .order_by(Refund.id)
    )).scalars().all()
    return list(rows)


async def _lock_due_orders(session: AsyncSession, ids: list[int], now: datetime,
                           expects_fees: Callable[[str], bool] = _no_actual_fees,
                           adjust_ids: list[int] = ()) -> tuple[list[Order], dict[int, FeeDecision], list[Order]]:
    """Lock the candidates (in id order, so two runs cannot deadlock) and keep those still due, with the
    fee each is settled with; and, locked in the same pass (one ascending order over all of them), the
    settled orders whose actual fee or subsidy still differs from what statements counted.

    On PostgreSQL a second run waits here for the first; once that one commits, the re-checked
    ``settlement_id IS NULL`` drops the orders it took. Reconcile locks an order row before it
    touches the order's refunds, so "no open refund", read after the lock, stays true until commit.
    """
    candidates = set(ids) | set(adjust_ids)
    if not candidates:
        return [], {}, []
    locked = await _scalars_in(session, lambda chunk: (
        select(Order).where(Order.id.in_(chunk)).order_by(Order.id)
        .with_for_update().execution_options(populate_existing=True)), candidates)
    unsettled = [o for o in locked if o.settlement_id is None and o.id in set(ids)]
    adjust = [o for o in locked if o.settlement_id is not None and o.fee_settled_minor is not None
              and _deltas(o) != (0, 0)]
    still_open = set(await _scalars_in(session, lambda chunk: select(Refund.order_id).where(
        Refund.order_id.in_(chunk), Refund.status == _OPEN), [o.id for o in unsettled]))
    stores = await _store_settings(session, {o.store_id for o in unsettled})
    due: list[Order] = []
    decisions: dict[int, FeeDecision] = {}
    for order in unsettled:
        if order.id in still_open:
            continue
        decision = fee_decision(order, stores.get(order.store_id), expects_fees, now)
        if decision is not None:
            due.append(order)
            decisions[order.id] = decision
    return due, decisions, adjust


async def _lock_late_refunds(session: AsyncSession, ids: list[int]) -> list[Refund]:
    if not ids:
        return []
    return await _scalars_in(session, lambda chunk: (
        select(Refund).where(Refund.id.in_(chunk), Refund.settlement_id.is_(None), Refund.status == _SUCCEEDED)
        .order_by(Refund.id).with_for_update().execution_options(populate_existing=True)), ids)


async def _store_settings(session: AsyncSession, store_ids) -> dict[int, StoreSettings]:
    return {s.id: s.options for s in await _scalars_in(session, lambda chunk: select(Store).where(
        Store.id.in_(chunk)), store_ids)}


async def _supplied_by_line(session: AsyncSession, line_ids: set[int]) -> dict[int, dict[tuple, int]]:
    """Units each lot still holds sold on each line: consumption less what came back (negative rows)."""
    result: dict[int, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
    if not line_ids:
        return result
    rows = await _rows_in(session, lambda chunk: (
        select(LotConsumption.order_line_id, LotConsumption.lot_id, LotConsumption.member_id, LotConsumption.quantity)
        .where(LotConsumption.order_line_id.in_(chunk))), line_ids)
    for line_id, lot_id, member, qty in rows:
        result[line_id][(lot_id, member if lot_id is not None else None)] += qty
    return result


async def _returned_by_refund(session: AsyncSession, refund_ids: list[int]) -> dict[int, dict[int, dict[tuple, int]]]:
    """refund id → line id → lot → units its restock gave back to that lot.

    Relies on the cause keys ``refund:<id>:line:<n>:restock`` (``…:restock:<total>`` for later units) of
    a refund's restock movements (domain/returns.py)."""
    result: dict[int, dict[int, dict[tuple, int]]] = {}
    for refund_id in refund_ids:
        rows = (await session.execute(
            select(LotConsumption.order_line_id, LotConsumption.lot_id, LotConsumption.member_id,
                   LotConsumption.quantity)
            .join(StockMovement, StockMovement.id == LotConsumption.movement_id)
            .where(or_(StockMovement.cause_key.like(f"refund:{refund_id}:line:%:restock"),
                       StockMovement.cause_key.like(f"refund:{refund_id}:line:%:restock:%")))
        )).all()
        per_line: dict[int, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        for line_id, lot_id, member, qty in rows:
            per_line[line_id][(lot_id, member if lot_id is not None else None)] += -qty
        result[refund_id] = per_line
    return result


def _add_shares(shares: dict[str, int], per_line: dict, supplied: dict[int, dict[tuple, int]]) -> None:
    for line_id, amount in per_line.items():
        lots = {k: v for k, v in supplied.get(line_id, {}).items() if v > 0} if line_id is not None else {}
        for member, part in member_split(amount, lots).items():
            shares[member] += part


def member_split(amount: int, lots: dict[tuple[int | None, str | None], int]) -> dict[str, int]:
    """A line's money over the lots that supplied it, pro rata by units, largest remainder, summed per
    member; the cooperative takes what no member lot supplied (or everything, with no lot at all)."""
    ordered = {k: lots[k] for k in sorted(lots, key=_lot_sort_key) if lots[k] > 0}
    result: dict[str, int] = defaultdict(int)
    for key, part in split(amount, ordered).items():
        member = COOPERATIVE if key is None or key[0] is None or not key[1] else key[1]
        result[member] += part
    return dict(result)


async def settle_due(session: AsyncSession, *, now: datetime | None = None, run_id: str | None = None,
                     expects_fees: Callable[[str], bool] = _no_actual_fees) -> list[Settlement]:
    """Settle everything due in the caller's transaction; returns the statements written (maybe none).
    Delivering them is the caller's (the settlement flow queues one delivery per statement).
    ``expects_fees(platform)``: whether actual fees come for that platform's orders, so that an order
    without one waits ``fee_wait_days`` for it before the estimate is used.

    Raises ``SettlementConflict`` (the caller's transaction must roll back) if a concurrent run got
    some of the same rows first despite the locks; a plain retry then settles the rest.
    """
    now = now or utcnow()
    run_id = run_id or str(uuid.uuid4())
    orders, decisions, adjust = await _lock_due_orders(
        session, await due_order_ids(session, now, expects_fees), now, expects_fees,
        adjust_ids=await adjustment_order_ids(session))
    late = await _lock_late_refunds(session, await late_refund_ids(session))
    if not orders and not late and not adjust:
        return []

    order_ids = {o.id for o in orders} | {r.order_id for r in late} | {o.id for o in adjust}
    all_orders = {o.id: o for o in [*orders, *adjust]}
    missing = order_ids - set(all_orders)
    if missing:
        for o in await _scalars_in(session, lambda chunk: select(Order).where(Order.id.in_(chunk)), missing):
            all_orders[o.id] = o
    lines_by_order: dict[int, list[OrderLine]] = defaultdict(list)
    for line in await _scalars_in(session, lambda chunk: select(OrderLine).where(OrderLine.order_id.in_(chunk))
                                  .order_by(OrderLine.order_id, OrderLine.line_no, OrderLine.id), order_ids):
        lines_by_order[line.order_id].append(line)
    succeeded: dict[int, list[Refund]] = defaultdict(list)
    for refund in await _scalars_in(session, lambda chunk: select(Refund).where(
            Refund.order_id.in_(chunk), Refund.status == _SUCCEEDED).order_by(Refund.id), [o.id for o in orders]):
        succeeded[refund.order_id].append(refund)
    refund_ids = [r.id for rs in succeeded.values() for r in rs] + [r.id for r in late]
    refund_lines: dict[int, list[RefundLine]] = defaultdict(list)
    for rl in await _scalars_in(session, lambda chunk: select(RefundLine).where(RefundLine.refund_id.in_(chunk))
                                .order_by(RefundLine.refund_id, RefundLine.line_no), refund_ids):
        refund_lines[rl.refund_id].append(rl)
    supplied = await _supplied_by_line(session, {l.id for ls in lines_by_order.values() for l in ls})
    for line in (l for ls in lines_by_order.values() for l in ls):
        # Units that shipped with no stock on the ledger (oversold) consumed no member lot: nobody's
        # household supplied them, so their part goes to the cooperative rather than to the lots.
        shortfall = (line.shipped_qty - line.restocked_qty) - sum(supplied.get(line.id, {}).values())
        if line.sku_id is not None and shortfall > 0:
            supplied[line.id][(None, None)] += shortfall
    for line in (l for ls in lines_by_order.values() for l in ls if l.replacement_of_line_id is not None):
        # What the buyer kept of an exchange came out of the lots that supplied its replacement: those
        # lots share the sale of the line it replaced (the replacement itself carries no money).
        for lot, units in supplied.pop(line.id, {}).items():
            supplied[line.replacement_of_line_id][lot] += units
    returned = await _returned_by_refund(session, [r.id for r in late])

    drafts: dict[str, _Draft] = {}
    for order in orders:
        draft = drafts.setdefault(order.currency, _Draft(order.currency))
        lines = lines_by_order[order.id]
        weights = line_weights(lines)
        decision = decisions[order.id]
        fees, subsidy = decision.fee or 0, order.subsidy_minor
        refunds = succeeded[order.id]
        line = _Line(SALE, order, gross=order.total_minor + subsidy, refunds=sum(r.amount_minor for r in refunds),
                     fees=fees, subsidy=subsidy, fee_source=decision.source)
        draft.lines.append(line)
        draft.refund_ids.extend(r.id for r in refunds)
        # Each order line's net: its part of the gross, the subsidy and the fees (pro rata by line total)
        # less the refunds that came off it. Summed over the lines this is the order's net, to the fen.
        per_line: dict[int | None, int] = defaultdict(int)
        for key, part in split(order.total_minor, weights).items():
            per_line[key] += part
        for key, part in split(subsidy, weights).items():
            per_line[key] += part
        for key, part in split(fees, weights).items():
            per_line[key] -= part
        for refund in refunds:
            for key, part in split(refund.amount_minor, refund_weights(refund_lines[refund.id], lines)).items():
                per_line[key] -= part
        _add_shares(draft.shares, per_line, supplied)

    for refund in late:
        order = all_orders[refund.order_id]
        draft = drafts.setdefault(order.currency, _Draft(order.currency))
        lines = lines_by_order[order.id]
        draft.lines.append(_Line(REFUND, order, gross=0, refunds=refund.amount_minor, fees=0, refund=refund))
        back = returned.get(refund.id, {})
        for key, part in split(-refund.amount_minor, refund_weights(refund_lines[refund.id], lines)).items():
            # Goods this refund brought back name the lots that bear it; a money-only refund is borne
            # by the lots that (still) supplied the line, like the sale it reverses.
            lots = back.get(key) if key is not None else None
            if not lots or sum(v for v in lots.values() if v > 0) <= 0:
                lots = supplied.get(key, {}) if key is not None else {}
            for member, share in member_split(part, lots).items():
                draft.shares[member] += share

    for order in adjust:
        # An actual fee (or subsidy) that arrived after the order was settled: the difference to what was
        # counted goes into this statement, borne like the sale's fee by the lots that supplied it. The
        # statement that settled the order is never edited.
        draft = drafts.setdefault(order.currency, _Draft(order.currency))
        fee_delta, subsidy_delta = _deltas(order)
        draft.lines.append(_Line(FEE_ADJUSTMENT, order, gross=subsidy_delta, refunds=0, fees=fee_delta,
                                 subsidy=subsidy_delta, fee_source=public_source(order.fee_source), extra={
                                     "fees_counted_before_minor": order.fee_settled_minor,
                                     "fee_actual_minor": order.platform_fee_minor,
                                     "subsidy_counted_before_minor": order.subsidy_settled_minor or 0,
                                     "subsidy_actual_minor": order.subsidy_minor}))
        weights = line_weights(lines_by_order[order.id])
        per_line = defaultdict(int)
        for key, part in split(subsidy_delta, weights).items():
            per_line[key] += part
        for key, part in split(fee_delta, weights).items():
            per_line[key] -= part
        _add_shares(draft.shares, per_line, supplied)

    created: list[Settlement] = []
    for currency in sorted(drafts):
        created.append(await _write(session, drafts[currency], run_id, now))
    return created


async def _write(session: AsyncSession, draft: _Draft, run_id: str, now: datetime) -> Settlement:
    settlement_id = str(uuid.uuid4())
    gross = sum(l.gross for l in draft.lines)
    refunds = sum(l.refunds for l in draft.lines)
    fees = sum(l.fees for l in draft.lines)
    estimated = sum(l.fees for l in draft.lines if l.fee_source == "estimate")
    subsidies = sum(l.subsidy for l in draft.lines)
    net = gross - refunds - fees
    shares = sorted((m, v) for m, v in draft.shares.items() if v != 0)
    if sum(v for _, v in shares) != net:  # an arithmetic bug must never reach a household
        raise AssertionError(f"member shares {sum(v for _, v in shares)} do not add up to net {net}")
    entries = []
    for l in draft.lines:
        entry = {"order_id": l.order.id, "store_id": l.order.store_id, "external_id": l.order.external_id,
                 "kind": l.kind, "gross_minor": l.gross, "refunds_minor": l.refunds, "platform_fees_minor": l.fees,
                 "net_minor": l.net, "subsidy_minor": l.subsidy}
        if l.fee_source is not None:
            entry["fee_source"] = l.fee_source
        if l.refund is not None:
            entry.update(refund_id=l.refund.id, refund_external_id=l.refund.external_id)
        entry.update(l.extra)
        entries.append(entry)
    # The frozen body: exactly the DESIGN settlement shape that is sent. ``delivery`` is deliberately
    # absent: it changes after sending (status, attempts), and a body that changed between retries
    # would break the receiver's dedupe by key and our "never changed after creation" promise. The
    # API adds it from the live columns.
    body = {"id": settlement_id, "currency": draft.currency, "gross_minor": gross, "refunds_minor": refunds,
            "platform_fees_minor": fees, "platform_fees_actual_minor": fees - estimated,
            "platform_fees_estimated_minor": estimated, "subsidies_minor": subsidies, "net_minor": net, "orders": entries,
            "member_shares": [{"member_id": m, "net_minor": v} for m, v in shares],
            "created_at": now.isoformat()}
    settlement = Settlement(id=settlement_id, run_id=run_id, currency=draft.currency, gross_minor=gross,
                            refunds_minor=refunds, platform_fees_minor=fees, net_minor=net, body=body,
                            platform_fees_actual_minor=fees - estimated, platform_fees_estimated_minor=estimated,
                            subsidies_minor=subsidies, created_at=now)
    session.add(settlement)
    await session.flush()  # the lines and the orders' settlement_id reference it
    for l in draft.lines:
        session.add(SettlementLine(settlement_id=settlement_id, kind=l.kind, order_id=l.order.id,
                                   refund_id=l.refund.id if l.refund else None, store_id=l.order.store_id,
                                   external_id=l.order.external_id, gross_minor=l.gross, refunds_minor=l.refunds,
                                   fees_minor=l.fees, net_minor=l.net, subsidy_minor=l.subsidy,
                                   fee_source=l.fee_source))
    for member, value in shares:
        session.add(MemberShare(settlement_id=settlement_id, member_id=member, net_minor=value))
    await session.flush()

    # Conditional claims: belt and braces over the row locks. If any row was taken meanwhile, the
    # whole run rolls back rather than put one order or refund into two statements.
    order_ids = [l.order.id for l in draft.lines if l.kind == SALE]
    refund_ids = draft.refund_ids + [l.refund.id for l in draft.lines if l.refund is not None]
    taken = await _update_in(session, lambda chunk: update(Order).where(
        Order.id.in_(chunk), Order.settlement_id.is_(None)).values(settlement_id=settlement_id), order_ids)
    if taken != len(order_ids):
        raise SettlementConflict("another settlement run took some of these orders first")
    counted: dict[tuple[int, int], list[int]] = defaultdict(list)  # (fee, subsidy) -> orders, one UPDATE each
    for l in (l for l in draft.lines if l.kind == SALE):
        counted[(l.fees, l.subsidy)].append(l.order.id)
    for (fee, subsidy), ids in sorted(counted.items()):
        await _update_in(session, lambda chunk, fee=fee, subsidy=subsidy: update(Order).where(
            Order.id.in_(chunk), Order.settlement_id == settlement_id).values(
            fee_settled_minor=fee, subsidy_settled_minor=subsidy), ids)
    # Refunds settled with their order are marked too, so they never come back as "late".
    taken = await _update_in(session, lambda chunk: update(Refund).where(
        Refund.id.in_(chunk), Refund.settlement_id.is_(None)).values(settlement_id=settlement_id), refund_ids)
    if taken != len(refund_ids):
        raise SettlementConflict("another settlement run took some of these refunds first")
    for l in (l for l in draft.lines if l.kind == FEE_ADJUSTMENT):
        # Claimed on what was counted before, so that two runs cannot both count the same difference.
        taken = (await session.execute(update(Order).where(
            Order.id == l.order.id, Order.fee_settled_minor == l.extra["fees_counted_before_minor"],
            func.coalesce(Order.subsidy_settled_minor, 0) == l.extra["subsidy_counted_before_minor"])
            .values(fee_settled_minor=l.order.fee_settled_minor + l.fees,
                    subsidy_settled_minor=l.extra["subsidy_counted_before_minor"] + l.subsidy)
            .execution_options(synchronize_session=False))).rowcount
        if taken != 1:
            raise SettlementConflict("another settlement run counted this fee adjustment first")
    # Keep the loaded objects truthful without a second (unconditional) UPDATE at flush.
    for l in draft.lines:
        if l.kind == SALE:
            set_committed_value(l.order, "settlement_id", settlement_id)
            # What this statement counted: a later actual fee is compared with it (fee_adjustment).
            set_committed_value(l.order, "fee_settled_minor", l.fees)
            set_committed_value(l.order, "subsidy_settled_minor", l.subsidy)
        elif l.kind == FEE_ADJUSTMENT:
            set_committed_value(l.order, "fee_settled_minor", l.order.fee_settled_minor + l.fees)
            set_committed_value(l.order, "subsidy_settled_minor", l.extra["subsidy_counted_before_minor"] + l.subsidy)
        if l.refund is not None:
            set_committed_value(l.refund, "settlement_id", settlement_id)
    return settlement
