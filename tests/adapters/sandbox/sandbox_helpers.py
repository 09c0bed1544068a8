"""Shared constants and builders for the sandbox tests."""

from __future__ import annotations

from adapters.base import EmptyCredentials, StoreContext

SECRET = "sandbox-secret"


def store_for(base_url: str) -> StoreContext:
    return StoreContext(store_id="store-sb", external_shop_id=None, credentials=EmptyCredentials(),
                        settings={"base_url": base_url})
