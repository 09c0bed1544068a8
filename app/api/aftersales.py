"""After-sales: the warehouse records what it found in a return's goods."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, Fulfillment, RefundIdPath
from app.api.idempotency import run_idempotent
from app.api.schemas import InspectionCreate, RefundLinePublic, RefundPublic
from app.models import OrderLine, Refund, RefundLine, Sku
from app.services.aftersales import InspectedLine, inspect_refund

router = APIRouter(prefix="/v1", tags=["orders"])


async def refund_public(session: AsyncSession, refund: Refund) -> RefundPublic:
    rows = (await session.execute(
        select(RefundLine, Sku.sku).outerjoin(OrderLine, OrderLine.id == RefundLine.order_line_id)
        .outerjoin(Sku, Sku.id == OrderLine.sku_id).where(RefundLine.refund_id == refund.id)
        .order_by(RefundLine.line_no))).all()
    return RefundPublic.of(refund, [RefundLinePublic.of(line, code) for line, code in rows])


@router.post("/refunds/{refund_id}/inspection", response_model=RefundPublic,
             responses={409: {"description": "its kind is not known yet (the platform's detail call is due), "
                                             "its order has not arrived, or it was closed with nothing back"},
                        422: {"description": "it takes no goods back, names a line it does not have, or "
                                             "inspects more units than came back"}})
async def inspect_return(request: Request, refund_id: RefundIdPath, body: InspectionCreate, db: DbDep,
                         principal: Fulfillment):
    """Good units go on hand (``restock_returns`` "after_inspection") or stay there ("on_receipt");
    defective units are written off and never sellable. Each call adds to the inspection so far."""
    lines = [InspectedLine(line_id=l.line_id, good=l.good, defective=l.defective) for l in body.lines]

    async def work(session: AsyncSession):
        refund = await inspect_refund(session, refund_id, lines)
        return 200, (await refund_public(session, refund)).model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)
