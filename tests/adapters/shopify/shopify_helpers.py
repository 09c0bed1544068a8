"""Helpers for the Shopify adapter tests: fixture files, a store, a token-checking fake, a sleep recorder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import httpx

from adapters.base import StoreContext
from adapters.shopify.adapter import ShopifyCredentials

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "shopify"
SHOP = "qinba-tea.myshopify.com"
BASE = f"https://{SHOP}"
API = "/admin/api/2026-07"
TOKEN = "shpat_test_token"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


INVALID_TOKEN_BODY = load("errors_invalid_token_constructed.json")


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def authed(answer: httpx.Response | Callable[[httpx.Request], httpx.Response]):
    """A respx side effect that answers like Shopify: 401 unless the access token is the store's."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-Shopify-Access-Token") != TOKEN:
            return httpx.Response(401, json=INVALID_TOKEN_BODY)
        return answer(request) if callable(answer) else answer

    return handler


def make_store(token: str = TOKEN, **settings: Any) -> StoreContext:
    return StoreContext(
        store_id="store-1", external_shop_id=SHOP,
        credentials=ShopifyCredentials(access_token=token), settings=settings,
    )


class SleepRecorder:
    """Stands in for asyncio.sleep so throttling tests neither wait nor lose track of the waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


