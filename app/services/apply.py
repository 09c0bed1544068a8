"""Apply inbox rows: parse, fetch what notices name, reconcile, and mark each done in the transaction
that holds its effects. A batch of rows shares one transaction, each row in a savepoint of its own.

What cannot be parsed or applied is kept as ``failed`` with its reason and can be replayed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import load_only
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import OrderDeleted, OrderNotice, OrderSnapshot, RefundNotice, RefundSnapshot, WebhookDelivery
from adapters.errors import (
    AdapterError,
    AuthExpiredError,
    DependencyNotReady,
    PayloadError,
    PermanentError,
    TransientError,
)
from app.db import is_transient_db_error
from app.domain import ledger, new_orders
from app.domain.reconcile import listing_key, lock_for_snapshots, upsert_order, upsert_refund
from app.metrics import INBOX_APPLIED
from app.models import InboxItem, Store
from app.models.base import utcnow
from app.services.aftersales import queue_order_refreshes
from app.services.platforms import make_adapter
from app.jobs.catalogue import job
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.services.connections import connect, wait_for_authorization

log = logging.getLogger("coopsync.inbox")

DEPENDENCY_WAIT = timedelta(hours=24)  # how long a refund may wait for its order before it is failed
NOTICE_WAIT = timedelta(hours=1)  # how long a notice may name an order the platform cannot show yet
NOTICE_RETRY_S = 15.0  # seconds between tries of such a notice


async def fetch_named(adapter, delivery: WebhookDelivery) -> tuple[list[OrderSnapshot], list[RefundSnapshot]]:
    """Turn notices into snapshots through the adapter (outside any transaction). A notice naming an
    order or refund the platform cannot show yet raises ``DependencyNotReady`` (its read replica
    may lag behind its push); a deleted order that cannot be read is simply gone."""
    orders = list(delivery.orders)
    refunds = list(delivery.refunds)
    for notice in delivery.notices:
        if isinstance(notice, (OrderNotice, OrderDeleted)):
            snap = await adapter.fetch_order(notice.external_id)
            if snap is not None:
                orders.append(snap)
            elif isinstance(notice, OrderNotice):
                raise DependencyNotReady(f"the platform cannot show order {notice.external_id} yet",
                                         retry_after_s=NOTICE_RETRY_S)
        elif isinstance(notice, RefundNotice):
            snap = await adapter.fetch_refund(notice.external_id, notice.order_external_id)
            if snap is None:
                raise DependencyNotReady(f"the platform cannot show refund {notice.external_id} yet",
                                         retry_after_s=NOTICE_RETRY_S)
            refunds.append(snap)
    return orders, refunds


@dataclass
class Prepared:
    """One row made ready outside a transaction: its snapshots, or why it failed, or an outcome."""

    ctx: JobContext
    inbox_id: int
    store_id: int | None = None
    orders: list[OrderSnapshot] = field(default_factory=list)
    refunds: list[RefundSnapshot] = field(default_factory=list)
    failure: str | None = None  # kept as failed with this reason
    outcome: Outcome | None = None  # decided already (nothing to apply)
    refresh_orders: list[str] = field(default_factory=list)  # refetched by a job of their own, best effort


async def prepare(ctx: JobContext, row: InboxItem | None, store: Store | None) -> Prepared:
    inbox_id = int(ctx.job.payload["inbox_id"])
    prepared = Prepared(ctx, inbox_id)
    if row is None or row.status != "pending" or store is None:
        prepared.outcome = Done("already handled")
        return prepared
    prepared.store_id = store.id
    adapter = make_adapter(store, ctx.services.get("http"))
    try:
        delivery = adapter.parse_webhook(dict(row.headers or {}), bytes(row.body))
    except PayloadError as exc:
        prepared.failure = f"cannot parse: {exc}"
        return prepared
    except Exception as exc:  # a mapping bug must not lose the delivery: keep it, replayable
        prepared.failure = f"cannot map: {exc!r}"
        return prepared
    prepared.refresh_orders = list(delivery.refresh_orders)
    try:
        if delivery.notices:  # only a notice calls the platform, and only then is a token needed
            adapter = await connect(ctx.db, store, ctx.services.get("http"))
        prepared.orders, prepared.refunds = await fetch_named(adapter, delivery)
    except TransientError as exc:
        prepared.outcome = Retry(exc.retry_after_s or backoff_s(ctx.job.attempts), str(exc))
    except DependencyNotReady as exc:
        if utcnow() - ctx.job.created_at > NOTICE_WAIT:
            prepared.failure = f"gave up waiting: {exc}"
        else:
            prepared.outcome = Retry(exc.retry_after_s or NOTICE_RETRY_S, str(exc), counts=False)
    except AuthExpiredError as exc:
        # Kept pending, not failed: applied the moment the store is authorised again.
        prepared.outcome = wait_for_authorization(store.id, exc)
    except (PermanentError, AdapterError) as exc:
        prepared.failure = f"fetch failed: {exc}"
    return prepared


def _fail(row: InboxItem, reason: str) -> None:
    row.status = "failed"
    row.error = reason[:2000]
    row.attempts += 1
    row.processed_at = utcnow()
    INBOX_APPLIED.labels("failed").inc()
    log.warning("inbox row failed", extra={"inbox_id": row.id, "reason": reason[:300]})


async def apply_prepared(session: AsyncSession, prepared: Prepared) -> Outcome:
    """Apply one prepared row in the caller's transaction, inside a savepoint of its own."""
    if prepared.outcome is not None:
        return prepared.outcome
    batch_rows = session.info.get("inbox_rows")  # locked and read by ``handle_inbox_batch``
    if batch_rows is not None:
        row = batch_rows.get(prepared.inbox_id)
    else:
        row = await session.get(InboxItem, prepared.inbox_id, with_for_update=True, populate_existing=True)
    if row is None or row.status != "pending":
        return Done("already handled")  # another worker got here first (it holds the effect)
    if prepared.failure is not None:
        _fail(row, prepared.failure)
        return Done("failed")
    # Kept for the batch: the identity map alone holds it weakly, and each row would select it again.
    stores: dict[int, Store] = session.info.setdefault("inbox_stores", {})
    store = stores.get(row.store_id)
    if store is None:
        store = stores[row.store_id] = await session.get(Store, row.store_id)
    try:
        try:
            async with session.begin_nested():
                for snap in prepared.orders:
                    await upsert_order(session, store, snap, via="webhook")
                for snap in prepared.refunds:
                    await upsert_refund(session, store, snap, via="webhook")
                # What the delivery changed without carrying it: refetched later, never waited for.
                await queue_order_refreshes(session, store.id, prepared.refresh_orders)
        except BaseException:
            ledger.forget_locks(session)  # the savepoint's stock changes are gone
            raise
    except DependencyNotReady as exc:
        if utcnow() - prepared.ctx.job.created_at > DEPENDENCY_WAIT:
            _fail(row, f"gave up waiting: {exc}")
            return Done("failed: dependency")
        INBOX_APPLIED.labels("waiting").inc()
        delay = min(300.0, max(exc.retry_after_s or 1.0, backoff_s(prepared.ctx.job.attempts, base_s=1.0, cap_s=300)))
        return Retry(delay, str(exc), counts=False)
    except (PayloadError, PermanentError) as exc:
        _fail(row, f"cannot apply: {exc}")
        return Done("failed: apply")
    except Exception as exc:
        if is_transient_db_error(exc):
            raise  # the database's trouble (a lock, a race, a deadlock): the job retries the row as it is
        # A bug in mapping or reconcile must not leave the row pending for ever: keep it failed,
        # listed and replayable once the code is fixed.
        log.exception("inbox row could not be applied", extra={"inbox_id": row.id})
        _fail(row, f"cannot apply: {exc!r}")
        return Done("failed: unexpected")
    row.status = "done"
    row.error = None
    row.attempts += 1
    row.processed_at = utcnow()
    INBOX_APPLIED.labels("done").inc()
    return Done()


async def _load(ctxs: list[JobContext]) -> list[tuple[InboxItem | None, Store | None]]:
    """The batch's rows and their stores, one query each."""
    ids = [int(c.job.payload["inbox_id"]) for c in ctxs]
    async with ctxs[0].db.read() as session:
        rows = {r.id: r for r in (await session.execute(select(InboxItem).where(InboxItem.id.in_(ids)))).scalars()}
        store_ids = {r.store_id for r in rows.values()}
        stores = {s.id: s for s in (await session.execute(select(Store).where(Store.id.in_(store_ids)))).scalars()}
    return [(rows.get(i), stores.get(rows[i].store_id) if i in rows else None) for i in ids]


async def handle_inbox_batch(ctxs: list[JobContext]) -> list[Outcome]:
    """Apply several rows in one transaction (one commit for the lot): runs of new orders set-based,
    the rest row by row, each in a savepoint, in the rows' order."""
    loaded = await _load(ctxs)
    prepared = [await prepare(ctx, row, store) for ctx, (row, store) in zip(ctxs, loaded)]
    return await apply_batch(ctxs[0].db, prepared)


async def apply_batch(db, prepared: list[Prepared]) -> list[Outcome]:
    """Apply prepared rows in one transaction; an outcome per row, in order."""
    async with db.transaction() as session:
        # The rows first, in id order, read afresh under their lock: another worker may have applied
        # one since it was loaded. Kept in the session for the batch (its identity map holds weakly).
        ids = sorted({p.inbox_id for p in prepared if p.outcome is None})
        session.info["inbox_rows"] = {r.id: r for r in (await session.execute(
            select(InboxItem).where(InboxItem.id.in_(ids)).order_by(InboxItem.id).with_for_update()
            .options(load_only(InboxItem.id, InboxItem.store_id, InboxItem.status, InboxItem.attempts,
                               InboxItem.error, InboxItem.processed_at))  # not the bodies, read already
            .execution_options(populate_existing=True))).scalars()} if ids else {}
        if not db.is_sqlite:
            await lock_for_snapshots(session, [(p.store_id, p.orders, p.refunds) for p in prepared
                                               if p.outcome is None and p.failure is None and p.store_id is not None])
        return await apply_in_order(session, prepared)


def _plain(session: AsyncSession, prepared: Prepared) -> bool:
    """A row that may join a set-based run: pending, parsed, orders only, nothing to refetch."""
    row = session.info["inbox_rows"].get(prepared.inbox_id)
    return (prepared.outcome is None and prepared.failure is None and prepared.store_id is not None
            and row is not None and row.status == "pending" and not prepared.refunds
            and not prepared.refresh_orders)


def _touched_keys(prepared: Prepared) -> set[tuple[int, str]]:
    """The listings a row applied one by one may create or change (its lines', an exchange's)."""
    keys: set[tuple[int, str]] = set()
    for snap in prepared.orders:
        keys |= new_orders.line_keys(prepared.store_id, snap)
    for refund in [*prepared.refunds, *(r for o in prepared.orders for r in o.refunds)]:
        for line in refund.lines:
            keys.add((prepared.store_id, listing_key(line.replacement_sku_key, line.replacement_merchant_sku)))
            keys.add((prepared.store_id, listing_key(line.external_sku_key, line.merchant_sku)))
    return keys


async def apply_in_order(session: AsyncSession, prepared: list[Prepared]) -> list[Outcome]:
    """Apply the batch in its order: consecutive rows whose orders are all new and simple go together
    (``new_orders``), every other row goes alone (``apply_prepared``). Whether a row fits is decided
    when its turn comes, after the rows before it applied, so it sees what row by row would show it."""
    plain = [p for p in prepared if _plain(session, p)]
    if len(plain) < 2:
        return [await apply_prepared(session, p) for p in prepared]
    held = await new_orders.read_held(session, [(p.store_id, snap) for p in plain for snap in p.orders])
    # An order named twice in the batch (by any row) goes the row-by-row way each time.
    seen = Counter((p.store_id, snap.external_id) for p in prepared if p.outcome is None and p.failure is None
                   for snap in p.orders)
    plain_ids = {id(p) for p in plain}
    outcomes: dict[int, Outcome] = {}
    run: list[Prepared] = []
    async def alone(p: Prepared) -> None:
        outcomes[id(p)] = await apply_prepared(session, p)
        # What it may have created or changed is read again for the rows after it.
        await new_orders.refresh_held(session, held, _touched_keys(p), [(p.store_id, r.order_external_id)
                                                                        for r in p.refunds])

    async def together(run: list[Prepared]) -> None:
        if await _apply_together(session, run, held):
            outcomes.update((id(r), Done()) for r in run)
            return
        for p in run:  # the run failed as a whole (a poll inserted one of its orders meanwhile, …)
            await alone(p)

    for p in prepared:
        if id(p) in plain_ids and all(seen[(p.store_id, snap.external_id)] == 1
                                      and new_orders.fits(held, p.store_id, snap) for snap in p.orders):
            run.append(p)
            continue
        if run:
            await together(run)
            run = []
        await alone(p)
    if run:
        await together(run)
    return [outcomes[id(p)] for p in prepared]


async def _apply_together(session: AsyncSession, run: list[Prepared], held: new_orders.Held) -> bool:
    """Apply a run set-based, in a savepoint; False when it failed as a whole and was rolled back (its
    rows are then applied one by one, in the same transaction)."""
    stores: dict[int, Store] = session.info.setdefault("inbox_stores", {})
    for store_id in {p.store_id for p in run} - stores.keys():
        stores[store_id] = await session.get(Store, store_id)
    try:
        async with session.begin_nested():
            await new_orders.insert_new_orders(session, held, [(stores[p.store_id], snap, "webhook")
                                                              for p in run for snap in p.orders])
    except Exception as exc:
        ledger.forget_locks(session)
        if not new_orders.falls_back(exc):
            raise  # a deadlock or a lost connection: the batch is retried as it is
        log.warning("set-based apply of %d rows failed; applying them one by one", len(run), exc_info=True)
        await new_orders.refresh_held(session, held, set().union(*(_touched_keys(p) for p in run)), [])
        return False
    now = utcnow()
    rows = session.info["inbox_rows"]
    for p in run:
        row = rows[p.inbox_id]
        row.status, row.error, row.attempts, row.processed_at = "done", None, row.attempts + 1, now
    INBOX_APPLIED.labels("done").inc(len(run))
    return True


# Short, lock-free jobs that arrive in floods: the runner claims and applies them in batches.
@job("inbox.apply", priority=100, max_attempts=20, batch=handle_inbox_batch, local=True)
async def handle_inbox_apply(ctx: JobContext) -> Outcome:
    [outcome] = await handle_inbox_batch([ctx])
    return outcome


async def replay(session, inbox_id: int) -> InboxItem | None:
    """Put a failed row back in line (after its cause was fixed)."""
    row = await session.get(InboxItem, inbox_id, with_for_update=True)
    if row is None:
        return None
    if row.status == "failed":
        row.status = "pending"
        row.error = None
        await handle_inbox_apply.enqueue(session, {"inbox_id": row.id})
    return row
