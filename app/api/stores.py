"""Stores (a shop on a platform) and their listings; secrets and credentials are never echoed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import Admin, DbDep, Operator, StoreIdPath
from app.api.idempotency import run_idempotent
from app.api.schemas import (AuthorizePublic, ListingBinding, ListingBoundPublic, ListingPublic, Page, StoreCreate, StorePublic,
                             StoreUpdate)
from app.models import Listing, Sku, Store
from app.services import connections, stores

router = APIRouter(prefix="/v1/stores", tags=["stores"])


def public_base(request: Request) -> str:
    """Where the outside reaches this service: ``COOPSYNC_PUBLIC_URL``, else the request's own base."""
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


def webhook_url(request: Request, store: Store) -> str:
    return public_base(request) + f"/webhooks/{store.platform}/{store.id}"


def store_public(request: Request, store: Store) -> StorePublic:
    return StorePublic.of(store, webhook_url(request, store), connections.auth_state(store))


@router.post("", status_code=201, response_model=StorePublic)
async def create_store(request: Request, body: StoreCreate, db: DbDep, principal: Admin):
    stores.checked_credentials(body.platform, body.credentials)  # refused before the idempotency key is taken

    async def work(session: AsyncSession):
        store = await stores.create_store(session, platform=body.platform, name=body.name,
                                          external_shop_id=body.external_shop_id, webhook_secret=body.webhook_secret,
                                          credentials=body.credentials, settings=body.settings)
        return 201, store_public(request, store).model_dump(mode="json")

    return await run_idempotent(request, db, principal, work)


@router.get("")
async def list_stores(request: Request, db: DbDep, _: Operator) -> Page[StorePublic]:
    async with db.read() as session:
        stores = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
    return Page[StorePublic](items=[store_public(request, s) for s in stores], next_cursor=None)


@router.get("/{store_id}")
async def get_store(request: Request, store_id: StoreIdPath, db: DbDep, _: Operator) -> StorePublic:
    async with db.read() as session:
        return store_public(request, await stores.get_store(session, store_id))


@router.patch("/{store_id}")
async def update_store(request: Request, store_id: StoreIdPath, body: StoreUpdate, db: DbDep, _: Admin) -> StorePublic:
    async with db.transaction() as session:
        store = await stores.update_store(session, store_id, **body.model_dump(exclude_none=True))
        out = store_public(request, store)
    request.app.state.store_cache.pop(store_id, None)
    return out


@router.get("/{store_id}/listings")
async def get_listings(store_id: StoreIdPath, db: DbDep, _: Operator, unbound: bool = False) -> Page[ListingPublic]:
    async with db.read() as session:
        await stores.get_store(session, store_id)
        stmt = (select(Listing, Sku.sku).outerjoin(Sku, Sku.id == Listing.sku_id)
                .where(Listing.store_id == store_id).order_by(Listing.id))
        if unbound:
            stmt = stmt.where(Listing.sku_id.is_(None))
        rows = (await session.execute(stmt)).all()
    return Page[ListingPublic](items=[ListingPublic.of(listing, code) for listing, code in rows], next_cursor=None)


@router.put("/{store_id}/listings")
async def put_listings(store_id: StoreIdPath, body: list[ListingBinding], db: DbDep,
                       _: Operator) -> Page[ListingBoundPublic]:
    """Bind shop sku keys to cooperative skus by hand; lines waiting on a binding take effect now."""
    async with db.transaction() as session:
        bound = await stores.bind_listings(session, store_id, [stores.Binding(**b.model_dump()) for b in body])
        items = [ListingBoundPublic.of(b.listing, b.sku, lines_bound=b.lines_bound) for b in bound]
    return Page[ListingBoundPublic](items=items, next_cursor=None)


@router.post("/{store_id}/authorize", response_model=AuthorizePublic)
async def authorize_store(request: Request, store_id: StoreIdPath, db: DbDep, _: Operator) -> AuthorizePublic:
    """The platform's consent page for this shop, with a single-use ``state`` (15 minutes); a Douyin
    self-use app has no page: its token is created now."""
    started = await connections.start_authorization(db, store_id, public_base(request))
    request.app.state.store_cache.pop(store_id, None)
    return AuthorizePublic(authorize_url=started.authorize_url, state_expires_at=started.state_expires_at,
                           connected=started.connected, detail=started.detail)
