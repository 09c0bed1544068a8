"""Fixtures for the Douyin adapter tests: the fake gateway, an HTTP client, an adapter that never sleeps."""

from __future__ import annotations

import httpx
import pytest

from adapters.douyin.adapter import DouyinAdapter
from douyin_fakes import FakeGateway, make_store


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def adapter(http, sleeps) -> DouyinAdapter:
    adapter = DouyinAdapter(make_store(), http)

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    adapter.client.sleep = no_wait
    return adapter
