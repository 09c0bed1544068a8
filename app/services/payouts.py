"""Payout reconciliation: what the platform paid for each order (its settlement and bill lines) against
what the statements computed for it (its sale line, late refunds and fee adjustments), with each
difference named: ``gross``, ``fee``, ``refund``, ``subsidy``, ``other`` (what the platform's own
parts do not explain), ``not_settled`` (paid, but no statement has the order yet), ``missing_payout``
(settled, and the platform shows no payment) and ``missing_order`` (paid for an order we do not hold).

A period (``YYYY-MM``, in the platform's own time zone) chooses the orders: those with a bill line in
it and those a statement of the period settled. Each order is then compared whole (all its lines on
both sides), so an order whose payment and statement fall in different months still balances.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import BillEntry, Order, Settlement, SettlementLine, Store
from app.services.errors import Invalid, NotFound
from app.services.platforms import UnknownPlatform, adapter_class

PERIOD = re.compile(r"^([1-9]\d{3})-(0[1-9]|1[0-2])$")
SALE_KINDS = ("sale", "order")  # "order": statements written before migration 0011
MAX_ORDERS = 2000  # orders in one report; ``truncated`` says when there were more


@dataclass
class Difference:
    kind: str
    platform_minor: int | None
    statements_minor: int | None

    @property
    def difference_minor(self) -> int:
        return (self.platform_minor or 0) - (self.statements_minor or 0)


@dataclass
class OrderPayout:
    order_id: int
    external_id: str
    currency: str
    paid_minor: int
    computed_minor: int
    settlement_ids: list[str]
    differences: list[Difference] = field(default_factory=list)

    @property
    def difference_minor(self) -> int:
        return self.paid_minor - self.computed_minor


@dataclass
class PayoutReport:
    store_id: int
    period: str
    timezone: str
    orders: list[OrderPayout]
    unmatched: list[BillEntry]
    truncated: bool

    def totals(self) -> list[dict]:
        by_currency: dict[str, dict[str, int]] = defaultdict(lambda: {"paid_minor": 0, "computed_minor": 0})
        for order in self.orders:
            by_currency[order.currency]["paid_minor"] += order.paid_minor
            by_currency[order.currency]["computed_minor"] += order.computed_minor
        for line in self.unmatched:
            by_currency[line.currency]["paid_minor"] += line.amount_minor
        return [{"currency": c, **v, "difference_minor": v["paid_minor"] - v["computed_minor"]}
                for c, v in sorted(by_currency.items())]

    @property
    def in_balance(self) -> bool:
        return not self.unmatched and all(not o.differences for o in self.orders)


def period_bounds(period: str, zone: tzinfo) -> tuple[datetime, datetime]:
    match = PERIOD.match(period or "")
    if match is None:
        raise Invalid("period must be YYYY-MM")
    year, month = int(match.group(1)), int(match.group(2))
    if (year, month) >= (9999, 12):
        raise Invalid("period must lie before 9999-12")
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def _zone_of(platform: str) -> tzinfo:
    try:
        return adapter_class(platform).local_timezone
    except UnknownPlatform:
        return timezone.utc


def compare(lines: list[BillEntry], statement_lines: list[SettlementLine]) -> tuple[int, int, list[Difference]]:
    """(paid, computed, differences) of one order: its bill lines against its statement lines."""
    paid = sum(l.amount_minor for l in lines)
    computed = sum(l.net_minor for l in statement_lines)
    settled = any(l.kind in SALE_KINDS for l in statement_lines)
    if not lines:
        return paid, computed, [Difference("missing_payout", None, computed)]
    if not settled:
        return paid, computed, [Difference("not_settled", paid, None)]
    platform = {"gross": sum(l.gross_minor for l in lines), "refund": sum(l.refund_minor for l in lines),
                "fee": sum(l.fee_minor for l in lines), "subsidy": sum(l.subsidy_minor for l in lines)}
    statements = {"gross": sum(l.gross_minor - l.subsidy_minor for l in statement_lines),
                  "refund": sum(l.refunds_minor for l in statement_lines),
                  "fee": sum(l.fees_minor for l in statement_lines),
                  "subsidy": sum(l.subsidy_minor for l in statement_lines)}
    differences = [Difference(kind, platform[kind], statements[kind]) for kind in ("gross", "refund", "fee", "subsidy")
                   if platform[kind] != statements[kind]]
    unexplained = paid - (platform["gross"] - platform["refund"] - platform["fee"] + platform["subsidy"])
    if unexplained:
        differences.append(Difference("other", unexplained, 0))
    return paid, computed, differences


async def payout_report(session: AsyncSession, store_id: int, period: str, *, limit: int = MAX_ORDERS) -> PayoutReport:
    store = await session.get(Store, store_id)
    if store is None:
        raise NotFound(f"no store {store_id}")
    zone = _zone_of(store.platform)
    start, end = period_bounds(period, zone)
    when = func.coalesce(BillEntry.occurred_at, BillEntry.created_at)
    in_period = (await session.execute(select(BillEntry).where(
        BillEntry.store_id == store_id, when >= start, when < end).order_by(BillEntry.id))).scalars().all()
    unmatched = [l for l in in_period if l.order_id is None]
    order_ids = {l.order_id for l in in_period if l.order_id is not None}
    order_ids.update((await session.execute(
        select(SettlementLine.order_id).join(Settlement, Settlement.id == SettlementLine.settlement_id)
        .where(SettlementLine.store_id == store_id, SettlementLine.kind.in_(SALE_KINDS),
               Settlement.created_at >= start, Settlement.created_at < end))).scalars())
    order_ids.discard(None)
    chosen = sorted(order_ids)[:limit]
    orders = {o.id: o for o in (await session.execute(select(Order).where(Order.id.in_(chosen)))).scalars()} \
        if chosen else {}
    lines: dict[int, list[BillEntry]] = defaultdict(list)
    statement_lines: dict[int, list[SettlementLine]] = defaultdict(list)
    if chosen:
        for line in (await session.execute(select(BillEntry).where(BillEntry.order_id.in_(chosen)))).scalars():
            lines[line.order_id].append(line)
        for line in (await session.execute(select(SettlementLine).where(
                SettlementLine.order_id.in_(chosen)).order_by(SettlementLine.id))).scalars():
            statement_lines[line.order_id].append(line)
    result = []
    for order_id in chosen:
        order = orders[order_id]
        paid, computed, differences = compare(lines[order_id], statement_lines[order_id])
        result.append(OrderPayout(order_id=order_id, external_id=order.external_id, currency=order.currency,
                                  paid_minor=paid, computed_minor=computed, differences=differences,
                                  settlement_ids=sorted({l.settlement_id for l in statement_lines[order_id]})))
    return PayoutReport(store_id=store_id, period=period, timezone=str(zone), orders=result, unmatched=unmatched,
                        truncated=len(order_ids) > limit)
