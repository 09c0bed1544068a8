"""Stores (a shop on a platform) and their listings; secrets and credentials are never echoed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import Admin, DbDep, Operator
from app.domain.reconcile import lock_for_binding, rebind_lines
from app.errors import Problem
from app.idempotency import run_idempotent
from app.models import Listing, Sku, Store
from app.models.base import utcnow
from app.sync.adapters import UnknownPlatform, adapter_class, validate_credentials
from app.sync.push import queue_store_push

router = APIRouter(prefix="/v1/stores", tags=["stores"])


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    base_url: str | None = None
    return_window_days: Annotated[int, Field(ge=0, le=3650)] = 30
    safety_stock: Annotated[int, Field(ge=0)] = 0
    poll_interval_s: Annotated[int, Field(ge=0)] = 300  # 0 turns scheduled polling off
    fee_rate_bp: Annotated[int, Field(ge=0, le=10_000)] = 0  # platform fee when the order has none, basis points


class StoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    external_shop_id: Annotated[StrictStr, Field(max_length=255)] | None = None
    webhook_secret: Annotated[StrictStr, Field(max_length=512)] | None = None
    credentials: dict[str, Any] = Field(default_factory=dict)
    settings: StoreSettings = Field(default_factory=StoreSettings)


class StoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    external_shop_id: Annotated[StrictStr, Field(max_length=255)] | None = None
    webhook_secret: Annotated[StrictStr, Field(max_length=512)] | None = None
    credentials: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None


class ListingBinding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_sku_key: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    sku: Annotated[StrictStr, Field(max_length=64)] | None  # None unbinds
    listing_ref: dict[str, str] | None = None


def webhook_url(request: Request, store: Store) -> str:
    return str(request.base_url).rstrip("/") + f"/webhooks/{store.platform}/{store.id}"


def store_out(request: Request, store: Store) -> dict:
    return {"id": store.id, "platform": store.platform, "name": store.name, "external_shop_id": store.external_shop_id,
            "settings": store.settings, "webhook_url": webhook_url(request, store),
            "has_webhook_secret": bool(store.webhook_secret), "auth_status": store.auth_status,
            "auth_error": store.auth_error,
            "last_webhook_at": store.last_webhook_at.isoformat() if store.last_webhook_at else None,
            "last_poll_at": store.last_poll_at.isoformat() if store.last_poll_at else None,
            "created_at": store.created_at.isoformat(), "updated_at": store.updated_at.isoformat()}


def _check_platform(platform: str, credentials: dict) -> dict:
    try:
        adapter_class(platform)
        return validate_credentials(platform, credentials)
    except UnknownPlatform as exc:
        raise Problem(422, str(exc)) from None
    except ValueError as exc:
        raise Problem(422, str(exc)) from None


@router.post("", status_code=201)
async def create_store(request: Request, body: StoreCreate, db: DbDep, principal: Admin):
    credentials = _check_platform(body.platform, body.credentials)

    async def work(session: AsyncSession):
        store = Store(platform=body.platform, name=body.name, external_shop_id=body.external_shop_id,
                      webhook_secret=body.webhook_secret, credentials=credentials,
                      settings=body.settings.model_dump(mode="json"))
        session.add(store)
        await session.flush()
        return 201, store_out(request, store)

    return await run_idempotent(request, db, principal, work)


@router.get("")
async def list_stores(request: Request, db: DbDep, _: Operator):
    async with db.read() as session:
        stores = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
    return {"items": [store_out(request, s) for s in stores], "next_cursor": None}


async def _store(session: AsyncSession, store_id: int, *, lock: bool = False) -> Store:
    store = await session.get(Store, store_id, with_for_update=lock)
    if store is None:
        raise Problem(404, f"no store {store_id}")
    return store


@router.get("/{store_id}")
async def get_store(request: Request, store_id: int, db: DbDep, _: Operator):
    async with db.read() as session:
        return store_out(request, await _store(session, store_id))


@router.patch("/{store_id}")
async def update_store(request: Request, store_id: int, body: StoreUpdate, db: DbDep, _: Admin):
    async with db.transaction() as session:
        store = await _store(session, store_id, lock=True)
        if body.name is not None:
            store.name = body.name
        if body.external_shop_id is not None:
            store.external_shop_id = body.external_shop_id
        if body.webhook_secret is not None and body.webhook_secret != store.webhook_secret:
            # Rotation: the old secret keeps working until the next rotation.
            store.webhook_secret_previous = store.webhook_secret
            store.webhook_secret = body.webhook_secret
        if body.credentials is not None:
            store.credentials = _check_platform(store.platform, body.credentials)
            store.auth_status, store.auth_error = "ok", None
        if body.settings is not None:
            merged = {**(store.settings or {}), **body.settings}
            try:
                store.settings = StoreSettings.model_validate(merged).model_dump(mode="json")
            except ValueError as exc:
                raise Problem(422, f"settings: {exc}") from None
        store.updated_at = utcnow()
        out = store_out(request, store)
    request.app.state.store_cache.pop(store_id, None)
    return out


def listing_out(listing: Listing, sku_code: str | None) -> dict:
    return {"id": listing.id, "store_id": listing.store_id, "external_sku_key": listing.external_sku_key,
            "merchant_sku": listing.merchant_sku, "sku": sku_code, "bound_by": listing.bound_by,
            "listing_ref": listing.listing_ref, "pushed_quantity": listing.pushed_quantity,
            "pushed_at": listing.pushed_at.isoformat() if listing.pushed_at else None,
            "push_error": listing.push_error, "platform_quantity": listing.platform_quantity}


@router.get("/{store_id}/listings")
async def get_listings(store_id: int, db: DbDep, _: Operator, unbound: bool = False):
    async with db.read() as session:
        await _store(session, store_id)
        stmt = (select(Listing, Sku.sku).outerjoin(Sku, Sku.id == Listing.sku_id)
                .where(Listing.store_id == store_id).order_by(Listing.id))
        if unbound:
            stmt = stmt.where(Listing.sku_id.is_(None))
        rows = (await session.execute(stmt)).all()
    return {"items": [listing_out(l, code) for l, code in rows], "next_cursor": None}


@router.put("/{store_id}/listings")
async def put_listings(store_id: int, body: list[ListingBinding], db: DbDep, _: Operator):
    """Bind shop sku keys to cooperative skus by hand; lines waiting on a binding take effect now."""
    results = []
    async with db.transaction() as session:
        await _store(session, store_id)
        await lock_for_binding(session, store_id, [b.external_sku_key for b in body],
                               [b.sku for b in body if b.sku is not None])
        for binding in body:
            sku_id = None
            if binding.sku is not None:
                sku_id = (await session.execute(select(Sku.id).where(Sku.sku == binding.sku))).scalar_one_or_none()
                if sku_id is None:
                    raise Problem(422, f"unknown sku {binding.sku!r}")
            listing = (await session.execute(select(Listing).where(
                Listing.store_id == store_id, Listing.external_sku_key == binding.external_sku_key).with_for_update()
            )).scalar_one_or_none()
            if listing is None:
                listing = Listing(store_id=store_id, external_sku_key=binding.external_sku_key)
                session.add(listing)
            listing.sku_id = sku_id
            listing.bound_by = "manual" if sku_id else None
            if binding.listing_ref is not None:
                listing.listing_ref = {**(listing.listing_ref or {}), **binding.listing_ref}
            listing.updated_at = utcnow()
            await session.flush()
            applied = await rebind_lines(session, store_id, binding.external_sku_key, sku_id) if sku_id else 0
            results.append({**listing_out(listing, binding.sku), "lines_bound": applied})
        await queue_store_push(session, store_id)
    return {"items": results, "next_cursor": None}
