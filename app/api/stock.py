"""Skus, stock levels, the ledger, receipts from member households and adjustments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, StockRead, StockWrite
from app.api.schemas import (AdjustmentCreate, AdjustmentPublic, AllocationPolicy, MovementPublic, Page,
                             ReceiptCreate, ReceiptPublic, SkuCreate, SkuPublic, StockPublic)
from app.domain import ledger
from app.errors import Problem
from app.api.idempotency import run_idempotent
from app.models import Listing, Sku, StockMovement
from app.pagination import MAX_LIMIT, keyset_page
from app.services.push import rebalance, set_allocation

router = APIRouter(prefix="/v1", tags=["stock"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


async def stock_of(session: AsyncSession, skus: list[Sku]) -> list[StockPublic]:
    """Each sku's balances with what every shop of it was last told (one query for all listings)."""
    ids = [s.id for s in skus]
    listings: dict[int, list[Listing]] = {i: [] for i in ids}
    if ids:
        rows = (await session.execute(select(Listing).where(Listing.sku_id.in_(ids)).order_by(Listing.id))).scalars()
        for listing in rows:
            listings[listing.sku_id].append(listing)
    return [StockPublic.of(s, listings[s.id]) for s in skus]


def _stock_problem(exc: ledger.StockError) -> Problem:
    return Problem(exc.status, str(exc))


@router.post("/skus", status_code=201, response_model=SkuPublic)
async def create_sku(request: Request, body: SkuCreate, db: DbDep, principal: StockWrite):
    async def work(session: AsyncSession):
        sku = Sku(sku=body.sku, name=body.name)
        session.add(sku)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            raise Problem(409, f"sku {body.sku!r} exists already") from None
        return 201, SkuPublic.model_validate(sku).model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)


@router.get("/skus")
async def list_skus(db: DbDep, _: StockRead, limit: Limit = 100, cursor: str | None = None) -> Page[SkuPublic]:
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(Sku), Sku.id, limit=limit, cursor=cursor)
    return Page[SkuPublic](items=[SkuPublic.model_validate(s) for s in rows], next_cursor=next_cursor)


@router.get("/stock")
async def list_stock(db: DbDep, _: StockRead, limit: Limit = 100, cursor: str | None = None) -> Page[StockPublic]:
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(Sku), Sku.id, limit=limit, cursor=cursor)
        items = await stock_of(session, rows)
    return Page[StockPublic](items=items, next_cursor=next_cursor)


async def _sku_or_404(session: AsyncSession, code: str) -> Sku:
    sku = (await session.execute(select(Sku).where(Sku.sku == code))).scalar_one_or_none()
    if sku is None:
        raise Problem(404, f"unknown sku {code!r}")
    return sku


@router.get("/stock/{sku}")
async def get_stock(sku: str, db: DbDep, _: StockRead) -> StockPublic:
    async with db.read() as session:
        row = await _sku_or_404(session, sku)
        return (await stock_of(session, [row]))[0]


@router.get("/stock/{sku}/movements")
async def list_movements(sku: str, db: DbDep, _: StockRead, limit: Limit = 100,
                         cursor: str | None = None) -> Page[MovementPublic]:
    async with db.read() as session:
        row = await _sku_or_404(session, sku)
        moves, next_cursor = await keyset_page(session, select(StockMovement).where(StockMovement.sku_id == row.id),
                                               StockMovement.id, limit=limit, cursor=cursor, newest_first=True)
    return Page[MovementPublic](items=[MovementPublic.of(m, row.sku) for m in moves], next_cursor=next_cursor)


@router.post("/stock/receipts", status_code=201, response_model=ReceiptPublic)
async def create_receipt(request: Request, body: ReceiptCreate, db: DbDep, principal: StockWrite):
    async def work(session: AsyncSession):
        try:
            sku = await ledger.sku_by_code(session, body.sku)
            cause = f"receipt:{_unique_cause(request, principal)}"
            movement, lot = await ledger.receive(session, sku_id=sku.id, quantity=body.quantity,
                                                 member_id=body.member_id, lot_ref=body.lot_ref, cause_key=cause)
        except ledger.StockError as exc:
            raise _stock_problem(exc) from None
        if movement is None:  # this key's receipt is in the ledger already: answer with it, add nothing
            movement = await ledger.movement_by_cause(session, cause)
        current = await ledger.balance(session, sku.id)
        answer = ReceiptPublic(movement=MovementPublic.of(movement, sku.sku), lot_id=movement.lot_id, sku=sku.sku,
                               on_hand=current.on_hand, reserved=current.reserved, available=current.available)
        return 201, answer.model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)


@router.post("/stock/adjustments", status_code=201, response_model=AdjustmentPublic)
async def create_adjustment(request: Request, body: AdjustmentCreate, db: DbDep, principal: StockWrite):
    if body.delta == 0:
        raise Problem(422, "delta: must not be zero", type_="https://coopsync.dev/problems/validation")

    async def work(session: AsyncSession):
        try:
            sku = await ledger.sku_by_code(session, body.sku)
            cause = f"adjustment:{_unique_cause(request, principal)}"
            movement = await ledger.adjust(session, sku_id=sku.id, delta=body.delta, reason=body.reason,
                                           cause_key=cause)
        except ledger.StockError as exc:
            raise _stock_problem(exc) from None
        if movement is None:  # this key's adjustment is in the ledger already
            movement = await ledger.movement_by_cause(session, cause)
        current = await ledger.balance(session, sku.id)
        answer = AdjustmentPublic(movement=MovementPublic.of(movement, sku.sku), sku=sku.sku,
                                  on_hand=current.on_hand, reserved=current.reserved, available=current.available)
        return 201, answer.model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)


@router.put("/stock/{sku}/allocation")
async def put_allocation(sku: str, body: AllocationPolicy, db: DbDep, _: StockWrite) -> StockPublic:
    """Set what each shop is offered of this sku; every shop of it is pushed the new figure."""
    async with db.transaction() as session:
        row = await _sku_or_404(session, sku)
        await set_allocation(session, row, body.model_dump())
        return (await stock_of(session, [row]))[0]


@router.post("/stock/{sku}/allocation/rebalance")
async def post_rebalance(sku: str, db: DbDep, _: StockWrite) -> StockPublic:
    """Split the available stock afresh over the shops by the sku's share policy (quotas otherwise
    change only on receipts, adjustments and returns to stock) and push every shop of it."""
    async with db.transaction() as session:
        row = await _sku_or_404(session, sku)
        await rebalance(session, row)
        return (await stock_of(session, [row]))[0]


def _unique_cause(request: Request, principal) -> str:
    """The ledger cause of an API write. With an Idempotency-Key it is derived from the key, so the
    ledger's unique index refuses a second application even if two retries slipped past the
    idempotency record (a request that outlived the in-flight window); without one, each request
    is its own cause. A cause too long for the ledger's column (a long key) is a digest of itself."""
    import hashlib
    import uuid

    key = request.headers.get("idempotency-key")
    if key:
        cause = f"key:{principal.name}:{key.strip()}"
        if len(cause) > MAX_CAUSE_LENGTH:
            cause = "key-sha256:" + hashlib.sha256(cause.encode()).hexdigest()
        return cause
    return uuid.uuid4().hex


# stock_movement.cause_key holds 255 characters, the kind's prefix ("adjustment:") included.
MAX_CAUSE_LENGTH = 255 - len("adjustment:")
