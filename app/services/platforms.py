"""Adapters at run time: the loaded registry, one adapter per store from its stored settings, and the
store's connection state (an expired authorisation stops its calls until it is renewed)."""

from __future__ import annotations

from functools import lru_cache

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Adapter, StoreContext
from adapters.http import new_client
from adapters.registry import load_adapters
from app.models import Store
from app.models.base import utcnow


class UnknownPlatform(LookupError):
    """No adapter is registered under this platform name."""


@lru_cache
def registry() -> dict[str, type[Adapter]]:
    return load_adapters()


def adapter_class(platform: str) -> type[Adapter]:
    try:
        return registry()[platform]
    except KeyError:
        raise UnknownPlatform(f"no adapter for platform {platform!r}; known: {', '.join(sorted(registry()))}") from None


def validate_credentials(platform: str, credentials: dict) -> dict:
    """Check credentials with the adapter's own model; raise ``ValueError`` with its message."""
    cls = adapter_class(platform)
    try:
        cls.Credentials.model_validate(credentials or {})
    except ValidationError as exc:
        raise ValueError(f"credentials for {platform}: {exc.errors(include_url=False)}") from exc
    # Keep what was given: a dump would mask SecretStr fields.
    return dict(credentials or {})


def store_context(store: Store) -> StoreContext:
    cls = adapter_class(store.platform)
    creds = cls.Credentials.model_validate(store.credentials or {})
    return StoreContext(store_id=str(store.id), external_shop_id=store.external_shop_id, credentials=creds,
                        settings=dict(store.settings or {}))


_shared_client: httpx.AsyncClient | None = None


def shared_http() -> httpx.AsyncClient:
    """The process-wide outbound client (created lazily inside the running loop)."""
    global _shared_client
    if _shared_client is None or _shared_client.is_closed:
        _shared_client = new_client()
    return _shared_client


async def close_shared_http() -> None:
    global _shared_client
    if _shared_client is not None:
        await _shared_client.aclose()
        _shared_client = None


def make_adapter(store: Store, http: httpx.AsyncClient | None = None) -> Adapter:
    return adapter_class(store.platform)(store_context(store), http or shared_http())


async def mark_auth_expired(session: AsyncSession, store_id: int, error: str) -> None:
    store = await session.get(Store, store_id, with_for_update=True)
    if store is not None:
        store.auth_status = "expired"
        store.auth_error = f"{error[:800]} Resolution: re-authorise the store and PATCH its credentials."
        store.updated_at = utcnow()
