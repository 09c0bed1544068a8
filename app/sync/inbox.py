"""Apply one inbox row: parse, fetch what notices name, reconcile, and mark it done, in one transaction.

What cannot be parsed or applied is kept as ``failed`` with its reason and can be replayed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from adapters.base import OrderDeleted, OrderNotice, OrderSnapshot, RefundNotice, RefundSnapshot, WebhookDelivery
from adapters.errors import (
    AdapterError,
    AuthExpiredError,
    DependencyNotReady,
    PayloadError,
    PermanentError,
    TransientError,
)
from app.domain.reconcile import upsert_order, upsert_refund
from app.metrics import INBOX_APPLIED
from app.models import InboxItem, Store
from app.models.base import utcnow
from app.sync.adapters import make_adapter
from app.sync.push import mark_auth_expired
from app.workers.jobs import backoff_s, enqueue
from app.workers.runner import Done, JobContext, Outcome, Retry

log = logging.getLogger("coopsync.inbox")

DEPENDENCY_WAIT = timedelta(hours=24)  # how long a refund may wait for its order before it is failed


async def _mark_failed(ctx: JobContext, inbox_id: int, reason: str) -> None:
    async with ctx.db.transaction() as session:
        row = await session.get(InboxItem, inbox_id, with_for_update=True)
        if row is not None and row.status == "pending":
            row.status = "failed"
            row.error = reason[:2000]
            row.attempts += 1
            row.processed_at = utcnow()
    INBOX_APPLIED.labels("failed").inc()
    log.warning("inbox row failed", extra={"inbox_id": inbox_id, "reason": reason[:300]})


async def fetch_named(adapter, delivery: WebhookDelivery) -> tuple[list[OrderSnapshot], list[RefundSnapshot]]:
    """Turn notices into snapshots through the adapter (outside any transaction)."""
    orders = list(delivery.orders)
    refunds = list(delivery.refunds)
    for notice in delivery.notices:
        if isinstance(notice, (OrderNotice, OrderDeleted)):
            snap = await adapter.fetch_order(notice.external_id)
            if snap is not None:
                orders.append(snap)
        elif isinstance(notice, RefundNotice):
            snap = await adapter.fetch_refund(notice.external_id, notice.order_external_id)
            if snap is not None:
                refunds.append(snap)
    return orders, refunds


async def handle_inbox_apply(ctx: JobContext) -> Outcome:
    inbox_id = int(ctx.job.payload["inbox_id"])
    async with ctx.db.read() as session:
        row = await session.get(InboxItem, inbox_id)
        if row is None or row.status != "pending":
            return Done("already handled")
        store = await session.get(Store, row.store_id)
        headers, body = dict(row.headers or {}), bytes(row.body)
    adapter = make_adapter(store, ctx.services.get("http"))
    try:
        delivery = adapter.parse_webhook(headers, body)
    except PayloadError as exc:
        await _mark_failed(ctx, inbox_id, f"cannot parse: {exc}")
        return Done("failed: payload")
    except Exception as exc:  # a mapping bug must not lose the delivery: keep it, replayable
        await _mark_failed(ctx, inbox_id, f"cannot map: {exc!r}")
        return Done("failed: mapping")
    try:
        orders, refunds = await fetch_named(adapter, delivery)
    except TransientError as exc:
        return Retry(exc.retry_after_s or backoff_s(ctx.job.attempts), str(exc))
    except AuthExpiredError as exc:
        async with ctx.db.transaction() as session:
            await mark_auth_expired(session, store.id, str(exc))
        await _mark_failed(ctx, inbox_id, f"auth expired while fetching: {exc}; replay after re-authorising")
        return Done("failed: auth")
    except (PermanentError, AdapterError) as exc:
        await _mark_failed(ctx, inbox_id, f"fetch failed: {exc}")
        return Done("failed: fetch")
    try:
        async with ctx.db.transaction() as session:
            row = await session.get(InboxItem, inbox_id, with_for_update=True)
            if row is None or row.status != "pending":
                return Done("already handled")  # another worker got here first (it holds the effect)
            store = await session.get(Store, row.store_id)
            for snap in orders:
                await upsert_order(session, store, snap, via="webhook")
            for snap in refunds:
                await upsert_refund(session, store, snap, via="webhook")
            row.status = "done"
            row.error = None
            row.attempts += 1
            row.processed_at = utcnow()
    except DependencyNotReady as exc:
        if utcnow() - ctx.job.created_at > DEPENDENCY_WAIT:
            await _mark_failed(ctx, inbox_id, f"gave up waiting: {exc}")
            return Done("failed: dependency")
        INBOX_APPLIED.labels("waiting").inc()
        delay = min(300.0, max(exc.retry_after_s or 1.0, backoff_s(ctx.job.attempts, base_s=1.0, cap_s=300)))
        return Retry(delay, str(exc), counts=False)
    except (PayloadError, PermanentError) as exc:
        await _mark_failed(ctx, inbox_id, f"cannot apply: {exc}")
        return Done("failed: apply")
    INBOX_APPLIED.labels("done").inc()
    return Done()


async def replay(session, inbox_id: int) -> InboxItem | None:
    """Put a failed row back in line (after its cause was fixed)."""
    row = await session.get(InboxItem, inbox_id, with_for_update=True)
    if row is None:
        return None
    if row.status == "failed":
        row.status = "pending"
        row.error = None
        await enqueue(session, "inbox.apply", {"inbox_id": row.id})
    return row
