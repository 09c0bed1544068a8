"""Helpers for the WooCommerce adapter tests: fixture files, a store, and a fake that checks Basic auth."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

import httpx

from adapters.base import StoreContext
from adapters.woocommerce.adapter import WooCommerceCredentials

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "woocommerce"
BASE = "https://shop.example.test"
API = "/wp-json/wc/v3"
KEY = "ck_0123456789abcdef0123456789abcdef01234567"
SECRET = "cs_0123456789abcdef0123456789abcdef01234567"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


BAD_SECRET_BODY = load("error_authentication_constructed.json")


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def authed(answer: httpx.Response | Callable[[httpx.Request], httpx.Response]):
    """A respx side effect that answers like WooCommerce: 401 unless Basic auth carries the store's key pair."""
    expected = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, json=BAD_SECRET_BODY)
        return answer(request) if callable(answer) else answer

    return handler


def make_store(secret: str = SECRET, **settings: Any) -> StoreContext:
    settings.setdefault("base_url", BASE)
    return StoreContext(
        store_id="store-2", external_shop_id=None,
        credentials=WooCommerceCredentials(consumer_key=KEY, consumer_secret=secret), settings=settings,
    )


class SleepRecorder:
    """Stands in for asyncio.sleep so retry tests neither wait nor lose track of the waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
