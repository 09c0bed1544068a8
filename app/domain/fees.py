"""Fees and bills: an order's actual platform fee and subsidy (from its own payload or from bill lines),
the estimate settlement falls back on, and bill lines taken in once each and matched to their orders.

Where a fee comes from (``Order.fee_source``): ``order`` (the order's payload, e.g. Taobao's
commission_fee), ``settlement`` (settlement data an API returned: Douyin's settlement rows, Shopify
Payments balance transactions) or ``bill`` (a bill file). Lines that state a fee win over the payload.
Answers and statements name the first two ``platform``, as DESIGN does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import BillLine
from app.models import BillEntry, Order, Store, StoreSettings

LINE_SOURCES = frozenset({"settlement", "bill"})  # fee sources that bill lines set
IN_CHUNK = 1000  # keys per IN list (asyncpg takes at most 32767 bind parameters)


def public_source(source: str | None) -> str | None:
    """``order`` and ``settlement`` are both the platform's word: ``platform``."""
    return None if source is None else ("bill" if source == "bill" else "platform")


def fee_from_rate(total_minor: int, fee_rate_bp: int) -> int:
    """``total * rate / 10000`` rounded half up (away from zero on the magnitude), integers only."""
    magnitude = (abs(total_minor) * fee_rate_bp + 5000) // 10000
    return magnitude if total_minor >= 0 else -magnitude


def estimate(total_minor: int, options: StoreSettings | None, expects_actual: bool) -> int | None:
    """The store's estimate of an order's fee; None where the platform reports fees and no rate is set
    (households are never paid on a silent zero). A platform without fees estimates 0 unless told."""
    rate = (options or StoreSettings()).fee_rate_bp
    if rate is None:
        return None if expects_actual else 0
    return fee_from_rate(total_minor, rate)


@dataclass(frozen=True)
class FeeDecision:
    """What settlement may count for an order now: ``fee`` and where it comes from, or ``wait`` with when
    the estimate takes over (None: never, there is no estimate; the order waits for the actual fee)."""

    fee: int | None
    source: str | None  # platform, bill, estimate
    wait: bool = False
    estimate_from: datetime | None = None


def decide_fee(order: Order, options: StoreSettings | None, expects_actual: bool, due_at: datetime | None,
               now: datetime) -> FeeDecision:
    """The actual fee when there is one; else, where actual fees come, wait ``fee_wait_days`` past ``due_at``
    (the return window's end) and then the estimate; elsewhere the estimate at once."""
    if order.platform_fee_minor is not None:
        return FeeDecision(order.platform_fee_minor, public_source(order.fee_source))
    options = options or StoreSettings()
    guess = estimate(order.total_minor, options, expects_actual)
    if not expects_actual:
        return FeeDecision(guess or 0, "estimate")
    start = None if due_at is None else due_at + timedelta(days=options.fee_wait_days)
    if guess is None:
        return FeeDecision(None, None, wait=True)
    if start is None or now < start:
        return FeeDecision(None, None, wait=True, estimate_from=start)
    return FeeDecision(guess, "estimate", estimate_from=start)


def take_reported_fees(order: Order, fee: int | None, subsidy: int | None) -> None:
    """An order snapshot's own fee and subsidy. Bill lines that stated the fee win and are kept; a snapshot
    that does not report one (None) leaves what is there."""
    if order.fee_source in LINE_SOURCES:
        return
    if fee is not None:
        order.platform_fee_minor = fee
        order.fee_source = "order"
    if subsidy is not None:
        order.subsidy_minor = subsidy


@dataclass
class ImportResult:
    """What an import of bill lines did: lines new to us, lines held already, and the new lines that
    match no order (listed for an operator)."""

    lines: int = 0
    new: int = 0
    duplicates: int = 0
    matched: int = 0
    unmatched: list[BillEntry] = field(default_factory=list)
    orders: set[int] = field(default_factory=set)  # orders whose fees were refreshed


def _chunks(items: list) -> list[list]:
    return [items[i:i + IN_CHUNK] for i in range(0, len(items), IN_CHUNK)]


async def import_lines(session: AsyncSession, store: Store, lines: list[BillLine], *,
                       bill_import_id: int | None = None) -> ImportResult:
    """Take bill lines in, each once: a line whose ``line_id`` the store holds already changes nothing, so
    the same bill imported twice adds nothing. New lines are matched to their orders, whose fees and
    subsidies are then recomputed from all their lines. Runs in the caller's transaction.

    Imports of one store are serialised on its row (a concurrent import of the same lines would
    otherwise race to the unique key and fail a whole transaction)."""
    await session.execute(select(Store.id).where(Store.id == store.id).with_for_update())
    result = ImportResult(lines=len(lines))
    unique: dict[str, BillLine] = {}
    for line in lines:
        unique.setdefault(line.line_id[:255], line)
    result.duplicates = len(lines) - len(unique)
    held: set[str] = set()
    for chunk in _chunks(sorted(unique)):
        held.update((await session.execute(select(BillEntry.line_key).where(
            BillEntry.store_id == store.id, BillEntry.line_key.in_(chunk)))).scalars())
    fresh = [line for key, line in unique.items() if key not in held]
    result.duplicates += len(unique) - len(fresh)
    result.new = len(fresh)
    orders = await _order_ids(session, store.id, {l.order_external_id for l in fresh if l.order_external_id})
    entries = []
    for key, line in ((k, l) for k, l in unique.items() if k not in held):
        entry = BillEntry(store_id=store.id, bill_import_id=bill_import_id, line_key=key,
                          order_external_id=(line.order_external_id or None) and line.order_external_id[:128],
                          order_id=orders.get(line.order_external_id or ""), source=line.source, kind=line.kind,
                          currency=line.currency, amount_minor=line.amount_minor, gross_minor=line.gross_minor,
                          refund_minor=line.refund_minor, fee_minor=line.fee_minor, subsidy_minor=line.subsidy_minor,
                          fees=dict(line.fees), fee_known=line.fee_known, occurred_at=line.occurred_at,
                          raw=dict(line.raw) if line.raw is not None else None)
        entries.append(entry)
        if entry.order_id is None:
            result.unmatched.append(entry)
        else:
            result.matched += 1
            result.orders.add(entry.order_id)
    session.add_all(entries)
    await session.flush()
    await refresh_order_fees(session, sorted(result.orders))
    return result


async def _order_ids(session: AsyncSession, store_id: int, external_ids: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(external_ids)):
        rows = await session.execute(select(Order.external_id, Order.id).where(
            Order.store_id == store_id, Order.external_id.in_(chunk)))
        found.update({external_id: order_id for external_id, order_id in rows})
    return found


async def match_waiting_lines(session: AsyncSession, store_id: int | None = None) -> list[int]:
    """Lines that named an order we did not hold yet, matched now that it is here; their orders' fees
    are refreshed. Returns those orders."""
    stmt = (select(BillEntry, Order.id).join(Order, (Order.store_id == BillEntry.store_id)
                                             & (Order.external_id == BillEntry.order_external_id))
            .where(BillEntry.order_id.is_(None), BillEntry.order_external_id.is_not(None)))
    if store_id is not None:
        stmt = stmt.where(BillEntry.store_id == store_id)
    touched: set[int] = set()
    for entry, order_id in (await session.execute(stmt)).all():
        entry.order_id = order_id
        touched.add(order_id)
    if touched:
        await session.flush()
        await refresh_order_fees(session, sorted(touched))
    return sorted(touched)


async def refresh_order_fees(session: AsyncSession, order_ids: list[int]) -> None:
    """Each order's fee and subsidy from its lines: lines that state the fee decide it (their sum; source
    ``bill`` if any came from a bill file, else ``settlement``), and then its subsidy too; without such
    lines, subsidy lines alone decide the subsidy. Orders are locked in id order (the lock order of every
    flow that writes orders)."""
    if not order_ids:
        return
    orders: dict[int, Order] = {}
    for chunk in _chunks(sorted(order_ids)):
        for order in (await session.execute(select(Order).where(Order.id.in_(chunk)).order_by(Order.id)
                                            .with_for_update())).scalars():
            orders[order.id] = order
    lines: dict[int, list[BillEntry]] = defaultdict(list)
    for chunk in _chunks(sorted(orders)):
        for entry in (await session.execute(select(BillEntry).where(BillEntry.order_id.in_(chunk)))).scalars():
            lines[entry.order_id].append(entry)
    for order_id, order in orders.items():
        mine = lines.get(order_id, [])
        stating = [l for l in mine if l.fee_known]
        if stating:
            order.platform_fee_minor = sum(l.fee_minor for l in stating)
            order.fee_source = "bill" if any(l.source == "bill" for l in stating) else "settlement"
            order.subsidy_minor = sum(l.subsidy_minor for l in mine)
        elif any(l.kind == "subsidy" for l in mine):
            order.subsidy_minor = sum(l.subsidy_minor for l in mine)
