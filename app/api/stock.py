"""Skus, stock levels, the ledger, receipts from member households and adjustments."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import DbDep, StockRead, StockWrite
from app.domain import ledger
from app.errors import Problem
from app.api.idempotency import run_idempotent
from app.models import Listing, Sku, StockMovement
from app.pagination import MAX_LIMIT, keyset_page
from app.services.push import set_allocation

router = APIRouter(prefix="/v1", tags=["stock"])

SkuCode = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SkuCreate(_Strict):
    sku: SkuCode
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]


class ReceiptCreate(_Strict):
    sku: SkuCode
    quantity: Annotated[StrictInt, Field(gt=0, le=10_000_000)]
    member_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    lot_ref: Annotated[StrictStr, Field(max_length=128)] | None = None


class AllocationPolicy(_Strict):
    """``shared``: every shop is offered the whole available quantity (less its safety stock).
    ``shares``: available is split by weight per store id, each part optionally capped."""

    mode: Literal["shared", "shares"] = "shared"
    shares: dict[str, Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict)
    caps: dict[str, Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict)


class AdjustmentCreate(_Strict):
    sku: SkuCode
    delta: Annotated[StrictInt, Field(ge=-10_000_000, le=10_000_000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]


def sku_out(sku: Sku) -> dict:
    return {"sku": sku.sku, "name": sku.name, "created_at": sku.created_at.isoformat()}


def movement_out(m: StockMovement, sku_code: str) -> dict:
    return {"id": m.id, "sku": sku_code, "kind": m.kind, "on_hand_delta": m.on_hand_delta,
            "reserved_delta": m.reserved_delta, "on_hand_after": m.on_hand_after,
            "reserved_after": m.reserved_after, "cause_key": m.cause_key, "member_id": m.member_id,
            "lot_id": m.lot_id, "order_line_id": m.order_line_id, "reason": m.reason,
            "created_at": m.created_at.isoformat()}


async def stock_out(session: AsyncSession, skus: list[Sku]) -> list[dict]:
    ids = [s.id for s in skus]
    listings: dict[int, list[dict]] = {i: [] for i in ids}
    if ids:
        rows = (await session.execute(select(Listing).where(Listing.sku_id.in_(ids)).order_by(Listing.id))).scalars()
        for l in rows:
            listings[l.sku_id].append({
                "store_id": l.store_id, "external_sku_key": l.external_sku_key, "pushed_quantity": l.pushed_quantity,
                "pushed_at": l.pushed_at.isoformat() if l.pushed_at else None, "push_error": l.push_error})
    return [{"sku": s.sku, "name": s.name, "on_hand": s.on_hand, "reserved": s.reserved,
             "available": s.on_hand - s.reserved, "updated_at": s.updated_at.isoformat(),
             "allocation": s.allocation, "listings": listings[s.id]} for s in skus]


def _stock_problem(exc: ledger.StockError) -> Problem:
    return Problem(exc.status, str(exc))


@router.post("/skus", status_code=201)
async def create_sku(request: Request, body: SkuCreate, db: DbDep, principal: StockWrite):
    async def work(session: AsyncSession):
        sku = Sku(sku=body.sku, name=body.name)
        session.add(sku)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            raise Problem(409, f"sku {body.sku!r} exists already") from None
        return 201, sku_out(sku)

    return await run_idempotent(request, db, principal, work)


@router.get("/skus")
async def list_skus(db: DbDep, _: StockRead, limit: Limit = 100, cursor: str | None = None):
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(Sku), Sku.id, limit=limit, cursor=cursor)
    return {"items": [sku_out(s) for s in rows], "next_cursor": next_cursor}


@router.get("/stock")
async def list_stock(db: DbDep, _: StockRead, limit: Limit = 100, cursor: str | None = None):
    async with db.read() as session:
        rows, next_cursor = await keyset_page(session, select(Sku), Sku.id, limit=limit, cursor=cursor)
        items = await stock_out(session, rows)
    return {"items": items, "next_cursor": next_cursor}


async def _sku_or_404(session: AsyncSession, code: str) -> Sku:
    sku = (await session.execute(select(Sku).where(Sku.sku == code))).scalar_one_or_none()
    if sku is None:
        raise Problem(404, f"unknown sku {code!r}")
    return sku


@router.get("/stock/{sku}")
async def get_stock(sku: str, db: DbDep, _: StockRead):
    async with db.read() as session:
        row = await _sku_or_404(session, sku)
        return (await stock_out(session, [row]))[0]


@router.get("/stock/{sku}/movements")
async def list_movements(sku: str, db: DbDep, _: StockRead, limit: Limit = 100, cursor: str | None = None):
    async with db.read() as session:
        row = await _sku_or_404(session, sku)
        moves, next_cursor = await keyset_page(session, select(StockMovement).where(StockMovement.sku_id == row.id),
                                               StockMovement.id, limit=limit, cursor=cursor, newest_first=True)
    return {"items": [movement_out(m, row.sku) for m in moves], "next_cursor": next_cursor}


@router.post("/stock/receipts", status_code=201)
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
        return 201, {"movement": movement_out(movement, sku.sku), "lot_id": movement.lot_id, "sku": sku.sku,
                     "on_hand": current.on_hand, "reserved": current.reserved, "available": current.available}

    return await run_idempotent(request, db, principal, work)


@router.post("/stock/adjustments", status_code=201)
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
        return 201, {"movement": movement_out(movement, sku.sku), "sku": sku.sku, "on_hand": current.on_hand,
                     "reserved": current.reserved, "available": current.available}

    return await run_idempotent(request, db, principal, work)


@router.put("/stock/{sku}/allocation")
async def put_allocation(sku: str, body: AllocationPolicy, db: DbDep, _: StockWrite):
    """Set what each shop is offered of this sku; every shop of it is pushed the new figure."""
    async with db.transaction() as session:
        row = await _sku_or_404(session, sku)
        await set_allocation(session, row, body.model_dump())
        return (await stock_out(session, [row]))[0]


def _unique_cause(request: Request, principal) -> str:
    """The ledger cause of an API write. With an Idempotency-Key it is derived from the key, so the
    ledger's unique index refuses a second application even if two retries slipped past the
    idempotency record (a request that outlived the in-flight window); without one, each request
    is its own cause."""
    import uuid

    key = request.headers.get("idempotency-key")
    if key:
        return f"key:{principal.name}:{key.strip()}"
    return uuid.uuid4().hex
