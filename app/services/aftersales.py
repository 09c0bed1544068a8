"""After-sales (售后): the follow-up calls a refund may need, and the warehouse's inspection of returns.

- ``refunds.detail``: a refund whose kind the platform's list does not tell (Pinduoduo) is applied at
  once for its money and lines; this job asks the platform's detail call for the kind, then applies
  what waited for it (restock, an exchange's replacement). Queued in the transaction that took the
  refund in (``reconcile.note_detail_wanted``), one per refund.
- ``orders.refresh``: a delivery that carried a whole refund (Shopify ``refunds/create``) changed its
  order too; the order is refetched here, best effort, while the refund has long applied.
- ``inspect_refund``: ``POST /v1/refunds/{id}/inspection``: good units go on hand (or stay there),
  defective ones are written off (domain/returns.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.errors import AdapterError, AuthExpiredError, DependencyNotReady, TransientError
from app.domain import ledger, returns
from app.domain.reconcile import (apply_after_sale_detail, lock_for_refund, lock_for_snapshots, on_detail_wanted,
                                  upsert_order)
from app.jobs.catalogue import job
from app.jobs.outcomes import Dead, Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.models import Order, OrderLine, Refund, RefundLine, Store
from app.models.base import utcnow
from app.services.connections import connect, wait_for_authorization
from app.services.errors import Conflict, Invalid, NotFound

log = logging.getLogger("coopsync.aftersales")

DETAIL_NOT_READY_S = 30.0  # seconds before asking again for an after-sale the platform cannot show yet
REFRESH_ATTEMPTS = 6  # a best-effort order refresh gives up after this many tries (polling catches up)


# --- the kind of an after-sale, from the platform's detail call ----------------------------------


async def _load(ctx: JobContext, model, row_id: int):
    async with ctx.db.read() as session:
        row = await session.get(model, row_id)
        store = None if row is None else await session.get(Store, row.store_id)
    return row, store


@job("refunds.detail", dedupe=lambda payload: f"refunds.detail:{payload['refund_id']}")
async def handle_refund_detail(ctx: JobContext) -> Outcome:
    refund_id = int(ctx.job.payload["refund_id"])
    refund, store = await _load(ctx, Refund, refund_id)
    if refund is None or not refund.kind_pending:
        return Done("nothing pending")
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
        detail = await adapter.fetch_after_sale(refund.external_id, refund.order_external_id)
    except AuthExpiredError as exc:
        return wait_for_authorization(store.id, exc)
    except (TransientError, DependencyNotReady) as exc:
        return Retry(getattr(exc, "retry_after_s", None) or backoff_s(ctx.job.attempts), str(exc))
    except AdapterError as exc:
        # A refusal or an answer we cannot read: its stock effects keep waiting, visible on the
        # refund (kind null, kind_pending true); a later snapshot of it queues the call again.
        return Dead(f"after-sale detail of refund {refund_id}: {exc}")
    if detail is None:
        return Retry(DETAIL_NOT_READY_S, f"the platform cannot show after-sale {refund.external_id} yet")
    async with ctx.db.transaction() as session:
        await lock_for_refund(session, refund_id)
        result = await apply_after_sale_detail(session, refund_id, detail)
    return Done(f"{detail.kind}: {result.change}")


async def queue_details(session: AsyncSession, refund_ids: set[int]) -> None:
    """Reconcile's note of refunds whose kind waits: one detail job each, in the same transaction."""
    for refund_id in sorted(refund_ids):
        await handle_refund_detail.enqueue(session, {"refund_id": refund_id})


on_detail_wanted(queue_details)


# --- an order refetched after a delivery that carried only part of its change ----------------------


@job("orders.refresh", max_attempts=REFRESH_ATTEMPTS,
     dedupe=lambda payload: f"orders.refresh:{payload['store_id']}:{payload['external_id']}")
async def handle_order_refresh(ctx: JobContext) -> Outcome:
    """Best effort: the delivery that asked for it has applied already; when the platform stays away
    past the last attempt, scheduled polling brings the order's change in."""
    store_id, external_id = int(ctx.job.payload["store_id"]), str(ctx.job.payload["external_id"])
    async with ctx.db.read() as session:
        store = await session.get(Store, store_id)
    if store is None:
        return Done("store gone")
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
        snap = await adapter.fetch_order(external_id)
    except AuthExpiredError as exc:
        return wait_for_authorization(store.id, exc)
    except TransientError as exc:
        return Retry(exc.retry_after_s or backoff_s(ctx.job.attempts, base_s=10.0), str(exc))
    except AdapterError as exc:
        return Dead(f"order {external_id} could not be refetched: {exc}")
    if snap is None:
        return Done("the platform shows no such order")
    async with ctx.db.transaction() as session:
        if not ctx.db.is_sqlite:
            await lock_for_snapshots(session, [(store.id, [snap], [])])
        result = await upsert_order(session, store, snap, via="refresh")
    return Done(result.change)


async def queue_order_refreshes(session: AsyncSession, store_id: int, external_ids: list[str]) -> None:
    for external_id in sorted(set(external_ids)):
        await handle_order_refresh.enqueue(session, {"store_id": store_id, "external_id": external_id})


# --- the warehouse's inspection of returned goods ---------------------------------------------------


@dataclass(frozen=True)
class InspectedLine:
    line_id: int  # the order line the goods came from
    good: int
    defective: int


async def inspect_refund(session: AsyncSession, refund_id: int, lines: list[InspectedLine]) -> Refund:
    """Record the inspection of a return's (or an exchange's) goods in the caller's transaction.

    Refused: an unknown refund (NotFound); a refund whose kind is not known yet, or that was closed
    with nothing back (Conflict); a kind that takes no goods back, a line the refund does not have,
    or more units than came back (Invalid). Nothing is written when anything is refused."""
    await lock_for_refund(session, refund_id)
    refund = (await session.execute(select(Refund).where(Refund.id == refund_id).with_for_update()
                                    .execution_options(populate_existing=True))).scalar_one_or_none()
    if refund is None:
        raise NotFound(f"no refund {refund_id}")
    if refund.kind_pending:
        raise Conflict(f"refund {refund_id}: its kind is not known yet (the platform's detail call is due); "
                       "try again shortly")
    if not returns.brings_goods_back(refund):
        raise Invalid(f"refund {refund_id} is a {refund.kind or 'refund_only'}: it takes no goods back to inspect")
    if refund.order_id is None:
        raise Conflict(f"refund {refund_id}: its order has not arrived yet")
    if refund.status == "closed" and refund.returned_at is None and not await _anything_back(session, refund_id):
        raise Conflict(f"refund {refund_id} was closed and its goods never came back")
    order = (await session.execute(select(Order).where(Order.id == refund.order_id).with_for_update())).scalar_one()
    refund_lines = (await session.execute(select(RefundLine).where(RefundLine.refund_id == refund_id)
                                          .order_by(RefundLine.line_no))).scalars().all()
    by_order_line = {rl.order_line_id: rl for rl in refund_lines if rl.order_line_id is not None and rl.restock == "return"}
    wanted: dict[int, list[int]] = {}
    for line in lines:
        if line.line_id not in by_order_line:
            raise Invalid(f"line_id {line.line_id}: refund {refund_id} brings back no goods of that order line")
        counts = wanted.setdefault(line.line_id, [0, 0])
        counts[0] += line.good
        counts[1] += line.defective
    plan = []
    for line_id, (good, defective) in wanted.items():
        rline = by_order_line[line_id]
        oline = await session.get(OrderLine, line_id, with_for_update=True)
        if oline.sku_id is None:
            raise Conflict(f"line_id {line_id} is not bound to a cooperative sku: bind its listing first")
        came_back = max(rline.returned_qty, returns.returnable(rline, oline))
        inspected = rline.good_qty + rline.defective_qty
        if inspected + good + defective > came_back:
            raise Invalid(f"line_id {line_id}: {good + defective} units inspected, but {came_back} came back "
                          f"and {inspected} of them were inspected already")
        plan.append((rline, oline, good, defective))
    hold = (await session.get(Store, refund.store_id)).options.restock_returns == "after_inspection"
    try:
        for rline, oline, good, defective in plan:
            await returns.inspect(session, refund=refund, rline=rline, oline=oline, good=good, defective=defective,
                                  hold=hold)
    except ledger.InsufficientStock as exc:
        raise Conflict(f"cannot write the defective units off: {exc}") from None
    olines = {l.id: l for l in (await session.execute(select(OrderLine).where(
        OrderLine.order_id == order.id))).scalars()}
    refund.return_status = returns.return_status(refund, [(rl, olines.get(rl.order_line_id)) for rl in refund_lines])
    refund.updated_at = utcnow()
    await session.flush()
    return refund


async def _anything_back(session: AsyncSession, refund_id: int) -> bool:
    found = await session.execute(select(RefundLine.id).where(RefundLine.refund_id == refund_id,
                                                              RefundLine.returned_qty > 0))
    return found.first() is not None
