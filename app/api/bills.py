"""Bills and payouts of a store: upload a bill file, list imports and bill lines (unmatched ones too), and
the payout reconciliation of a month."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, IdValue, Operator, StoreIdPath
from app.api.idempotency import run_idempotent
from app.api.schemas import (BillImportPublic, BillLinePublic, BillUploadPublic, Page, PayoutDifferencePublic,
                             PayoutOrderPublic, PayoutReportPublic, PayoutTotalPublic)
from app.errors import Problem
from app.models import BillEntry, BillImport, Store
from app.pagination import MAX_LIMIT, keyset_page
from app.services.bills import UNMATCHED_SHOWN, BillRejected, upload_bill
from app.services.payouts import payout_report

router = APIRouter(prefix="/v1", tags=["bills"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]

CSV_BODY = {"requestBody": {"required": True, "description": "the bill file (CSV, UTF-8 or GB18030)", "content": {
    "text/csv": {"schema": {"type": "string"}}}}}


def _upload_answer(result) -> BillUploadPublic:
    bill = result.bill
    return BillUploadPublic.model_validate({
        **BillImportPublic.model_validate(bill).model_dump(), "duplicate": result.duplicate,
        "duplicate_lines": result.duplicate_lines,
        "unmatched": [BillLinePublic.model_validate(l) for l in result.unmatched[:UNMATCHED_SHOWN]]})


@router.post("/stores/{store_id}/bills", status_code=201, response_model=BillUploadPublic, openapi_extra=CSV_BODY,
             responses={200: {"model": BillUploadPublic, "description": "This file was imported before: nothing changed"},
                        409: {"description": "A request with this Idempotency-Key is still in flight"}})
async def post_bill(store_id: StoreIdPath, request: Request, db: DbDep, principal: Operator,
                    name: Annotated[str | None, Query(max_length=255, description="the file's name, kept with it")] = None,
                    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None):
    """Import a bill file with the store's column mapping (its platform's built-in one, or
    ``settings.bill_columns``). Each line is taken once: the same file (or the same lines) again changes
    nothing. A file that cannot be read is 422 naming the line and the column, and nothing is imported."""
    content = await request.body()

    async def work(session: AsyncSession):
        try:
            result = await upload_bill(session, store_id, content, name)
        except BillRejected as exc:
            raise Problem(422, exc.detail, line=exc.line, column=exc.column) from None
        return (200 if result.duplicate else 201), _upload_answer(result).model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)


async def _store_exists(session: AsyncSession, store_id: int) -> None:
    if await session.get(Store, store_id) is None:
        raise Problem(404, f"no store {store_id}")


@router.get("/stores/{store_id}/bills")
async def list_bills(store_id: StoreIdPath, db: DbDep, _: Operator, limit: Limit = 50,
                     cursor: str | None = None) -> Page[BillImportPublic]:
    async with db.read() as session:
        await _store_exists(session, store_id)
        rows, next_cursor = await keyset_page(session, select(BillImport).where(BillImport.store_id == store_id),
                                              BillImport.id, limit=limit, cursor=cursor, newest_first=True)
    return Page[BillImportPublic](items=[BillImportPublic.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/stores/{store_id}/bill-lines")
async def list_bill_lines(store_id: StoreIdPath, db: DbDep, _: Operator, limit: Limit = 100, cursor: str | None = None,
                          unmatched: bool | None = None, order_id: IdValue | None = None,
                          bill_import_id: IdValue | None = None) -> Page[BillLinePublic]:
    """Settlement and bill lines, newest first; ``?unmatched=true``: those no order matches (yet)."""
    stmt = select(BillEntry).where(BillEntry.store_id == store_id)
    if unmatched is not None:
        stmt = stmt.where(BillEntry.order_id.is_(None) if unmatched else BillEntry.order_id.is_not(None))
    if order_id is not None:
        stmt = stmt.where(BillEntry.order_id == order_id)
    if bill_import_id is not None:
        stmt = stmt.where(BillEntry.bill_import_id == bill_import_id)
    async with db.read() as session:
        await _store_exists(session, store_id)
        rows, next_cursor = await keyset_page(session, stmt, BillEntry.id, limit=limit, cursor=cursor, newest_first=True)
    return Page[BillLinePublic](items=[BillLinePublic.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/stores/{store_id}/payouts")
async def payouts(store_id: StoreIdPath, db: DbDep, _: Operator,
                  period: Annotated[str, Query(pattern=r"^[1-9]\d{3}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
                  ) -> PayoutReportPublic:
    """What the platform paid out against what the statements computed, order by order, with the
    differences named (gross, fee, refund, subsidy, other, not_settled, missing_payout, missing_order)."""
    async with db.read() as session:
        report = await payout_report(session, store_id, period)
    orders = [PayoutOrderPublic(
        order_id=o.order_id, external_id=o.external_id, currency=o.currency, paid_minor=o.paid_minor,
        computed_minor=o.computed_minor, difference_minor=o.difference_minor, settlement_ids=o.settlement_ids,
        differences=[PayoutDifferencePublic(kind=d.kind, platform_minor=d.platform_minor,
                                            statements_minor=d.statements_minor, difference_minor=d.difference_minor)
                     for d in o.differences]) for o in report.orders]
    return PayoutReportPublic(store_id=report.store_id, period=report.period, timezone=report.timezone, orders=orders,
                              unmatched=[BillLinePublic.model_validate(l) for l in report.unmatched],
                              totals=[PayoutTotalPublic(**t) for t in report.totals()], in_balance=report.in_balance,
                              truncated=report.truncated)
