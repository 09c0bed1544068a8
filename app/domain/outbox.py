"""The stock-changed outbox: the ledger notes each sku whose available stock moved, and whoever
follows such changes (the push flow) is handed them once, just before the transaction commits."""

from __future__ import annotations

from typing import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import before_commit

StockChanged = Callable[[AsyncSession, set[int]], Awaitable[None]]

_followers: list[StockChanged] = []
_CHANGED = "stock_changed"


def on_stock_changed(follower: StockChanged) -> None:
    """Subscribe a flow to stock changes (the push flow does, on import)."""
    if follower not in _followers:
        _followers.append(follower)


def note_stock_changed(session: AsyncSession, sku_id: int) -> None:
    """Record that ``sku_id``'s available stock changed in this transaction."""
    session.info.setdefault(_CHANGED, set()).add(sku_id)
    before_commit(session, _CHANGED, _hand_over)


async def _hand_over(session: AsyncSession) -> None:
    changed: set[int] = session.info.pop(_CHANGED, set())
    if not changed:
        return
    if not _followers:
        # A change nobody follows would leave every shop showing a stale figure: refuse to commit.
        raise RuntimeError("stock changed but no flow follows it; import app.workers.flows first")
    for follower in _followers:
        await follower(session, changed)
