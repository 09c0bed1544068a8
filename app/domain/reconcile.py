"""Snapshot → state: upsert orders and refunds, and derive their stock effects from the difference.

Every effect is computed from a *target* (what the ledger should hold for a line given the order's
status and its refunds) minus what the line already holds, under a lock on the order row. So a
webhook, a poll and a resync converge on the same state in any order, any number of times; the
cause key of each movement is the backstop against a double application.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import case, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import REPLACEMENT_GOES_OUT, AfterSaleDetail, OrderLineSnapshot, OrderSnapshot, OrderStatus
from adapters.base import RefundSnapshot
from adapters.base import RefundStatus
from adapters.errors import DependencyNotReady
from app.db import before_commit, is_sqlite
from app.domain import ledger, returns
from app.domain.fees import take_reported_fees
from app.metrics import OVERSOLD_LINES
from app.models import Listing, Order, OrderLine, Refund, RefundLine, Sku, Store
from app.models.base import utcnow

log = logging.getLogger("coopsync.reconcile")

Change = Literal["created", "updated", "unchanged"]

_RANK = {OrderStatus.PENDING: 0, OrderStatus.PAID: 1, OrderStatus.SHIPPED: 2, OrderStatus.DELIVERED: 3,
         OrderStatus.CANCELLED: 4}


@dataclass
class Result:
    change: Change
    order_id: int | None = None
    refund_id: int | None = None


def listing_key(external_sku_key: str | None, merchant_sku: str | None) -> str | None:
    """The key a listing is stored under: the platform's id, else the merchant's code."""
    if external_sku_key:
        return external_sku_key
    if merchant_sku:
        return f"merchant:{merchant_sku}"
    return None


async def resolve_listing(session: AsyncSession, store_id: int, key: str | None, merchant_sku: str | None,
                          listing_ref: dict) -> Listing | None:
    """Find or create the listing of a line; a merchant code equal to a cooperative sku binds itself."""
    if key is None:
        return None
    listing = (await session.execute(
        select(Listing).where(Listing.store_id == store_id, Listing.external_sku_key == key)
    )).scalar_one_or_none()
    if listing is None:
        sku_id = None
        if merchant_sku:
            sku_id = (await session.execute(select(Sku.id).where(Sku.sku == merchant_sku))).scalar_one_or_none()
        listing = Listing(store_id=store_id, external_sku_key=key, merchant_sku=merchant_sku, sku_id=sku_id,
                          listing_ref=dict(listing_ref or {}), bound_by="auto" if sku_id else None)
        session.add(listing)
        await session.flush()
        return listing
    if listing.sku_id is None and merchant_sku:
        sku_id = (await session.execute(select(Sku.id).where(Sku.sku == merchant_sku))).scalar_one_or_none()
        if sku_id is not None:
            listing.sku_id, listing.bound_by = sku_id, "auto"
    # Later snapshots may carry ids the first one lacked (e.g. an inventory item id); keep operator edits.
    merged = {**(listing_ref or {}), **(listing.listing_ref or {})}
    if merged != listing.listing_ref:
        listing.listing_ref = merged
    if merchant_sku and listing.merchant_sku != merchant_sku:
        listing.merchant_sku = merchant_sku
    return listing


async def lock_for_snapshots(session: AsyncSession,
                             work: list[tuple[int, list[OrderSnapshot], list[RefundSnapshot]]]) -> None:
    """Before applying several snapshots in one transaction, take every row lock they will need:
    the orders, then the listings, then the skus, each table in id order.

    Applying them one by one takes the locks in the order the records and their lines come, so two
    transactions (two workers' batches, a batch and a poll) could each hold what the other waits
    for. ``work``: (store id, order snapshots, refund snapshots). For PostgreSQL; SQLite has one
    writer at a time."""
    order_keys: set[tuple[int, str]] = set()
    listing_keys: set[tuple[int, str]] = set()
    merchant_codes: set[str] = set()
    for store_id, orders, refunds in work:
        for order in orders:
            order_keys.add((store_id, order.external_id))
            order_keys.update((store_id, r.order_external_id) for r in order.refunds)
            for line in order.lines:
                key = listing_key(line.external_sku_key, line.merchant_sku)
                if key is not None:
                    listing_keys.add((store_id, key))
                if line.merchant_sku:
                    merchant_codes.add(line.merchant_sku)
        order_keys.update((store_id, r.order_external_id) for r in refunds)
        for refund in [*refunds, *(r for o in orders for r in o.refunds)]:
            for line in refund.lines:  # an exchange for another sku reserves that sku's stock
                key = listing_key(line.replacement_sku_key, line.replacement_merchant_sku)
                if key is not None:
                    listing_keys.add((store_id, key))
                if line.replacement_merchant_sku:
                    merchant_codes.add(line.replacement_merchant_sku)
    sku_ids: set[int] = set()
    if order_keys:
        order_ids = (await session.execute(
            select(Order.id).where(tuple_(Order.store_id, Order.external_id).in_(sorted(order_keys)))
            .order_by(Order.id).with_for_update())).scalars().all()
        if order_ids:
            # Lines held already move their own skus (a refund, a cancel, a line bound by hand).
            for store_id, key, sku_id in (await session.execute(
                    select(Order.store_id, OrderLine.external_sku_key, OrderLine.sku_id)
                    .join(Order, Order.id == OrderLine.order_id).where(OrderLine.order_id.in_(order_ids)))).all():
                if key is not None:
                    listing_keys.add((store_id, key))
                if sku_id is not None:
                    sku_ids.add(sku_id)
    if listing_keys:
        locked = await ledger.lock_listings(
            session, tuple_(Listing.store_id, Listing.external_sku_key).in_(sorted(listing_keys)))
        sku_ids.update(l.sku_id for l in locked if l.sku_id is not None)
    if merchant_codes:
        sku_ids.update((await session.execute(select(Sku.id).where(Sku.sku.in_(sorted(merchant_codes))))).scalars())
    await ledger.lock_skus(session, sku_ids)


async def lock_for_binding(session: AsyncSession, store_id: int, keys: list[str], sku_codes: list[str]) -> None:
    """Before binding listings by hand, in the same order as ``lock_for_snapshots``: the orders whose
    unbound lines the binding will apply, then the listings, then the skus, each in id order."""
    if is_sqlite(session) or not keys:
        return
    waiting = select(OrderLine.order_id).where(OrderLine.external_sku_key.in_(keys), OrderLine.sku_id.is_(None))
    await session.execute(select(Order.id).where(Order.store_id == store_id, Order.id.in_(waiting))
                          .order_by(Order.id).with_for_update())
    await ledger.lock_listings(session, Listing.store_id == store_id, Listing.external_sku_key.in_(keys))
    if sku_codes:
        sku_ids = (await session.execute(select(Sku.id).where(Sku.sku.in_(sku_codes)))).scalars().all()
        await ledger.lock_skus(session, sku_ids)


def new_order(store: Store, snap: OrderSnapshot, via: str, make=Order) -> Order:
    """A new order row for ``snap``; ``make`` builds it (the set-based apply passes a plain record)."""
    return make(store_id=store.id, platform=store.platform, external_id=snap.external_id, status=snap.status,
                currency=snap.currency, total_minor=snap.total_minor, platform_updated_at=snap.updated_at,
                seen_via=via)


def fill_order(order: Order, snap: OrderSnapshot) -> None:
    """Take a newer snapshot's fields (the set-based apply fills new orders with this too)."""
    order.status = str(snap.status)
    order.currency = snap.currency
    order.total_minor = snap.total_minor
    take_reported_fees(order, snap.platform_fee_minor, snap.subsidy_minor)  # bill lines, once in, win
    order.placed_at = snap.created_at
    order.paid_at = snap.paid_at or order.paid_at
    order.shipped_at = snap.shipped_at or order.shipped_at
    order.delivered_at = snap.delivered_at or order.delivered_at
    order.cancelled_at = snap.cancelled_at or order.cancelled_at
    order.ship_by = snap.ship_by or order.ship_by
    if snap.status == OrderStatus.DELIVERED and order.delivered_at is None:
        order.delivered_at = snap.updated_at  # the platform's completion time is the best we know
    if snap.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED) and order.shipped_at is None:
        order.shipped_at = snap.updated_at
    order.platform_updated_at = snap.updated_at
    order.raw = snap.raw
    order.updated_at = utcnow()


def new_line(order_id: int | None, index: int, line_snap: OrderLineSnapshot, make=OrderLine) -> OrderLine:
    return make(order_id=order_id, line_no=index + 1, external_line_id=line_snap.external_line_id,
                quantity=line_snap.quantity, unit_price_minor=line_snap.unit_price_minor,
                total_minor=line_snap.total_minor)


def fill_line(line: OrderLine, line_snap: OrderLineSnapshot, key: str | None, listing: Listing | None) -> None:
    line.external_sku_key = key
    line.merchant_sku = line_snap.merchant_sku
    line.title = (line_snap.title or "")[:500] or None
    line.quantity = line_snap.quantity
    line.unit_price_minor = line_snap.unit_price_minor
    line.discount_minor = line_snap.discount_minor
    line.total_minor = line_snap.total_minor
    line.shipped_quantity = line_snap.shipped_quantity
    line.listing_ref = dict(line_snap.listing_ref or {})
    if line.sku_id is None and listing is not None and listing.sku_id is not None:
        line.sku_id = listing.sku_id


async def upsert_order(session: AsyncSession, store: Store, snap: OrderSnapshot, *, via: str = "webhook") -> Result:
    order = (await session.execute(
        select(Order).where(Order.store_id == store.id, Order.external_id == snap.external_id).with_for_update()
    )).scalar_one_or_none()
    created = order is None
    if order is not None:
        newer = snap.updated_at > order.platform_updated_at
        same_time_moves_on = (snap.updated_at == order.platform_updated_at
                              and _RANK[OrderStatus(snap.status)] > _RANK[OrderStatus(order.status)])
        if not newer and not same_time_moves_on:
            # Stale or repeated snapshot: nothing changes (out-of-order delivery, duplicate, resync).
            refunds_changed = await _apply_embedded_refunds(session, store, order, snap, via)
            return Result("updated" if refunds_changed else "unchanged", order_id=order.id)
    if order is None:
        order = new_order(store, snap, via)
        session.add(order)
    fill_order(order, snap)

    if created:
        await session.flush()  # one INSERT with every field set; the lines need its id
        existing: dict = {}
    else:
        existing = {l.external_line_id: l for l in (await session.execute(
            select(OrderLine).where(OrderLine.order_id == order.id))).scalars().all()}
    for index, line_snap in enumerate(snap.lines):
        key = listing_key(line_snap.external_sku_key, line_snap.merchant_sku)
        listing = await resolve_listing(session, store.id, key, line_snap.merchant_sku, line_snap.listing_ref)
        line = existing.get(line_snap.external_line_id)
        if line is None:
            line = new_line(order.id, index, line_snap)
            session.add(line)
            existing[line.external_line_id] = line
            if snap.status != OrderStatus.CANCELLED and key is not None:
                # The shop took these units off its own count when it sold them.
                line.platform_held = line_snap.quantity
                await platform_count_changed(session, store.id, key, line_snap.quantity)
        fill_line(line, line_snap, key, listing)
    if snap.status == OrderStatus.CANCELLED:
        for line in existing.values():
            if line.platform_held and line.shipped_qty == 0 and line.external_sku_key:
                # Cancelled before shipping: the shop puts the units back on its own count.
                await platform_count_changed(session, store.id, line.external_sku_key, -line.platform_held)
                line.platform_held = 0
    await session.flush()
    # ``existing`` holds every line of the order now (those loaded and those just added).
    await apply_stock_effects(session, order, sorted(existing.values(), key=lambda l: l.line_no))
    await _apply_embedded_refunds(session, store, order, snap, via)
    if created:
        await link_waiting_refunds(session, store, order)  # a refund can only wait for an order we lacked
    return Result("created" if created else "updated", order_id=order.id)


async def _apply_embedded_refunds(session: AsyncSession, store: Store, order: Order, snap: OrderSnapshot,
                                  via: str) -> bool:
    changed = False
    for refund_snap in snap.refunds:
        result = await upsert_refund(session, store, refund_snap, via=via, order=order)
        changed = changed or result.change != "unchanged"
    return changed


async def link_waiting_refunds(session: AsyncSession, store: Store, order: Order) -> None:
    """Refunds stored before their order arrived (a poll keeps them): link them to it and apply them."""
    waiting = (await session.execute(select(Refund).where(
        Refund.store_id == store.id, Refund.order_external_id == order.external_id, Refund.order_id.is_(None)
    ))).scalars().all()
    if not waiting:
        return
    by_ext = {l.external_line_id: l.id for l in (await session.execute(
        select(OrderLine).where(OrderLine.order_id == order.id))).scalars()}
    for refund in waiting:
        refund.order_id = order.id
        # Its lines could not be matched while the order was missing: match them now by the order
        # line they name, or their stock effects would never apply.
        for rline in (await session.execute(select(RefundLine).where(
                RefundLine.refund_id == refund.id, RefundLine.order_line_id.is_(None)))).scalars():
            rline.order_line_id = by_ext.get(rline.external_line_id or "")
        await _apply_refund_effects(session, order, refund)


def _target(order: Order, line: OrderLine, ours: bool = False) -> tuple[int, int]:
    """(units that should have left on-hand, units that should be reserved) for this line now.

    ``ours``: the order has a shipment of ours. Then what our shipments cover is what shipped, and the
    platform's status moves nothing (it may mark the whole order shipped after the first parcel); without
    one, the platform's status decides. Both reach the same cause keys, so whichever comes first takes
    the goods from on-hand and the other finds them gone."""
    effective = max(0, line.quantity - line.released_qty)  # refunded before shipping: never reserved again
    status = OrderStatus(order.status)
    if status == OrderStatus.PENDING:
        return line.shipped_qty, 0
    if ours and status != OrderStatus.CANCELLED:
        shipped = max(line.shipped_qty, min(effective, line.shipment_qty))
        return shipped, max(0, effective - shipped)
    if status == OrderStatus.PAID:
        shipped = max(line.shipped_qty, min(effective, line.shipped_quantity or 0))
        return shipped, max(0, effective - shipped)
    if status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        return max(line.shipped_qty, effective), 0
    return line.shipped_qty, 0  # cancelled: release, keep what already left


async def apply_stock_effects(session: AsyncSession, order: Order, lines: list[OrderLine] | None = None) -> None:
    """Move each line's stock to its target; ``lines``: all the order's lines in line order, when the
    caller holds them already."""
    if lines is None:
        lines = (await session.execute(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.line_no)
        )).scalars().all()
    oversold = False
    # Our shipments decide a sale line once the order has one; a replacement line once it has its own.
    ours = any(line.shipment_qty for line in lines if line.kind != "replacement")
    for line in lines:
        if line.sku_id is None:
            continue
        if line.kind == "replacement":
            want_shipped, want_reserved = _target(_ReplacementOrder(order), line, line.shipment_qty > 0)
        else:
            want_shipped, want_reserved = _target(order, line, ours)
        if want_shipped > line.shipped_qty:
            await _ship(session, order, line, want_shipped - line.shipped_qty)
        if want_reserved < line.reserved_qty:
            await _release(session, order, line, line.reserved_qty - want_reserved, reason="order")
        elif want_reserved > line.reserved_qty:
            await _reserve(session, order, line, want_reserved - line.reserved_qty)
        line.oversold_qty = max(0, want_reserved - line.reserved_qty)
        oversold = oversold or line.oversold_qty > 0
    order.oversold = oversold
    order.has_unbound = any(l.sku_id is None for l in lines)


async def _reserve(session: AsyncSession, order: Order, line: OrderLine, quantity: int) -> None:
    sku = await ledger.lock_sku(session, line.sku_id)
    available = sku.on_hand - sku.reserved
    take = max(0, min(quantity, available))
    if take < quantity:
        # Paid beyond stock: reserve what exists, flag the rest; never let stock go negative.
        OVERSOLD_LINES.inc()
        log.error("oversold", extra={"order_id": order.id, "line_id": line.id, "sku": sku.sku,
                                     "wanted": quantity, "available": available})
        ledger.note_stock_changed(session, sku.id)  # every shop of the sku is told 0 with this commit
    if take == 0:
        return
    total = line.reserved_qty + take
    first = line.reserved_qty == 0 and line.shipped_qty == 0 and line.released_qty == 0
    # Later reservations (stock arrived for an oversold line) are keyed by the state they lead to.
    cause = f"order:{order.id}:line:{line.id}:reserve" + ("" if first else f":{total}:{line.shipped_qty}:{line.released_qty}")
    moved = await ledger.apply_movement(session, sku_id=line.sku_id, kind="reserve", cause_key=cause,
                                        reserved_delta=take, order_line_id=line.id)
    if moved is not None:
        line.reserved_qty = total


async def _release(session: AsyncSession, order: Order, line: OrderLine, quantity: int, *, reason: str,
                   cause: str | None = None) -> int:
    quantity = min(quantity, line.reserved_qty)
    if quantity <= 0:
        return 0
    cause = cause or f"order:{order.id}:line:{line.id}:release:{line.reserved_qty - quantity}:{line.shipped_qty}"
    moved = await ledger.apply_movement(session, sku_id=line.sku_id, kind="release", cause_key=cause,
                                        reserved_delta=-quantity, order_line_id=line.id, reason=reason)
    if moved is None:
        return 0
    line.reserved_qty -= quantity
    return quantity


async def _ship(session: AsyncSession, order: Order, line: OrderLine, quantity: int) -> None:
    sku = await ledger.lock_sku(session, line.sku_id)
    from_reserved = min(quantity, line.reserved_qty)
    # Goods that physically left cannot exceed what the ledger holds; take what is there and flag it.
    from_hand = min(quantity, sku.on_hand)
    if from_hand < quantity:
        log.error("shipped more than on hand", extra={"order_id": order.id, "line_id": line.id, "sku": sku.sku,
                                                      "shipped": quantity, "on_hand": sku.on_hand})
    total = line.shipped_qty + quantity
    moved = await ledger.apply_movement(
        session, sku_id=line.sku_id, kind="ship", cause_key=f"order:{order.id}:line:{line.id}:ship:{total}",
        on_hand_delta=-from_hand, reserved_delta=-from_reserved, order_line_id=line.id,
    )
    if moved is None:
        return
    line.shipped_qty = total
    line.reserved_qty -= from_reserved
    if from_hand:
        await ledger.consume_lots(session, sku_id=line.sku_id, quantity=from_hand, movement_id=moved.id,
                                  order_line_id=line.id)


async def upsert_refund(session: AsyncSession, store: Store, snap: RefundSnapshot, *, via: str = "webhook",
                        order: Order | None = None, wait_for_order: bool = True) -> Result:
    """Store a refund and apply its effects. A refund whose order is not here yet raises
    ``DependencyNotReady`` (``wait_for_order``) so that its delivery is retried later."""
    if order is None:
        order = (await session.execute(
            select(Order).where(Order.store_id == store.id, Order.external_id == snap.order_external_id)
            .with_for_update()
        )).scalar_one_or_none()
        if order is None and wait_for_order:
            raise DependencyNotReady(f"refund {snap.external_id} names order {snap.order_external_id}, "
                                     "which has not arrived yet", retry_after_s=2.0)
    refund = (await session.execute(
        select(Refund).where(Refund.store_id == store.id, Refund.external_id == snap.external_id).with_for_update()
    )).scalar_one_or_none()
    created = refund is None
    if refund is not None and snap.updated_at <= refund.platform_updated_at and refund.status == snap.status:
        return Result("unchanged", order_id=refund.order_id, refund_id=refund.id)
    if refund is not None and snap.updated_at < refund.platform_updated_at:
        return Result("unchanged", order_id=refund.order_id, refund_id=refund.id)
    if refund is None:
        refund = Refund(store_id=store.id, external_id=snap.external_id, order_external_id=snap.order_external_id,
                        status=snap.status, currency=snap.currency, amount_minor=snap.amount_minor,
                        platform_updated_at=snap.updated_at)
        session.add(refund)
        await session.flush()
        for index, line_snap in enumerate(snap.lines):
            session.add(RefundLine(refund_id=refund.id, line_no=index + 1, external_line_id=line_snap.external_line_id,
                                   quantity=line_snap.quantity, amount_minor=line_snap.amount_minor,
                                   restock=line_snap.restock, replacement_sku_key=line_snap.replacement_sku_key,
                                   replacement_merchant_sku=line_snap.replacement_merchant_sku))
    refund.order_id = order.id if order is not None else None
    refund.status = str(snap.status)
    refund.currency = snap.currency
    refund.amount_minor = snap.amount_minor
    refund.placed_at = snap.created_at
    refund.platform_updated_at = snap.updated_at
    refund.raw = snap.raw
    refund.updated_at = utcnow()
    if snap.status == RefundStatus.SUCCEEDED and refund.succeeded_at is None:
        refund.succeeded_at = snap.updated_at
    _take_after_sale_state(session, refund, snap)
    await session.flush()
    if order is not None:
        await _resolve_refund_lines(session, order, refund, snap)
        await _apply_refund_effects(session, order, refund)
    return Result("created" if created else "updated", order_id=refund.order_id, refund_id=refund.id)


_REPLACEMENT_RANK = {None: 0, "due": 1, "shipped": 2}


def _take_after_sale_state(session: AsyncSession, refund: Refund, snap: RefundSnapshot) -> None:
    """The snapshot's kind, where the goods are and where the replacement is, merged into the row."""
    if snap.kind is not None:
        refund.kind, refund.kind_pending = snap.kind, False
    elif snap.kind_pending:
        if refund.kind is None:
            # Money and lines apply now; the kind (and the stock effects that depend on it) waits for
            # the platform's detail call, which a job makes (queued once this transaction commits).
            refund.kind_pending = True
            note_detail_wanted(session, refund.id)
    elif refund.kind is None:
        # An adapter that says nothing: a line that takes goods back makes a return.
        refund.kind = "return" if any(l.restock == "return" for l in snap.lines) else "refund_only"
    back = snap.return_status in ("received", "inspected") or (
        snap.return_status is None and snap.status == RefundStatus.SUCCEEDED
        and any(l.restock == "return" for l in snap.lines))
    if back and refund.returned_at is None:
        refund.returned_at = snap.updated_at
    refund.replacement_status = _merge_replacement(refund.replacement_status, snap.replacement_status)


def _merge_replacement(held: str | None, told: str | None) -> str | None:
    """A replacement moves forward only (due, then shipped); a cancellation ends one not yet shipped."""
    if told is None or held == "shipped":
        return held
    if told == "cancelled" or held == "cancelled":
        return "cancelled"
    return told if _REPLACEMENT_RANK[told] > _REPLACEMENT_RANK[held] else held


async def _resolve_refund_lines(session: AsyncSession, order: Order, refund: Refund, snap: RefundSnapshot) -> None:
    lines = (await session.execute(select(RefundLine).where(RefundLine.refund_id == refund.id)
                                   .order_by(RefundLine.line_no))).scalars().all()
    order_lines = (await session.execute(select(OrderLine).where(OrderLine.order_id == order.id,
                                                                 OrderLine.kind == "sale"))).scalars().all()
    by_ext = {l.external_line_id: l for l in order_lines}
    by_key = {l.external_sku_key: l for l in order_lines if l.external_sku_key}
    by_merchant = {l.merchant_sku: l for l in order_lines if l.merchant_sku}
    for line, line_snap in zip(lines, snap.lines):
        if line.order_line_id is not None:
            continue
        match = (by_ext.get(line_snap.external_line_id or "")
                 or by_key.get(listing_key(line_snap.external_sku_key, line_snap.merchant_sku) or "")
                 or by_merchant.get(line_snap.merchant_sku or ""))
        if match is not None:
            line.order_line_id = match.id


async def _apply_refund_effects(session: AsyncSession, order: Order, refund: Refund) -> None:
    """Money: the order's refunded total, at once. Stock, once the kind is known: a succeeded refund
    releases what never shipped (once per line); returned goods come back (returns.py) once the
    platform says they are back; an exchange's or a reship's replacement is a line of its own."""
    await session.flush()  # the session does not autoflush: the sum below must see this refund
    succeeded = (await session.execute(select(Refund.amount_minor).where(
        Refund.order_id == order.id, Refund.status == RefundStatus.SUCCEEDED.value))).scalars().all()
    order.refunded_minor = sum(succeeded)
    if refund.kind_pending:
        return  # restock and replacement depend on the kind, which its detail call will tell
    lines = (await session.execute(select(RefundLine).where(RefundLine.refund_id == refund.id)
                                   .order_by(RefundLine.line_no))).scalars().all()
    if refund.kind is None:  # a row written without one: read it as upsert_refund reads such a snapshot
        refund.kind = "return" if any(l.restock == "return" for l in lines) else "refund_only"
    hold = (await session.get(Store, order.store_id)).options.restock_returns == "after_inspection"
    held_lines: list[tuple[RefundLine, OrderLine | None]] = []
    for rline in lines:
        oline = None if rline.order_line_id is None else await session.get(OrderLine, rline.order_line_id,
                                                                            with_for_update=True)
        held_lines.append((rline, oline))
        if oline is None or rline.restock == "no_restock" or oline.sku_id is None:
            continue  # a line bound later is applied then (rebind_lines), with everything below
        if refund.status == RefundStatus.SUCCEEDED.value and rline.applied_qty < rline.quantity:
            back_on_platform = min(rline.quantity - rline.applied_qty, oline.platform_held)
            if back_on_platform and oline.external_sku_key:
                # A refund that restocks puts the units back on the shop's own count too.
                await platform_count_changed(session, order.store_id, oline.external_sku_key, -back_on_platform)
                oline.platform_held -= back_on_platform
            # Goods not shipped yet: give back the reservation, and never reserve them again.
            todo = rline.quantity - rline.applied_qty - rline.returned_qty
            unshipped = max(0, oline.quantity - oline.released_qty - oline.shipped_qty)
            cancel_qty = min(max(0, todo), unshipped)
            if cancel_qty:
                await _release(session, order, oline, cancel_qty, reason=f"refund {refund.external_id}",
                               cause=f"refund:{refund.id}:line:{rline.id}:release")
                # Even with nothing reserved (oversold or unpaid) the units leave the line's demand.
                oline.released_qty += cancel_qty
            # The release decision of a refund line is made once; what stock could not take back stays out.
            rline.applied_qty = rline.quantity
        if rline.restock == "return" and refund.returned_at is not None and returns.brings_goods_back(refund):
            # A refund never restocks more than its line shipped (less what came back already).
            await returns.receive(session, refund=refund, rline=rline, oline=oline,
                                  quantity=returns.returnable(rline, oline) - rline.returned_qty, hold=hold)
    refund.return_status = returns.return_status(refund, held_lines)
    await _apply_replacements(session, order, refund, held_lines)
    await apply_stock_effects(session, order)


class _ReplacementOrder:
    """The order as a replacement line sees it: a replacement reserves and ships like a line of a paid
    order of its own (our shipment or the platform's word on it ships it), whatever its order's status."""

    status = OrderStatus.PAID.value

    def __init__(self, order: Order) -> None:
        self._order = order

    def __getattr__(self, name: str):
        return getattr(self._order, name)


async def _apply_replacements(session: AsyncSession, order: Order, refund: Refund,
                              lines: list[tuple[RefundLine, OrderLine | None]]) -> None:
    """An exchange or a reship sends goods out again: one replacement line per refunded line, created
    once the replacement is due, with no money (settlement counts it as no sale)."""
    if refund.kind_pending or refund.kind not in REPLACEMENT_GOES_OUT:
        return
    status = refund.replacement_status
    existing = {l.replacement_of_line_id: l for l in (await session.execute(
        select(OrderLine).where(OrderLine.replacement_of_refund_id == refund.id))).scalars()}
    next_no = None
    for rline, oline in lines:
        if oline is None or rline.quantity <= 0:
            continue
        line = existing.get(oline.id)
        if line is None:
            if status not in ("due", "shipped"):
                continue
            if next_no is None:
                next_no = (await session.execute(select(func.max(OrderLine.line_no)).where(
                    OrderLine.order_id == order.id))).scalar_one() or 0
            next_no += 1
            line = await _replacement_line(session, order, refund, rline, oline, next_no)
        if status == "shipped":
            line.shipped_quantity = line.quantity  # the platform's word: it left (once, by its cause key)
        elif status == "cancelled":
            line.released_qty = max(line.released_qty, line.quantity - line.shipped_qty)


async def _replacement_line(session: AsyncSession, order: Order, refund: Refund, rline: RefundLine,
                            oline: OrderLine, line_no: int) -> OrderLine:
    if rline.replacement_sku_key or rline.replacement_merchant_sku:
        key = listing_key(rline.replacement_sku_key, rline.replacement_merchant_sku)
        listing = await resolve_listing(session, order.store_id, key, rline.replacement_merchant_sku, {})
        sku_id = listing.sku_id if listing is not None else None
        merchant, ref = rline.replacement_merchant_sku, dict(listing.listing_ref or {}) if listing else {}
    else:
        key, sku_id, merchant, ref = oline.external_sku_key, oline.sku_id, oline.merchant_sku, dict(oline.listing_ref or {})
    line = OrderLine(order_id=order.id, line_no=line_no, kind="replacement", replacement_of_refund_id=refund.id,
                     replacement_of_line_id=oline.id,
                     external_line_id=f"replacement:{refund.external_id}:{oline.external_line_id}"[:128],
                     external_sku_key=key, merchant_sku=merchant, title=oline.title, sku_id=sku_id,
                     quantity=rline.quantity, unit_price_minor=0, discount_minor=0, total_minor=0, listing_ref=ref)
    session.add(line)
    await session.flush()
    return line


async def apply_after_sale_detail(session: AsyncSession, refund_id: int, detail: AfterSaleDetail) -> Result:
    """The platform's detail call answered: the kind of a refund whose kind was pending, what its lines
    do with their goods, where goods and replacement are; then the effects that waited for it.
    The caller locks the order row first (``lock_for_refund``)."""
    refund = (await session.execute(select(Refund).where(Refund.id == refund_id).with_for_update()
                                    .execution_options(populate_existing=True))).scalar_one_or_none()
    if refund is None or not refund.kind_pending:
        return Result("unchanged", order_id=refund.order_id if refund else None, refund_id=refund_id)
    refund.kind, refund.kind_pending = detail.kind, False
    for rline in (await session.execute(select(RefundLine).where(RefundLine.refund_id == refund.id))).scalars():
        rline.restock = detail.restock  # nothing moved on these lines yet: their decision waited for this
        rline.replacement_sku_key = detail.replacement_sku_key or rline.replacement_sku_key
        rline.replacement_merchant_sku = detail.replacement_merchant_sku or rline.replacement_merchant_sku
    if detail.return_status in ("received", "inspected") and refund.returned_at is None:
        refund.returned_at = utcnow()
    refund.replacement_status = _merge_replacement(refund.replacement_status, detail.replacement_status)
    refund.updated_at = utcnow()
    await session.flush()
    if refund.order_id is not None:
        order = await session.get(Order, refund.order_id)
        await _apply_refund_effects(session, order, refund)
    return Result("updated", order_id=refund.order_id, refund_id=refund.id)


async def lock_for_refund(session: AsyncSession, refund_id: int) -> None:
    """Before changing one refund's stock outside a snapshot (its detail, an inspection), in the lock
    order of ``lock_for_snapshots``: its order, then the listings and skus of the order's lines and of
    an exchange's other sku, each in id order. For PostgreSQL; SQLite has one writer at a time."""
    if is_sqlite(session):
        return
    row = (await session.execute(select(Refund.order_id, Refund.store_id).where(Refund.id == refund_id))).first()
    if row is None or row.order_id is None:
        return
    await session.execute(select(Order.id).where(Order.id == row.order_id).with_for_update())
    keys = set((await session.execute(select(OrderLine.external_sku_key).where(
        OrderLine.order_id == row.order_id, OrderLine.external_sku_key.is_not(None)))).scalars())
    for key, merchant in (await session.execute(select(RefundLine.replacement_sku_key, RefundLine.replacement_merchant_sku)
                                                .where(RefundLine.refund_id == refund_id))).all():
        if key or merchant:
            keys.add(listing_key(key, merchant))
    locked = await ledger.lock_listings(session, Listing.store_id == row.store_id,
                                        Listing.external_sku_key.in_(sorted(keys))) if keys else []
    sku_ids = {l.sku_id for l in locked if l.sku_id is not None}
    sku_ids.update((await session.execute(select(OrderLine.sku_id).where(
        OrderLine.order_id == row.order_id, OrderLine.sku_id.is_not(None)))).scalars())
    await ledger.lock_skus(session, sku_ids)


# Refunds whose kind needs the platform's detail call: handed to whoever queues those calls (the
# after-sales flow) just before the transaction that noted them commits, like the stock outbox.
_DETAIL_WANTED = "refund_detail_wanted"
_detail_followers: list = []


def on_detail_wanted(follower) -> None:
    """Subscribe a flow to refunds whose kind waits for a detail call: ``follower(session, refund_ids)``."""
    if follower not in _detail_followers:
        _detail_followers.append(follower)


def note_detail_wanted(session: AsyncSession, refund_id: int) -> None:
    session.info.setdefault(_DETAIL_WANTED, set()).add(refund_id)
    before_commit(session, _DETAIL_WANTED, _hand_over_detail_wanted)


async def _hand_over_detail_wanted(session: AsyncSession) -> None:
    wanted: set[int] = session.info.pop(_DETAIL_WANTED, set())
    for follower in _detail_followers:
        await follower(session, wanted)


async def platform_count_changed(session: AsyncSession, store_id: int, external_sku_key: str, units: int) -> None:
    """Account for units a shop took off (or put back on) its own count since our last push."""
    # Units going back (cancels, restocks) absorb nothing; sales first use up the unheard ones.
    absorbed = 0 if units <= 0 else case((Listing.unheard_sales < units, Listing.unheard_sales), else_=units)
    await session.execute(
        update(Listing).where(Listing.store_id == store_id, Listing.external_sku_key == external_sku_key)
        .values(sold_since_push=Listing.sold_since_push + units - absorbed,
                unheard_sales=Listing.unheard_sales - absorbed,
                # The shop's own sales use up its quota (NULL stays NULL: the shared policy has none).
                quota=Listing.quota - units)
    )


async def rebind_lines(session: AsyncSession, store_id: int, external_sku_key: str, sku_id: int | None) -> int:
    """After an operator binds a listing: bind its unbound lines and apply their stock effects now."""
    lines = (await session.execute(
        select(OrderLine).join(Order, Order.id == OrderLine.order_id)
        .where(Order.store_id == store_id, OrderLine.external_sku_key == external_sku_key, OrderLine.sku_id.is_(None))
    )).scalars().all()
    order_ids = set()
    for line in lines:
        line.sku_id = sku_id
        order_ids.add(line.order_id)
    await session.flush()
    for order_id in sorted(order_ids):
        order = (await session.execute(select(Order).where(Order.id == order_id).with_for_update())).scalar_one()
        await apply_stock_effects(session, order)
        refunds = (await session.execute(select(Refund).where(Refund.order_id == order_id))).scalars().all()
        for refund in refunds:
            await _apply_refund_effects(session, order, refund)
    return len(lines)
