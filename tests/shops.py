"""Helpers for end-to-end flow tests: a sandbox marketplace bound to a store, and webhook posting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from sqlalchemy import text

from adapters.sandbox.market import SandboxMarket
from tests.helpers import ADMIN

SECRET = "shh-secret"


def shopify_headers(body: bytes, topic: str, *, secret: str = SECRET, event_id: str | None = None) -> dict:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Topic": topic, "Content-Type": "application/json",
            "X-Shopify-Shop-Domain": "qinba-tea.myshopify.com", "X-Shopify-API-Version": "2026-07",
            "X-Shopify-Webhook-Id": event_id or uuid.uuid4().hex,
            **({"X-Shopify-Event-Id": event_id} if event_id else {})}


class Shop:
    """A sandbox marketplace wired to a coopsync store, with helpers to deliver its webhooks."""

    def __init__(self, client, store: dict, market: SandboxMarket) -> None:
        self.client = client
        self.store = store
        self.market = market

    @property
    def url(self) -> str:
        return f"/webhooks/sandbox/{self.store['id']}"

    async def deliver(self, deliveries=None, *, reverse: bool = False) -> list[str]:
        deliveries = self.market.take_deliveries() if deliveries is None else deliveries
        if reverse:
            deliveries = list(reversed(deliveries))
        statuses = []
        for d in deliveries:
            r = await self.client.post(self.url, content=d.body, headers=d.headers)
            assert r.status_code == 200, r.text
            statuses.append(r.json()["status"])
        return statuses


async def make_jobs_due(db) -> None:
    """Time travel for retries: every queued job becomes due now."""
    async with db.transaction() as session:
        await session.execute(text("UPDATE job SET run_after = created_at WHERE status = 'queued'"))


async def stock_of(client, sku: str = "GYNO-TEA-250G") -> tuple[int, int]:
    r = await client.get(f"/v1/stock/{sku}", headers=ADMIN)
    body = r.json()
    return body["on_hand"], body["reserved"]
