"""The console's read queries: what each page lists, read through the same models as the API. No rule
lives here: figures the services compute (auth state) come from the services."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.console.web import BEIJING
from app.models import (InboxItem, Job, Listing, MemberShare, Order, OrderLine, Refund, Settlement, Shipment, Sku,
                        StockMovement, Store)
from app.models.base import utcnow
from app.services import connections

FAILED_SHIPMENT = ("failed", "dead")
AWAITING_INSPECTION = "received"  # goods back with us, not inspected yet
LIST_LIMIT = 200  # rows a list page shows (newest first); filters narrow it
SECRET_WORDS = ("sign", "hmac", "secret", "token", "authorization", "cookie", "password", "credential", "apikey")


@dataclass
class ShopRow:
    store: Store
    auth: connections.AuthState
    days_left: int | None
    backlog: int
    oldest_job: datetime | None
    unbound: int


async def count(session: AsyncSession, model, *where) -> int:
    return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def overview(session: AsyncSession) -> dict:
    now = utcnow()
    stores = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
    # Jobs name their store in the payload (JSON, read the same way on both engines): grouped here.
    backlog: dict[int | None, list[datetime]] = defaultdict(list)
    for payload, created in (await session.execute(select(Job.payload, Job.created_at).where(Job.status == "queued"))):
        store_id = payload.get("store_id") if isinstance(payload, dict) else None
        backlog[store_id if isinstance(store_id, int) else None].append(created)
    unbound = dict((await session.execute(select(Listing.store_id, func.count()).where(
        Listing.sku_id.is_(None)).group_by(Listing.store_id))).all())
    rows = []
    for store in stores:
        auth = connections.auth_state(store, now)
        days = None
        if auth.expires_at is not None:
            expires = auth.expires_at if auth.expires_at.tzinfo else auth.expires_at.replace(tzinfo=now.tzinfo)
            days = (expires - now).days
        jobs = backlog.get(store.id, [])
        rows.append(ShopRow(store, auth, days, len(jobs), min(jobs) if jobs else None, unbound.get(store.id, 0)))
    all_jobs = [t for times in backlog.values() for t in times]
    sold = dict((await session.execute(
        select(Order.store_id, func.coalesce(func.sum(OrderLine.quantity), 0))
        .join(OrderLine, OrderLine.order_id == Order.id).where(Order.status != "cancelled")
        .group_by(Order.store_id))).all())
    return {
        "shops": rows,
        "jobs_total": len(all_jobs), "oldest_job": min(all_jobs) if all_jobs else None,
        "counts": {
            "failed_inbox": await count(session, InboxItem, InboxItem.status == "failed"),
            "failed_shipments": await count(session, Shipment, Shipment.status.in_(FAILED_SHIPMENT)),
            "awaiting_inspection": await count(session, Refund, Refund.return_status == AWAITING_INSPECTION),
            "oversold_orders": await count(session, Order, Order.oversold.is_(True)),
            "dead_dividends": await count(session, Settlement, Settlement.delivery_status == "dead"),
            "unbound_listings": sum(unbound.values()),
        },
        "sold": [(store.name, int(sold.get(store.id, 0))) for store in stores],
    }


async def skus(session: AsyncSession) -> list[Sku]:
    return list((await session.execute(select(Sku).order_by(Sku.sku).limit(1000))).scalars())


async def listings_by_sku(session: AsyncSession, sku_ids: list[int]) -> dict[int, list[tuple[Listing, str]]]:
    found: dict[int, list[tuple[Listing, str]]] = defaultdict(list)
    if sku_ids:
        rows = await session.execute(select(Listing, Store.name).join(Store, Store.id == Listing.store_id)
                                     .where(Listing.sku_id.in_(sku_ids)).order_by(Listing.id))
        for listing, store_name in rows:
            found[listing.sku_id].append((listing, store_name))
    return found


def member_months(rows) -> tuple[list[str], list[tuple[str, dict[str, int]]], int]:
    """Member shares by household and month: (months, [(member, {month: net})], the largest cell)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    months = set()
    for member, created, net in rows:
        month = created.strftime("%Y-%m")
        months.add(month)
        table[member][month] += net
    peak = max((abs(v) for cells in table.values() for v in cells.values()), default=0)
    return sorted(months), sorted((m, dict(c)) for m, c in table.items()), peak


async def shares_by_month(session: AsyncSession) -> tuple[list[str], list[tuple[str, dict[str, int]]], int]:
    rows = (await session.execute(select(MemberShare.member_id, Settlement.created_at, MemberShare.net_minor)
                                  .join(Settlement, Settlement.id == MemberShare.settlement_id)
                                  .order_by(Settlement.created_at.desc()).limit(5000))).all()
    return member_months(rows)


def redact(value, key: str = ""):
    """A stored payload for display: values under a key that looks like a secret are masked."""
    if any(word in key.lower().replace("-", "").replace("_", "") for word in SECRET_WORDS):
        return "••••••"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    return value


def payload_text(body: bytes, limit: int = 20000) -> str:
    """The body of a delivery, JSON pretty-printed with secrets masked; other text masked whole if it
    mentions a secret-looking word, so nothing is shown that might be one."""
    text = body.decode("utf-8", errors="replace")
    try:
        return json.dumps(redact(json.loads(text)), ensure_ascii=False, indent=2)[:limit]
    except ValueError:
        lowered = text.lower()
        return "••••••" if any(word in lowered for word in SECRET_WORDS) else text[:limit]


@dataclass(frozen=True)
class SkuDay:
    day: str  # MM-DD, Beijing time
    on_hand: int  # at the end of the day
    sold: dict[str, int]  # shop name -> units ordered that day (cancelled orders left out)


async def sku_days(session: AsyncSession, sku_id: int, days: int = 14) -> list[SkuDay]:
    """The last ``days`` days of one sku, for the stock page's chart: on hand at each day's end (the
    ledger's last movement of the day, carried over quiet days) and units ordered per shop."""
    end = utcnow().astimezone(BEIJING).date()
    start = end - timedelta(days=days - 1)
    since = datetime(start.year, start.month, start.day, tzinfo=BEIJING)
    before = (await session.execute(select(StockMovement.on_hand_after).where(
        StockMovement.sku_id == sku_id, StockMovement.created_at < since)
        .order_by(StockMovement.id.desc()).limit(1))).scalar_one_or_none() or 0
    closing: dict = {}
    for on_hand, at in (await session.execute(select(StockMovement.on_hand_after, StockMovement.created_at).where(
            StockMovement.sku_id == sku_id, StockMovement.created_at >= since).order_by(StockMovement.id))).all():
        closing[at.astimezone(BEIJING).date()] = int(on_hand)
    sold: dict = defaultdict(lambda: defaultdict(int))
    when = func.coalesce(Order.placed_at, Order.paid_at, Order.created_at)
    for name, at, quantity in (await session.execute(
            select(Store.name, when, OrderLine.quantity).join(Order, Order.id == OrderLine.order_id)
            .join(Store, Store.id == Order.store_id)
            .where(OrderLine.sku_id == sku_id, Order.status != "cancelled", when >= since))).all():
        sold[at.astimezone(BEIJING).date() if at.tzinfo else at.replace(tzinfo=BEIJING).date()][name] += int(quantity)
    out, on_hand = [], int(before)
    for offset in range(days):
        day = start + timedelta(days=offset)
        on_hand = closing.get(day, on_hand)
        out.append(SkuDay(day.strftime("%m-%d"), on_hand, dict(sold.get(day, {}))))
    return out
