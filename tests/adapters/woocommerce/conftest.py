"""Fixtures for the WooCommerce adapter tests (helpers live in woo_helpers, a unique module name)."""

from __future__ import annotations

import pytest

from adapters.base import StoreContext
from adapters.http import new_client
from adapters.woocommerce.adapter import WooCommerceAdapter

from woo_helpers import SleepRecorder, make_store


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
    def build(store: StoreContext | None = None) -> WooCommerceAdapter:
        adapter = WooCommerceAdapter(store or make_store(), http)
        adapter.sleep = sleeps
        return adapter

    return build
