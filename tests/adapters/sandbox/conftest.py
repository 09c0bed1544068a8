"""Fixtures for the sandbox tests: a registered market, and adapters for it in process and over HTTP."""

from __future__ import annotations

import uuid

import httpx
import pytest

from adapters.sandbox.adapter import SandboxAdapter
from adapters.sandbox.market import SandboxMarket
from adapters.sandbox.server import create_app
from sandbox_helpers import SECRET, store_for


@pytest.fixture
def market():
    market = SandboxMarket.register(SandboxMarket(f"shop-{uuid.uuid4().hex[:8]}", SECRET))
    market.add_listing("tea-250", price_minor=9900, stock=10, merchant_sku="TEA-QB-250G", title="明前绿茶 250g")
    market.add_listing("honey-500", price_minor=8000, stock=3, merchant_sku="HONEY-500G")
    yield market
    SandboxMarket.unregister(market.name)


@pytest.fixture
async def inproc_adapter(market):
    async with httpx.AsyncClient() as http:
        yield SandboxAdapter(store_for(f"inproc://{market.name}"), http)


@pytest.fixture
def requests_seen() -> list[httpx.Request]:
    return []


@pytest.fixture
async def http_adapter(market, requests_seen):
    async def record(request: httpx.Request) -> None:
        requests_seen.append(request)

    transport = httpx.ASGITransport(app=create_app(market))
    async with httpx.AsyncClient(transport=transport, event_hooks={"request": [record]}) as http:
        yield SandboxAdapter(store_for("http://sandbox.test/"), http)
