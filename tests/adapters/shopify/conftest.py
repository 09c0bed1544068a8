"""Fixtures for the Shopify adapter tests (helpers live in shopify_helpers, a unique module name)."""

from __future__ import annotations

import pytest

from adapters.base import StoreContext
from adapters.http import new_client
from adapters.shopify.adapter import ShopifyAdapter

from shopify_helpers import SleepRecorder, make_store


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
async def http():
    client = new_client()
    yield client
    await client.aclose()


@pytest.fixture
def make_adapter(http, sleeps):
    def build(store: StoreContext | None = None) -> ShopifyAdapter:
        adapter = ShopifyAdapter(store or make_store(location_id="655441491"), http)
        adapter.sleep = sleeps
        return adapter

    return build
