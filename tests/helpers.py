"""Small helpers shared by tests: creating skus and stores through the API, reading the ledger."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from sqlalchemy import func, select

from app.models import Sku, StockMovement
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def create_sku(client, sku: str = "GYNO-TEA-250G", name: str = "Gynostemma tea 250 g") -> dict:
    r = await client.post("/v1/skus", json={"sku": sku, "name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


async def receive(client, sku: str, quantity: int, member_id: str = "m-01", **extra) -> dict:
    r = await client.post("/v1/stock/receipts", json={"sku": sku, "quantity": quantity, "member_id": member_id, **extra},
                          headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


async def stock(client, sku: str) -> dict:
    r = await client.get(f"/v1/stock/{sku}", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


async def ledger_state(db, sku: str) -> tuple[int, int, int]:
    """(movement count, on_hand, reserved) straight from the database."""
    async with db.read() as session:
        row = (await session.execute(select(Sku).where(Sku.sku == sku))).scalar_one_or_none()
        if row is None:
            return 0, 0, 0
        count = (await session.execute(select(func.count()).select_from(StockMovement)
                                       .where(StockMovement.sku_id == row.id))).scalar_one()
        return count, row.on_hand, row.reserved


async def create_store(client, platform: str = "sandbox", **overrides) -> dict:
    body = {"platform": platform, "name": f"{platform} shop", "webhook_secret": "shh-secret", "credentials": {},
            "settings": {"return_window_days": 30}}
    body.update(overrides)
    r = await client.post("/v1/stores", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


async def count_rows(db, model, *where) -> int:
    """How many rows of ``model`` match ``where``, straight from the database."""
    async with db.read() as session:
        return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 60, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` ran out (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return False
