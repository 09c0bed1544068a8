"""Returned goods (退货): when they count as back, where they go, and what the warehouse's inspection does.

Goods come back on a refund line whose restock is ``return`` (a return or an exchange). They are back
when the platform says so (``refund.returned_at``) or when the warehouse inspects them, whichever comes
first. The store setting ``restock_returns`` decides where they go: ``on_receipt`` puts them on hand
(back into the member lots that supplied the sale); ``after_inspection`` holds them apart, and only
the units the inspection finds good go on hand. A defective unit is a ``write_off`` movement: held
apart it never reaches on hand; already on hand it leaves again, out of the lots its return credited,
so the sale's attribution to the member households stays as it was.

Every effect is a ledger movement with its own cause key, counted on the refund line:
``refund:<refund>:line:<line>:restock`` for the first units put on hand (``…:restock:<total>`` for
later ones) and ``refund:<refund>:line:<line>:write_off:<total defective>``.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import GOODS_COME_BACK
from app.domain import ledger
from app.models import OrderLine, Refund, RefundLine, StockMovement


def restock_cause(refund_id: int, refund_line_id: int) -> str:
    """The cause key of a refund line's first restock (settlement reads it to find who got goods back)."""
    return f"refund:{refund_id}:line:{refund_line_id}:restock"


def brings_goods_back(refund: Refund) -> bool:
    return not refund.kind_pending and refund.kind in GOODS_COME_BACK


def returnable(rline: RefundLine, oline: OrderLine) -> int:
    """Units of the refund line that can come back: its quantity, at most what the order line shipped
    less what other refunds brought back already."""
    others = oline.restocked_qty - rline.returned_qty
    return max(0, min(rline.quantity, oline.shipped_qty - others))


async def receive(session: AsyncSession, *, refund: Refund, rline: RefundLine, oline: OrderLine, quantity: int,
                  hold: bool) -> None:
    """``quantity`` more units of the line are back: held apart (``hold``) or on hand."""
    if quantity <= 0:
        return
    rline.returned_qty += quantity
    oline.restocked_qty += quantity
    if hold:
        rline.held_qty += quantity
        return
    await _put_on_hand(session, refund, rline, oline, quantity)


async def _put_on_hand(session: AsyncSession, refund: Refund, rline: RefundLine, oline: OrderLine,
                       quantity: int) -> None:
    total = rline.restocked_qty + quantity
    cause = restock_cause(refund.id, rline.id) + ("" if rline.restocked_qty == 0 else f":{total}")
    moved = await ledger.apply_movement(session, sku_id=oline.sku_id, kind="restock", cause_key=cause,
                                        on_hand_delta=quantity, order_line_id=oline.id,
                                        reason=f"refund {refund.external_id}")
    if moved is not None:
        await ledger.return_to_lots(session, sku_id=oline.sku_id, quantity=quantity, movement_id=moved.id,
                                   order_line_id=oline.id)
    rline.restocked_qty = total  # counts up only: each restock's cause key names the total it reached


async def inspect(session: AsyncSession, *, refund: Refund, rline: RefundLine, oline: OrderLine, good: int,
                  defective: int, hold: bool) -> None:
    """The warehouse inspected ``good`` + ``defective`` more units of the line (the caller checked they
    came back). Units the platform had not reported back yet are received by the inspection itself."""
    inspected = rline.good_qty + rline.defective_qty + good + defective
    if inspected > rline.returned_qty:
        await receive(session, refund=refund, rline=rline, oline=oline, quantity=inspected - rline.returned_qty,
                      hold=hold)
    if good:
        # Held apart until now: on hand. Put on hand at receipt already: nothing changes.
        from_held = min(good, rline.held_qty)
        if from_held:
            rline.held_qty -= from_held
            await _put_on_hand(session, refund, rline, oline, from_held)
        rline.good_qty += good
    if defective:
        held_part = min(defective, rline.held_qty)
        on_hand_part = defective - held_part
        total = rline.defective_qty + defective
        # Held apart, a defective unit never reaches on hand: the movement records it and moves nothing.
        moved = await ledger.apply_movement(
            session, sku_id=oline.sku_id, kind="write_off",
            cause_key=f"refund:{refund.id}:line:{rline.id}:write_off:{total}", on_hand_delta=-on_hand_part,
            order_line_id=oline.id, reason=f"defective return, refund {refund.external_id}")
        if moved is not None and on_hand_part:
            credited = (await session.execute(select(StockMovement.id).where(or_(
                StockMovement.cause_key == restock_cause(refund.id, rline.id),
                StockMovement.cause_key.like(restock_cause(refund.id, rline.id) + ":%"))))).scalars().all()
            await ledger.take_back_from_lots(session, sku_id=oline.sku_id, quantity=on_hand_part,
                                             movement_id=moved.id, order_line_id=oline.id, credited_by=list(credited))
        rline.held_qty -= held_part
        rline.defective_qty = total


def return_status(refund: Refund, lines: list[tuple[RefundLine, OrderLine | None]]) -> str | None:
    """awaiting_goods, received or inspected, from the refund's lines; None for kinds that take nothing back."""
    if not brings_goods_back(refund):
        return None
    returning = [(r, o) for r, o in lines if r.restock == "return"]
    returned = sum(r.returned_qty for r, _ in returning)
    if returned == 0:
        return "awaiting_goods"
    expected = sum(max(r.returned_qty, returnable(r, o) if o is not None else 0) for r, o in returning)
    inspected = sum(r.good_qty + r.defective_qty for r, _ in returning)
    return "inspected" if inspected >= expected else "received"
