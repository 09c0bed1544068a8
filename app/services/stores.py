"""Shops: adding and changing them, and binding their listings to cooperative skus."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.reconcile import lock_for_binding, rebind_lines
from app.models import Listing, Sku, Store, StoreSettings
from app.models.base import utcnow
from app.services import connections
from app.services.errors import Invalid, NotFound
from app.services.platforms import UnknownPlatform, adapter_class, validate_credentials
from app.services.push import queue_store_push


def checked_credentials(platform: str, credentials: dict) -> dict:
    """The credentials as the platform's adapter accepts them; never echoes their values."""
    try:
        adapter_class(platform)
        return validate_credentials(platform, credentials)
    except (UnknownPlatform, ValueError) as exc:
        raise Invalid(str(exc)) from None


async def get_store(session: AsyncSession, store_id: int, *, lock: bool = False) -> Store:
    store = await session.get(Store, store_id, with_for_update=lock)
    if store is None:
        raise NotFound(f"no store {store_id}")
    return store


async def create_store(session: AsyncSession, *, platform: str, name: str, external_shop_id: str | None,
                       webhook_secret: str | None, credentials: dict, settings: StoreSettings) -> Store:
    store = Store(platform=platform, name=name, external_shop_id=external_shop_id, webhook_secret=webhook_secret,
                  settings=settings.stored())
    _set_credentials(store, checked_credentials(platform, credentials))
    session.add(store)
    await session.flush()
    if not connections.has_token(store):
        store.auth_status = "expired"
        store.auth_error = f"not authorised yet: POST /v1/stores/{store.id}/authorize"
    return store


def _set_credentials(store: Store, credentials: dict) -> None:
    """New credentials: their token times go to their columns, and the store counts as connected anew."""
    store.credentials, store.auth_expires_at, store.refresh_expires_at = connections.split_token_times(credentials)
    store.auth_status, store.auth_error = "ok", None
    store.credentials_version = (store.credentials_version or 0) + 1
    store.refresh_lease_until = None


async def update_store(session: AsyncSession, store_id: int, *, name: str | None = None,
                       external_shop_id: str | None = None, webhook_secret: str | None = None,
                       credentials: dict | None = None, settings: dict | None = None) -> Store:
    """Change what was given; a new webhook secret keeps the old one valid (rotation), new
    credentials reconnect the store, settings merge over the stored ones."""
    store = await get_store(session, store_id, lock=True)
    if name is not None:
        store.name = name
    if external_shop_id is not None:
        store.external_shop_id = external_shop_id
    if webhook_secret is not None and webhook_secret != store.webhook_secret:
        store.webhook_secret_previous = store.webhook_secret
        store.webhook_secret = webhook_secret
        store.webhook_secret_rotated_at = utcnow()
    if credentials is not None:
        _set_credentials(store, checked_credentials(store.platform, credentials))
        if connections.has_token(store):
            await connections.wake_parked(session, store.id)
        else:
            store.auth_status = "expired"
            store.auth_error = f"not authorised yet: POST /v1/stores/{store.id}/authorize"
    if settings is not None:
        merged = {**store.options.stored(), **settings}
        try:
            store.settings = StoreSettings.model_validate(merged).stored()
        except ValueError as exc:
            raise Invalid(f"settings: {exc}") from None
    store.updated_at = utcnow()
    return store


@dataclass(frozen=True)
class Binding:
    external_sku_key: str
    sku: str | None  # None unbinds
    listing_ref: dict[str, str] | None = None


@dataclass(frozen=True)
class Bound:
    listing: Listing
    sku: str | None
    lines_bound: int


async def bind_listings(session: AsyncSession, store_id: int, bindings: list[Binding]) -> list[Bound]:
    """Bind shop sku keys to cooperative skus by hand; lines waiting on a binding take effect now."""
    await get_store(session, store_id)
    await lock_for_binding(session, store_id, [b.external_sku_key for b in bindings],
                           [b.sku for b in bindings if b.sku is not None])
    results = []
    for binding in bindings:
        sku_id = None
        if binding.sku is not None:
            sku_id = (await session.execute(select(Sku.id).where(Sku.sku == binding.sku))).scalar_one_or_none()
            if sku_id is None:
                raise Invalid(f"unknown sku {binding.sku!r}")
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
        results.append(Bound(listing, binding.sku, applied))
    await queue_store_push(session, store_id)
    return results
