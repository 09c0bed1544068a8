"""The stock ledger: every change of a sku's stock is a movement with a unique cause key.

Balances on the ``sku`` row are a cache of the ledger, changed by one conditional UPDATE in the
same transaction as the movement, after the sku row is locked (``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` serialises writers). Applying the same cause twice is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.models import Listing, LotConsumption, MemberLot, Sku, StockMovement
from app.models.base import utcnow
from app.domain.outbox import note_stock_changed


class StockError(Exception):
    """A stock change that cannot be made; ``status`` is the HTTP status it maps to."""

    status = 409


class UnknownSku(StockError):
    status = 422


class InsufficientStock(StockError):
    status = 409


@dataclass(frozen=True)
class Balance:
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


async def lock_sku(session: AsyncSession, sku_id: int) -> Sku:
    """Lock the sku row for the rest of the transaction (serialises movements of one sku).

    A sku locked earlier in this transaction is not selected again: its balances in memory are
    kept current by ``apply_movement`` from each UPDATE's RETURNING, and nobody else can change
    the row while we hold the lock. The session keeps it (its identity map alone holds objects
    weakly, and an unreferenced sku would be selected again)."""
    locked: dict[int, Sku] = session.info.setdefault("locked_skus", {})
    sku = locked.get(sku_id)
    if sku is not None:
        return sku
    stmt = select(Sku).where(Sku.id == sku_id).with_for_update().execution_options(populate_existing=True)
    sku = (await session.execute(stmt)).scalar_one_or_none()
    if sku is None:
        raise UnknownSku(f"no sku with id {sku_id}")
    locked[sku_id] = sku
    return sku


async def lock_skus(session: AsyncSession, sku_ids) -> None:
    """Lock several sku rows at once, in id order (the order every multi-sku locker must keep)."""
    locked: dict[int, Sku] = session.info.setdefault("locked_skus", {})
    wanted = sorted(set(sku_ids) - locked.keys())
    if not wanted:
        return
    stmt = (select(Sku).where(Sku.id.in_(wanted)).order_by(Sku.id).with_for_update()
            .execution_options(populate_existing=True))
    locked.update((sku.id, sku) for sku in (await session.execute(stmt)).scalars())


async def lock_listings(session: AsyncSession, *where) -> list[Listing]:
    """Lock the listings matching ``where``, in id order, read afresh: every transaction that locks
    several rows takes orders, then listings, then skus, each table in id order."""
    stmt = (select(Listing).where(*where).order_by(Listing.id).with_for_update()
            .execution_options(populate_existing=True))
    return list((await session.execute(stmt)).scalars())


def forget_locks(session: AsyncSession) -> None:
    """After a savepoint rolled back. SQLAlchemy expires what it touched, so balances are re-read
    anyway; but a row lock taken inside the savepoint may be gone with it on PostgreSQL, so the next
    ``lock_sku`` must select ``FOR UPDATE`` again rather than trust that the lock is still held."""
    for sku in session.info.pop("locked_skus", {}).values():
        if sku in session:
            session.expire(sku)


async def sku_by_code(session: AsyncSession, code: str) -> Sku:
    sku = (await session.execute(select(Sku).where(Sku.sku == code))).scalar_one_or_none()
    if sku is None:
        raise UnknownSku(f"unknown sku {code!r}")
    return sku


async def movement_exists(session: AsyncSession, cause_key: str) -> bool:
    found = await session.execute(select(StockMovement.id).where(StockMovement.cause_key == cause_key))
    return found.first() is not None


async def apply_movement(
    session: AsyncSession,
    *,
    sku_id: int,
    kind: str,
    cause_key: str,
    on_hand_delta: int = 0,
    reserved_delta: int = 0,
    member_id: str | None = None,
    lot_id: int | None = None,
    order_line_id: int | None = None,
    reason: str | None = None,
) -> StockMovement | None:
    """Record one movement and update the balances; None when ``cause_key`` was already applied.

    Raises ``InsufficientStock`` when the change would take ``on_hand`` or ``reserved`` below zero;
    nothing is written then.
    """
    await lock_sku(session, sku_id)
    if await movement_exists(session, cause_key):
        return None
    # Arithmetic happens in SQL on the locked row: no read-modify-write in Python (lost updates).
    result = await session.execute(
        update(Sku)
        .where(Sku.id == sku_id, Sku.on_hand + on_hand_delta >= 0, Sku.reserved + reserved_delta >= 0)
        .values(on_hand=Sku.on_hand + on_hand_delta, reserved=Sku.reserved + reserved_delta, updated_at=utcnow())
        .returning(Sku.on_hand, Sku.reserved)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        raise InsufficientStock(
            f"movement {cause_key} ({on_hand_delta:+d} on hand, {reserved_delta:+d} reserved) would go below zero"
        )
    sku = await lock_sku(session, sku_id)
    set_committed_value(sku, "on_hand", row[0])
    set_committed_value(sku, "reserved", row[1])
    movement = StockMovement(
        sku_id=sku_id, kind=kind, cause_key=cause_key, on_hand_delta=on_hand_delta,
        reserved_delta=reserved_delta, on_hand_after=row[0], reserved_after=row[1], member_id=member_id,
        lot_id=lot_id, order_line_id=order_line_id, reason=reason,
    )
    session.add(movement)
    await session.flush()
    await _after_change(session, sku_id)
    return movement


async def movement_by_cause(session: AsyncSession, cause_key: str) -> StockMovement | None:
    return (await session.execute(select(StockMovement).where(StockMovement.cause_key == cause_key))).scalar_one_or_none()


async def balance(session: AsyncSession, sku_id: int) -> Balance:
    row = (await session.execute(select(Sku.on_hand, Sku.reserved).where(Sku.id == sku_id))).one()
    return Balance(on_hand=row[0], reserved=row[1])


async def receive(session: AsyncSession, *, sku_id: int, quantity: int, member_id: str, lot_ref: str | None,
                  cause_key: str) -> tuple[StockMovement | None, MemberLot | None]:
    """A member household delivers goods: a lot for the dividend split and an on-hand movement."""
    if quantity <= 0:
        raise StockError("a receipt needs a positive quantity")
    await lock_sku(session, sku_id)
    if await movement_exists(session, cause_key):
        return None, None
    lot = MemberLot(sku_id=sku_id, member_id=member_id, lot_ref=lot_ref, quantity=quantity, remaining=quantity)
    session.add(lot)
    await session.flush()
    movement = await apply_movement(session, sku_id=sku_id, kind="receipt", cause_key=cause_key,
                                    on_hand_delta=quantity, member_id=member_id, lot_id=lot.id)
    return movement, lot


async def adjust(session: AsyncSession, *, sku_id: int, delta: int, reason: str, cause_key: str) -> StockMovement | None:
    """A stocktake or correction. Losses come out of member lots first in, first out."""
    if delta == 0:
        raise StockError("an adjustment needs a non-zero delta")
    movement = await apply_movement(session, sku_id=sku_id, kind="adjustment", cause_key=cause_key,
                                    on_hand_delta=delta, reason=reason)
    if movement is not None and delta < 0:
        await consume_lots(session, sku_id=sku_id, quantity=-delta, movement_id=movement.id, order_line_id=None)
    return movement


async def consume_lots(session: AsyncSession, *, sku_id: int, quantity: int, movement_id: int,
                       order_line_id: int | None) -> list[LotConsumption]:
    """Take ``quantity`` from the sku's member lots, oldest first; what no lot covers is the
    cooperative's own stock (``lot_id`` None)."""
    rows: list[LotConsumption] = []
    remaining = quantity
    lots = (await session.execute(
        select(MemberLot).where(MemberLot.sku_id == sku_id, MemberLot.remaining > 0)
        .order_by(MemberLot.received_at, MemberLot.id).with_for_update()
    )).scalars().all()
    for lot in lots:
        if remaining == 0:
            break
        take = min(lot.remaining, remaining)
        lot.remaining -= take
        remaining -= take
        rows.append(LotConsumption(movement_id=movement_id, sku_id=sku_id, lot_id=lot.id, member_id=lot.member_id,
                                   order_line_id=order_line_id, quantity=take))
    if remaining:
        rows.append(LotConsumption(movement_id=movement_id, sku_id=sku_id, lot_id=None, member_id=None,
                                   order_line_id=order_line_id, quantity=remaining))
    session.add_all(rows)
    await session.flush()
    return rows


async def return_to_lots(session: AsyncSession, *, sku_id: int, quantity: int, movement_id: int,
                         order_line_id: int) -> None:
    """Goods of an order line came back: give them back to the lots that supplied it, newest first."""
    consumed = (await session.execute(
        select(LotConsumption).where(LotConsumption.order_line_id == order_line_id, LotConsumption.sku_id == sku_id)
        .order_by(LotConsumption.id.desc())
    )).scalars().all()
    net_by_lot: dict[int | None, int] = {}
    order_of_lots: list[int | None] = []
    for row in consumed:
        if row.lot_id not in net_by_lot:
            order_of_lots.append(row.lot_id)
        net_by_lot[row.lot_id] = net_by_lot.get(row.lot_id, 0) + row.quantity
    remaining = quantity
    for lot_id in order_of_lots:
        if remaining == 0:
            break
        give = min(net_by_lot[lot_id], remaining)
        if give <= 0:
            continue
        if lot_id is not None:
            lot = await session.get(MemberLot, lot_id, with_for_update=True)
            lot.remaining += give
        session.add(LotConsumption(movement_id=movement_id, sku_id=sku_id, lot_id=lot_id,
                                   member_id=None if lot_id is None else lot.member_id,
                                   order_line_id=order_line_id, quantity=-give))
        remaining -= give
    if remaining:
        session.add(LotConsumption(movement_id=movement_id, sku_id=sku_id, lot_id=None, member_id=None,
                                   order_line_id=order_line_id, quantity=-remaining))
    await session.flush()


async def take_back_from_lots(session: AsyncSession, *, sku_id: int, quantity: int, movement_id: int,
                              order_line_id: int, credited_by: list[int]) -> None:
    """Units that came back into member lots (the restock movements ``credited_by``) leave again
    (a defective unit written off): out of the lots those restocks credited, the last one first, so
    the sale's attribution stays where it was; what those lots no longer hold comes out first in,
    first out, like a stocktake loss."""
    credited: dict[int | None, int] = {}
    order_of_lots: list[int | None] = []
    if credited_by:
        rows = (await session.execute(
            select(LotConsumption).where(LotConsumption.movement_id.in_(credited_by),
                                         LotConsumption.order_line_id == order_line_id)
            .order_by(LotConsumption.id.desc()))).scalars().all()
        for row in rows:
            if row.lot_id not in credited:
                order_of_lots.append(row.lot_id)
            credited[row.lot_id] = credited.get(row.lot_id, 0) - row.quantity  # credits are negative rows
    remaining = quantity
    for lot_id in order_of_lots:
        if remaining == 0:
            break
        take = min(credited[lot_id], remaining)
        member = None
        if lot_id is not None:
            lot = await session.get(MemberLot, lot_id, with_for_update=True)
            take = min(take, lot.remaining)  # what the lot still holds (later sales may have taken some)
            lot.remaining -= take
            member = lot.member_id
        if take <= 0:
            continue
        session.add(LotConsumption(movement_id=movement_id, sku_id=sku_id, lot_id=lot_id, member_id=member,
                                   order_line_id=order_line_id, quantity=take))
        remaining -= take
    await session.flush()
    if remaining:
        await consume_lots(session, sku_id=sku_id, quantity=remaining, movement_id=movement_id, order_line_id=None)


async def _after_change(session: AsyncSession, sku_id: int) -> None:
    note_stock_changed(session, sku_id)
