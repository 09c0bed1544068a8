"""Stores (a shop on a platform) and their listings; secrets and credentials are never echoed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import Admin, DbDep, Operator
from app.api.idempotency import run_idempotent
from app.models import Listing, Sku, Store, StoreSettings
from app.services import stores

router = APIRouter(prefix="/v1/stores", tags=["stores"])


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
    settings: dict[str, Any] | None = None  # merged over the stored settings, then checked whole


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


@router.post("", status_code=201)
async def create_store(request: Request, body: StoreCreate, db: DbDep, principal: Admin):
    stores.checked_credentials(body.platform, body.credentials)  # refused before the idempotency key is taken

    async def work(session: AsyncSession):
        store = await stores.create_store(session, platform=body.platform, name=body.name,
                                          external_shop_id=body.external_shop_id, webhook_secret=body.webhook_secret,
                                          credentials=body.credentials, settings=body.settings)
        return 201, store_out(request, store)

    return await run_idempotent(request, db, principal, work)


@router.get("")
async def list_stores(request: Request, db: DbDep, _: Operator):
    async with db.read() as session:
        stores = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
    return {"items": [store_out(request, s) for s in stores], "next_cursor": None}


@router.get("/{store_id}")
async def get_store(request: Request, store_id: int, db: DbDep, _: Operator):
    async with db.read() as session:
        return store_out(request, await stores.get_store(session, store_id))


@router.patch("/{store_id}")
async def update_store(request: Request, store_id: int, body: StoreUpdate, db: DbDep, _: Admin):
    async with db.transaction() as session:
        store = await stores.update_store(session, store_id, **body.model_dump(exclude_none=True))
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
        await stores.get_store(session, store_id)
        stmt = (select(Listing, Sku.sku).outerjoin(Sku, Sku.id == Listing.sku_id)
                .where(Listing.store_id == store_id).order_by(Listing.id))
        if unbound:
            stmt = stmt.where(Listing.sku_id.is_(None))
        rows = (await session.execute(stmt)).all()
    return {"items": [listing_out(l, code) for l, code in rows], "next_cursor": None}


@router.put("/{store_id}/listings")
async def put_listings(store_id: int, body: list[ListingBinding], db: DbDep, _: Operator):
    """Bind shop sku keys to cooperative skus by hand; lines waiting on a binding take effect now."""
    async with db.transaction() as session:
        bound = await stores.bind_listings(session, store_id, [stores.Binding(**b.model_dump()) for b in body])
        items = [{**listing_out(b.listing, b.sku), "lines_bound": b.lines_bound} for b in bound]
    return {"items": items, "next_cursor": None}
