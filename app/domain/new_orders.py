"""Set-based apply of orders new to us: a run of snapshots written with multi-row statements (orders,
lines, reservations), giving the rows and stock effects ``reconcile.upsert_order`` gives one by one.

Only what is common in a flood qualifies: an order not held yet, pending, paid (nothing shipped) or
cancelled, without refunds, whose listings exist already and would not change. Everything else goes
the row-by-row way, in its place in the run, so the outcome is the same as applying in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from pydantic_core import PydanticUndefined
from sqlalchemy.orm.attributes import set_committed_value

from adapters.base import OrderSnapshot, OrderStatus
from app.db import is_sqlite
from app.domain import ledger
from app.domain.outbox import note_stock_changed
from app.domain.reconcile import fill_line, fill_order, link_waiting_refunds, listing_key, new_line, new_order
from app.metrics import OVERSOLD_LINES
from app.models import Listing, Order, OrderLine, Refund, Store, StockMovement
from app.models.base import utcnow

log = logging.getLogger("coopsync.reconcile")

_SIMPLE_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.CANCELLED})
_ORDER_COLUMNS = [c for c in Order.__table__.columns if c.key != "id"]
_LINE_COLUMNS = [c for c in OrderLine.__table__.columns if c.key != "id"]
_MOVEMENT_COLUMNS = [c for c in StockMovement.__table__.columns if c.key != "id"]


def simple_shape(snap: OrderSnapshot) -> bool:
    """What the snapshot alone says: no refunds, nothing shipped, one line per line id."""
    return (snap.status in _SIMPLE_STATUSES and not snap.refunds
            and all(not line.shipped_quantity for line in snap.lines)
            and len({line.external_line_id for line in snap.lines}) == len(snap.lines))


def line_keys(store_id: int, snap: OrderSnapshot) -> set[tuple[int, str]]:
    keys = {(store_id, listing_key(l.external_sku_key, l.merchant_sku)) for l in snap.lines}
    keys.discard((store_id, None))
    return keys


@dataclass
class Held:
    """What the database holds for a set of snapshots, read with one query per table."""

    orders: set[tuple[int, str]] = field(default_factory=set)  # (store id, external id) held already
    waiting: set[tuple[int, str]] = field(default_factory=set)  # orders a stored refund waits for
    listings: dict[tuple[int, str], Listing] = field(default_factory=dict)


async def read_held(session: AsyncSession, items: list[tuple[int, OrderSnapshot]]) -> Held:
    """The orders, waiting refunds and listings that ``items`` (store id, snapshot) name. One query per
    table and store (a batch is mostly one store's): ``store_id = ? AND key IN (...)`` uses the unique
    indexes, where PostgreSQL planned a row-value ``IN`` as a scan growing with the table."""
    held = Held()
    by_store: dict[int, tuple[set[str], set[str]]] = {}
    for store_id, snap in items:
        ids, keys = by_store.setdefault(store_id, (set(), set()))
        ids.add(snap.external_id)
        keys.update(key for _, key in line_keys(store_id, snap))
    for store_id, (ids, keys) in sorted(by_store.items()):
        wanted = sorted(ids)
        held.orders.update((store_id, x) for x in (await session.execute(select(Order.external_id).where(
            Order.store_id == store_id, Order.external_id.in_(wanted)))).scalars())
        held.waiting.update((store_id, x) for x in (await session.execute(select(Refund.order_external_id).where(
            Refund.store_id == store_id, Refund.order_external_id.in_(wanted), Refund.order_id.is_(None)))).scalars())
        await refresh_held(session, held, {(store_id, key) for key in keys}, [])
    return held


def falls_back(exc: BaseException) -> bool:
    """Whether a failed set-based run is applied again one by one in the same transaction: yes for a
    duplicate (another transaction inserted one of its orders meanwhile) or a bug in this path; no for
    the database's trouble (a deadlock, a lost connection), which the whole unit of work retries."""
    if isinstance(exc, IntegrityError):
        return True
    return not isinstance(exc, (OperationalError, DBAPIError))


async def refresh_held(session: AsyncSession, held: Held, keys: set[tuple[int, str | None]],
                       waiting: list[tuple[int, str]]) -> None:
    """After a row applied one by one: read again the listings it may have created or changed, and count
    the orders its refunds name as waited for (a later new order of them goes one by one)."""
    held.waiting.update(waiting)
    by_store: dict[int, list[str]] = {}
    for store_id, key in sorted(k for k in keys if k[1] is not None):
        by_store.setdefault(store_id, []).append(key)
    for store_id, wanted in by_store.items():
        held.listings.update({(l.store_id, l.external_sku_key): l for l in (await session.execute(
            select(Listing).where(Listing.store_id == store_id, Listing.external_sku_key.in_(wanted))
            .execution_options(populate_existing=True))).scalars()})


def fits(held: Held, store_id: int, snap: OrderSnapshot) -> bool:
    """The snapshot can go the set-based way: new, simple, and its listings are there as they would stay
    (``resolve_listing`` would create, bind or edit none of them)."""
    if not simple_shape(snap) or (store_id, snap.external_id) in held.orders or (store_id, snap.external_id) in held.waiting:
        return False
    for line in snap.lines:
        key = listing_key(line.external_sku_key, line.merchant_sku)
        if key is None:
            continue
        listing = held.listings.get((store_id, key))
        if listing is None:
            return False
        if listing.sku_id is None and line.merchant_sku:
            return False  # the merchant code may bind it now
        if line.merchant_sku and listing.merchant_sku != line.merchant_sku:
            return False
        if {**(line.listing_ref or {}), **(listing.listing_ref or {})} != (listing.listing_ref or {}):
            return False
    return True


class _Record(SimpleNamespace):
    """A row to insert, with the model's defaults: building SQLModel objects cost more than the
    statements that write them."""


def _maker(model):
    columns = [c for c in model.__table__.columns if c.key != "id"]
    fields = model.model_fields
    constant = {c.key: fields[c.key].default for c in columns
                if fields[c.key].default_factory is None and fields[c.key].default is not PydanticUndefined}
    factories = {c.key: fields[c.key].default_factory for c in columns if fields[c.key].default_factory is not None}

    def make(**values) -> _Record:
        record = _Record(**constant, **{k: f() for k, f in factories.items()})
        record.__dict__.update(values)
        return record
    return make


_new_order_record, _new_line_record, _new_movement_record = _maker(Order), _maker(OrderLine), _maker(StockMovement)


def _row(obj, columns) -> dict:
    return {c.key: getattr(obj, c.key) for c in columns}


# The shop's own count moved by ``units`` sold (positive only here): as ``reconcile.platform_count_changed``.
_COUNT_SOLD = (
    update(Listing.__table__)
    .where(Listing.__table__.c.id == bindparam("listing_id"))
    .values(sold_since_push=Listing.__table__.c.sold_since_push + bindparam("units")
            - case((Listing.__table__.c.unheard_sales < bindparam("units"), Listing.__table__.c.unheard_sales),
                   else_=bindparam("units")),
            unheard_sales=Listing.__table__.c.unheard_sales
            - case((Listing.__table__.c.unheard_sales < bindparam("units"), Listing.__table__.c.unheard_sales),
                   else_=bindparam("units")),
            quota=Listing.__table__.c.quota - bindparam("units"))
)
_RESERVE = (
    update(ledger.Sku.__table__)
    .where(ledger.Sku.__table__.c.id == bindparam("sku_id"))
    .values(reserved=ledger.Sku.__table__.c.reserved + bindparam("delta"), updated_at=bindparam("now"))
)


async def _insert(session: AsyncSession, table, rows: list[dict]) -> list[int]:
    """Insert ``rows`` with multi-row statements; their new ids, in the rows' order.

    PostgreSQL: RETURNING in parameter order (SQLAlchemy's sentinel). SQLite would insert row by row
    for that; instead, under the writer lock this transaction holds, each row of a multi-row INSERT
    gets the largest rowid so far plus one (no AUTOINCREMENT on these keys), so the ids, sorted, are
    in the rows' order: checked to be consecutive, or the batch fails and is applied row by row."""
    if not is_sqlite(session):
        return list((await session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))
                    .scalars())
    ids = sorted((await session.execute(insert(table).returning(table.c.id), rows)).scalars())
    if len(ids) != len(rows) or (ids and ids[-1] - ids[0] != len(ids) - 1):
        raise RuntimeError(f"{table.name}: new ids are not consecutive; cannot tell which row got which")
    return ids


async def _link_refunds_stored_meanwhile(session: AsyncSession, work: list[tuple[Store, OrderSnapshot, str]],
                                         order_ids: list[int]) -> None:
    """A refund a poll stored for one of these orders after ``read_held`` looked (another transaction,
    on PostgreSQL) waits for an order only its creation links: link it now, as ``upsert_order`` does."""
    by_store: dict[int, dict[str, int]] = {}
    stores = {}
    for (store, snap, _), order_id in zip(work, order_ids):
        by_store.setdefault(store.id, {})[snap.external_id] = order_id
        stores[store.id] = store
    for store_id, ids in by_store.items():
        waiting = set((await session.execute(select(Refund.order_external_id).where(
            Refund.store_id == store_id, Refund.order_external_id.in_(sorted(ids)), Refund.order_id.is_(None)
        ))).scalars())
        for external_id in sorted(waiting):
            order = await session.get(Order, ids[external_id])
            await link_waiting_refunds(session, stores[store_id], order)


async def insert_new_orders(session: AsyncSession, held: Held, work: list[tuple[Store, OrderSnapshot, str]]) -> list[int]:
    """Write ``work`` (store, snapshot that ``fits``, via) in order: the orders, their lines and the
    reservations of paid lines, each table in one statement. Returns the new order ids."""
    if not work:
        return []
    now = utcnow()
    orders: list[Order] = []
    lines: list[tuple[int, OrderLine]] = []  # (index of its order, line)
    sold: dict[int, int] = {}  # listing id -> units the shops took off their own count
    for index, (store, snap, via) in enumerate(work):
        order = new_order(store, snap, via, _new_order_record)
        fill_order(order, snap)
        order.created_at = order.updated_at = now
        orders.append(order)
        for line_index, line_snap in enumerate(snap.lines):
            key = listing_key(line_snap.external_sku_key, line_snap.merchant_sku)
            listing = held.listings.get((store.id, key)) if key is not None else None
            line = new_line(None, line_index, line_snap, _new_line_record)
            fill_line(line, line_snap, key, listing)
            if snap.status != OrderStatus.CANCELLED and listing is not None:
                line.platform_held = line_snap.quantity
                sold[listing.id] = sold.get(listing.id, 0) + line_snap.quantity
            lines.append((index, line))

    # Reservations in order, from the locked skus' balances (``apply_stock_effects`` and ``_reserve``).
    await ledger.lock_skus(session, {line.sku_id for _, line in lines if line.sku_id is not None})
    locked = session.info["locked_skus"] if any(line.sku_id is not None for _, line in lines) else {}
    reserved: dict[int, int] = {}  # sku id -> units reserved by this run
    takes: list[tuple[int, int, int]] = []  # (position in lines, sku id, units taken)
    for position, (index, line) in enumerate(lines):
        order = orders[index]
        if line.sku_id is None or order.status != OrderStatus.PAID.value or line.quantity <= 0:
            continue
        sku = locked[line.sku_id]
        available = sku.on_hand - sku.reserved - reserved.get(sku.id, 0)
        take = max(0, min(line.quantity, available))
        if take < line.quantity:
            OVERSOLD_LINES.inc()
            log.error("oversold", extra={"order": order.external_id, "sku": sku.sku, "wanted": line.quantity,
                                         "available": available})
            note_stock_changed(session, sku.id)
            line.oversold_qty = line.quantity - take
            order.oversold = True
        if take:
            line.reserved_qty = take
            reserved[sku.id] = reserved.get(sku.id, 0) + take
            takes.append((position, sku.id, take))
    by_order: dict[int, list[OrderLine]] = {}
    for index, line in lines:
        by_order.setdefault(index, []).append(line)
    for index, order in enumerate(orders):
        order.has_unbound = any(line.sku_id is None for line in by_order.get(index, []))

    order_ids = await _insert(session, Order.__table__, [_row(order, _ORDER_COLUMNS) for order in orders])
    line_ids: list[int] = []
    if lines:
        for index, line in lines:
            line.order_id = order_ids[index]
        line_ids = await _insert(session, OrderLine.__table__, [_row(line, _LINE_COLUMNS) for _, line in lines])
    if takes:
        movements = []
        running = {sku_id: locked[sku_id].reserved for sku_id in reserved}
        for position, sku_id, take in takes:
            running[sku_id] += take
            line_id = line_ids[position]
            movements.append(_row(_new_movement_record(
                sku_id=sku_id, kind="reserve", cause_key=f"order:{order_ids[lines[position][0]]}:line:{line_id}:reserve",
                reserved_delta=take, on_hand_after=locked[sku_id].on_hand, reserved_after=running[sku_id],
                order_line_id=line_id, created_at=now), _MOVEMENT_COLUMNS))
        await session.execute(insert(StockMovement.__table__), movements)
        await session.execute(_RESERVE, [{"sku_id": sku_id, "delta": delta, "now": now}
                                         for sku_id, delta in sorted(reserved.items())])
        for sku_id, delta in reserved.items():
            sku = locked[sku_id]
            set_committed_value(sku, "reserved", sku.reserved + delta)
            note_stock_changed(session, sku_id)
    await _link_refunds_stored_meanwhile(session, work, order_ids)
    if sold:
        await session.execute(_COUNT_SOLD, [{"listing_id": listing_id, "units": units}
                                            for listing_id, units in sorted(sold.items())])
        counted = ("sold_since_push", "unheard_sales", "quota")
        for listing in held.listings.values():
            if listing.id in sold and listing in session:
                session.expire(listing, counted)
    return order_ids
