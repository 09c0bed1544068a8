"""Adapters at run time: the loaded registry and one adapter per store, built from its stored settings,
its credentials and the cooperative's app on the platform."""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import httpx
from pydantic import ValidationError

from adapters.base import Adapter, Capability, StoreContext
from adapters.http import new_client
from adapters.registry import load_adapters
from app.config import get_settings
from app.models import Store


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


def store_capabilities(store: Store) -> frozenset[Capability]:
    """What ``store`` can do: its adapter's capabilities, narrowed or widened by the store's settings."""
    cls = adapter_class(store.platform)
    per_store = getattr(cls, "store_capabilities", None)  # a plug-in implementing only the protocol lacks it
    return per_store(dict(store.settings or {})) if per_store is not None else cls.capabilities


def validate_credentials(platform: str, credentials: dict) -> dict:
    """Check credentials with the adapter's own model; raise ``ValueError`` with its message."""
    cls = adapter_class(platform)
    try:
        cls.Credentials.model_validate({**app_credentials(platform, cls.Credentials.model_fields), **(credentials or {})})
    except ValidationError as exc:
        raise ValueError(f"credentials for {platform}: {exc.errors(include_url=False, include_input=False)}") from exc
    # Keep what was given: a dump would mask SecretStr fields.
    return dict(credentials or {})


def app_credentials(platform: str, fields: Mapping[str, object]) -> dict:
    """The cooperative's app on ``platform`` (``COOPSYNC_APPS__<PLATFORM>__<FIELD>``), limited to the fields
    its adapter's credentials know; a store's own credentials (a self-use app) win over it."""
    configured = get_settings().apps.get(platform, {})
    return {key: value for key, value in configured.items() if key in fields}


def store_context(store: Store) -> StoreContext:
    cls = adapter_class(store.platform)
    fields = getattr(cls.Credentials, "model_fields", {})
    creds = cls.Credentials.model_validate({**app_credentials(store.platform, fields), **(store.credentials or {})})
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
