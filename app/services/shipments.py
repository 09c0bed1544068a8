"""Shipments (发货回传): the warehouse says a parcel left; the goods leave the ledger at once and an outbox job
tells the platform, once.

- ``create_shipment`` checks the order and the lines (a cancelled or fully refunded order, a line or a
  quantity the order does not have, an unknown carrier: refused, nothing written), records the parcel,
  moves the stock (``reconcile.apply_stock_effects``: once an order has a shipment of ours, its lines
  ship by what our shipments cover, under the same cause keys as the platform's own "shipped", so
  whichever comes first moves the stock) and queues ``shipment.upload`` in the same transaction.
- ``shipment.upload`` runs one job per parcel, one at a time per order (the lock key): a platform's
  "first" waybill and its extra ones must not race. The adapter reads before it writes (Douyin's split
  parcels carry ``request_id`` instead), so a retry after a lost answer uploads nothing twice.
  Transient errors retry with back-off until ``MAX_UPLOAD_ATTEMPTS``, then the shipment is ``dead``;
  an expired token parks the job (``wait_for_authorization``) without counting; a refusal, or another
  tracking number on the platform, is ``failed`` with the reason for an operator, who may retry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, ShipmentLine as UploadLine, ShipmentResult, ShipmentUpload
from adapters.errors import AdapterError, AuthExpiredError, DependencyNotReady, TransientError
from app.domain import carriers as carrier_rules
from app.domain import ledger
from app.domain.reconcile import apply_stock_effects
from app.jobs.catalogue import job
from app.jobs.outcomes import Dead, Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.models import Carrier, Order, OrderLine, Refund, Shipment, ShipmentAttempt, ShipmentLine, Store
from app.models.base import utcnow
from app.services import carriers
from app.services.connections import connect, wait_for_authorization
from app.services.errors import Conflict, Invalid, NotFound
from app.services.platforms import adapter_class

log = logging.getLogger("coopsync.shipments")

STATUSES = ("pending", "uploaded", "failed", "dead")
MAX_UPLOAD_ATTEMPTS = 12  # platform calls before a shipment is dead; back-off reaches an hour well before
JOB_MAX_ATTEMPTS = 40  # the job's own cap stays above it, so the handler decides (and re-runs after crashes fit)
BACKOFF_BASE_S = 5.0  # seconds before the second attempt, doubling
BACKOFF_CAP_S = 3600.0  # seconds
DETAIL_CHARS = 2000


@dataclass(frozen=True)
class ShipmentRequest:
    carrier: str
    tracking_number: str
    lines: list[tuple[int, int]] | None  # (order line id, quantity); None: every unit not shipped yet
    shipped_at: datetime | None = None


def remaining(line: OrderLine) -> int:
    """Units of a line no shipment of ours covers yet (refunded-before-shipping units never ship)."""
    return max(0, line.quantity - line.released_qty - line.shipment_qty)


def _refund_of(line: OrderLine) -> int | None:
    return line.replacement_of_refund_id if line.kind == "replacement" else None


async def create_shipment(session: AsyncSession, order_id: int, request: ShipmentRequest) -> Shipment:
    """Record a parcel, move its stock and queue its upload, in the caller's transaction."""
    order = (await session.execute(select(Order).where(Order.id == order_id).with_for_update())).scalar_one_or_none()
    if order is None:
        raise NotFound(f"no order {order_id}")
    carrier = await carriers.carrier_by_code(session, request.carrier)
    if carrier is None:
        raise Invalid(f"carrier: unknown carrier {request.carrier!r}; GET /v1/carriers lists the codes, "
                      "PUT /v1/carriers adds one")
    lines = list((await session.execute(select(OrderLine).where(OrderLine.order_id == order.id)
                                        .order_by(OrderLine.line_no))).scalars())
    by_id = {line.id: line for line in lines}
    if request.lines is None:
        # The whole order: what the buyer paid for and is not in a parcel yet (replacements ship apart).
        wanted = [(line, remaining(line)) for line in lines if line.kind != "replacement" and remaining(line) > 0]
        if not wanted:
            raise Invalid(f"order {order.id} has nothing left to ship")
    else:
        wanted = []
        for line_id, quantity in request.lines:
            line = by_id.get(line_id)
            if line is None:
                raise Invalid(f"lines: order {order.id} has no line {line_id}")
            if quantity > remaining(line):
                raise Invalid(f"lines: line {line_id} has {remaining(line)} unit(s) left to ship, not {quantity} "
                              f"(ordered {line.quantity}, refunded before shipping {line.released_qty}, "
                              f"in shipments {line.shipment_qty})")
            wanted.append((line, quantity))
    refunds = {_refund_of(line) for line, _ in wanted}
    if len(refunds) > 1:
        raise Invalid("lines: a replacement ships in a parcel of its own, apart from other lines and other "
                      "after-sales")
    replacement = next(iter(refunds))
    if order.status == "cancelled":
        raise Invalid(f"order {order.id} is cancelled: nothing ships")
    if replacement is None:
        if order.status == "pending":
            raise Invalid(f"order {order.id} is not paid yet")
        if order.total_minor > 0 and order.refunded_minor >= order.total_minor:
            raise Invalid(f"order {order.id} is fully refunded: nothing ships")
    duplicate = (await session.execute(select(Shipment.id).where(
        Shipment.order_id == order.id, Shipment.tracking_number == request.tracking_number))).first()
    if duplicate is not None:
        raise Conflict(f"order {order.id} already has shipment {duplicate[0]} with tracking number "
                       f"{request.tracking_number}")
    now = utcnow()
    shipment = Shipment(order_id=order.id, store_id=order.store_id, carrier_id=carrier.id, carrier=carrier.code,
                        tracking_number=request.tracking_number, shipped_at=request.shipped_at or now,
                        status="pending", created_at=now, updated_at=now)
    session.add(shipment)
    await session.flush()
    for line, quantity in wanted:
        session.add(ShipmentLine(shipment_id=shipment.id, order_line_id=line.id, quantity=quantity))
        line.shipment_qty += quantity
    # Lock order: the order row above, then the skus in id order (as every multi-record writer does).
    await ledger.lock_skus(session, [line.sku_id for line in lines if line.sku_id is not None])
    await apply_stock_effects(session, order, lines)
    order.updated_at = now
    await queue_upload(session, shipment)
    return shipment


async def queue_upload(session: AsyncSession, shipment: Shipment) -> None:
    await upload_shipment.enqueue(session, {"shipment_id": shipment.id, "order_id": shipment.order_id,
                                            "attempts_before": shipment.attempts})


async def requeue_shipment(session: AsyncSession, shipment_id: int) -> Shipment:
    """An operator's retry: the upload runs again with a fresh attempt budget. Refused for an uploaded one."""
    shipment = (await session.execute(select(Shipment).where(Shipment.id == shipment_id)
                                      .with_for_update())).scalar_one_or_none()
    if shipment is None:
        raise NotFound(f"no shipment {shipment_id}")
    if shipment.status == "uploaded":
        raise Conflict(f"shipment {shipment_id} was uploaded already")
    shipment.status = "pending"
    shipment.updated_at = utcnow()
    await queue_upload(session, shipment)
    return shipment


async def lines_of(session: AsyncSession, shipment_ids: list[int]) -> dict[int, list[ShipmentLine]]:
    found: dict[int, list[ShipmentLine]] = {i: [] for i in shipment_ids}
    if shipment_ids:
        rows = (await session.execute(select(ShipmentLine).where(ShipmentLine.shipment_id.in_(shipment_ids))
                                      .order_by(ShipmentLine.shipment_id, ShipmentLine.id))).scalars()
        for row in rows:
            found[row.shipment_id].append(row)
    return found


# --- the upload job -----------------------------------------------------------------------------


def _dedupe(payload: dict) -> str:
    return f"shipment.upload:{payload['shipment_id']}"


def _per_order(payload: dict) -> str:
    # One upload per order at a time: on PDD the first parcel is the main waybill, the others extras.
    return f"shipment.upload:order:{payload['order_id']}"


@dataclass(frozen=True)
class _Work:
    store: Store
    upload: ShipmentUpload | None  # None: the company is not known yet
    carrier: Carrier
    replacement: bool


async def _prepare(session: AsyncSession, shipment: Shipment) -> _Work:
    order = await session.get(Order, shipment.order_id)
    store = await session.get(Store, shipment.store_id)
    carrier = await session.get(Carrier, shipment.carrier_id)
    order_lines = list((await session.execute(select(OrderLine).where(OrderLine.order_id == order.id)
                                              .order_by(OrderLine.line_no))).scalars())
    by_id = {line.id: line for line in order_lines}
    mine = (await lines_of(session, [shipment.id]))[shipment.id]
    siblings = (await session.execute(select(Shipment).where(
        Shipment.order_id == order.id, Shipment.id != shipment.id))).scalars().all()
    sale_lines = [line for line in order_lines if line.kind != "replacement"]
    refund_id = _refund_of(by_id[mine[0].order_line_id]) if mine else None
    after_sales_id = None
    if refund_id is not None:
        refund = await session.get(Refund, refund_id)
        after_sales_id = refund.external_id if refund is not None else None
    earlier = [s for s in siblings if s.id < shipment.id or s.status == "uploaded"]
    covered = sum(line.quantity for line in mine)
    whole = (refund_id is None and not earlier
             and covered == sum(max(0, line.quantity - line.released_qty) for line in sale_lines))
    completes = refund_id is None and all(remaining(line) == 0 for line in sale_lines)
    code = await carriers.company_of(session, carrier.id, store.platform)
    company = code.company if code is not None else None
    if company is None and Capability.CARRIER_LIST not in adapter_class(store.platform).capabilities:
        # No company list to read (Shopify, WooCommerce, a plug-in): the carrier's own name will do.
        company = carrier.name
    upload = None
    if company is not None:
        upload = ShipmentUpload(
            reference=f"coopsync-shipment-{shipment.id}", order_external_id=order.external_id,
            carrier=carrier.code, company=company, tracking_number=shipment.tracking_number,
            lines=tuple(UploadLine(external_line_id=by_id[line.order_line_id].external_line_id,
                                   quantity=line.quantity, line_quantity=by_id[line.order_line_id].quantity,
                                   external_sku_key=by_id[line.order_line_id].external_sku_key,
                                   listing_ref=dict(by_id[line.order_line_id].listing_ref or {}))
                        for line in mine),
            shipped_at=shipment.shipped_at, carrier_name=carrier.name,
            tracking_url=carrier_rules.tracking_link(carrier.tracking_url, shipment.tracking_number),
            whole_order=whole, completes_order=completes,
            other_tracking_numbers=tuple(s.tracking_number for s in siblings), after_sales_id=after_sales_id)
    return _Work(store, upload, carrier, refund_id is not None)


async def _finish(ctx: JobContext, shipment_id: int, attempt_id: int | None, started: float | None, *,
                  status: str | None, outcome: str, error: str | None = None, error_kind: str | None = None,
                  platform_ref: str | None = None, uncount: bool = False) -> None:
    """Record an attempt's end and the shipment's state, whatever happened."""
    async with ctx.db.transaction() as session:
        shipment = await session.get(Shipment, shipment_id, with_for_update=True)
        now = utcnow()
        if attempt_id is not None:
            attempt = await session.get(ShipmentAttempt, attempt_id, with_for_update=True)
            attempt.outcome = outcome
            attempt.error_kind = error_kind
            attempt.detail = (error or platform_ref or "")[:DETAIL_CHARS] or None
            attempt.duration_ms = int((time.monotonic() - started) * 1000) if started is not None else None
        if uncount and shipment.attempts > 0:
            shipment.attempts -= 1  # waiting for a human is not a failed attempt
        if status is not None:
            shipment.status = status
        shipment.error = error[:DETAIL_CHARS] if error else None
        if status == "uploaded":
            shipment.platform_ref = (platform_ref or "")[:255] or None
            shipment.uploaded_at = now
        shipment.updated_at = now


@job("shipment.upload", priority=50, max_attempts=JOB_MAX_ATTEMPTS, dedupe=_dedupe, lock=_per_order)
async def upload_shipment(ctx: JobContext) -> Outcome:
    shipment_id = int(ctx.job.payload["shipment_id"])
    attempts_before = int(ctx.job.payload.get("attempts_before", 0))
    async with ctx.db.transaction() as session:
        shipment = await session.get(Shipment, shipment_id)
        if shipment is None:
            return Dead(f"no shipment {shipment_id}")
        if shipment.status != "pending":
            return Done(f"shipment is {shipment.status}")
        work = await _prepare(session, shipment)
    store = work.store
    capabilities = adapter_class(store.platform).capabilities
    if Capability.SHIPMENTS not in capabilities:
        error = f"{store.platform} takes no shipment uploads through its API: record the waybill in its seller console"
        await _finish(ctx, shipment_id, None, None, status="failed", outcome="failed", error=error)
        return Done(error)
    if work.replacement and Capability.REPLACEMENT_SHIPMENTS not in capabilities:
        error = (f"{store.platform} takes no replacement parcels through this service: record the waybill with the "
                 "after-sale in the seller console (the stock moved already)")
        await _finish(ctx, shipment_id, None, None, status="failed", outcome="failed", error=error)
        return Done(error)
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
        upload = work.upload
        if upload is None:
            # The carrier has no code on this platform yet: read the platform's company list now.
            await carriers.refresh_with(ctx.db, store.platform, adapter)
            async with ctx.db.transaction() as session:
                upload = (await _prepare(session, await session.get(Shipment, shipment_id))).upload
    except AuthExpiredError as exc:
        await _finish(ctx, shipment_id, None, None, status=None, outcome="waiting",
                      error=f"waiting for the store to be authorised again: {exc}")
        return wait_for_authorization(store.id, exc)
    except TransientError as exc:
        return Retry(max(exc.retry_after_s or 0, backoff_s(ctx.job.attempts, base_s=BACKOFF_BASE_S,
                                                             cap_s=BACKOFF_CAP_S)), str(exc))
    except AdapterError as exc:
        error = f"the {store.platform} company list could not be read: {exc}"
        await _finish(ctx, shipment_id, None, None, status="failed", outcome="failed", error=error)
        return Done(error)
    if upload is None:
        error = (f"carrier {work.carrier.code} has no {store.platform} company code: set it with PUT /v1/carriers "
                 f"(\"platforms\": {{\"{store.platform}\": \"...\"}}), then retry the shipment")
        await _finish(ctx, shipment_id, None, None, status="failed", outcome="failed", error=error)
        return Done(error)

    # An attempt row is committed before the call, so even a crash mid-call leaves a trace.
    async with ctx.db.transaction() as session:
        shipment = await session.get(Shipment, shipment_id, with_for_update=True)
        shipment.attempts += 1
        last = (await session.execute(select(func.max(ShipmentAttempt.attempt_no)).where(
            ShipmentAttempt.shipment_id == shipment_id))).scalar_one_or_none() or 0
        attempt = ShipmentAttempt(shipment_id=shipment_id, attempt_no=last + 1, started_at=utcnow(),
                                  outcome="in_flight")
        session.add(attempt)
        await session.flush()
        attempt_id, used = attempt.id, shipment.attempts - attempts_before
    started = time.monotonic()
    try:
        result: ShipmentResult = await adapter.upload_shipment(upload)
    except AuthExpiredError as exc:
        await _finish(ctx, shipment_id, attempt_id, started, status=None, outcome="waiting", error_kind=exc.kind,
                      error=f"waiting for the store to be authorised again: {exc}", uncount=True)
        return wait_for_authorization(store.id, exc)
    except DependencyNotReady as exc:
        await _finish(ctx, shipment_id, attempt_id, started, status=None, outcome="retry", error_kind=exc.kind,
                      error=str(exc), uncount=True)
        return Retry(exc.retry_after_s or 60.0, str(exc), counts=False)
    except TransientError as exc:
        if used >= MAX_UPLOAD_ATTEMPTS:
            await _finish(ctx, shipment_id, attempt_id, started, status="dead", outcome="dead", error_kind=exc.kind,
                          error=f"gave up after {used} attempts: {exc}")
            return Dead(f"shipment {shipment_id}: {exc}")
        await _finish(ctx, shipment_id, attempt_id, started, status=None, outcome="retry", error_kind=exc.kind,
                      error=str(exc))
        delay = backoff_s(used, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)
        return Retry(max(delay, exc.retry_after_s or 0), str(exc))
    except AdapterError as exc:
        await _finish(ctx, shipment_id, attempt_id, started, status="failed", outcome="failed", error_kind=exc.kind,
                      error=str(exc))
        return Done(f"failed: {exc}")
    if result.status == "uploaded":
        await _finish(ctx, shipment_id, attempt_id, started, status="uploaded", outcome="uploaded",
                      platform_ref=result.platform_ref or ("already there" if result.already else None))
        log.info("shipment uploaded", extra={"shipment_id": shipment_id, "platform": store.platform,
                                             "already": result.already})
        return Done("uploaded (read back)" if result.already else "uploaded")
    await _finish(ctx, shipment_id, attempt_id, started, status="failed", outcome="failed", error_kind="refused",
                  error=result.error or "the platform refused the shipment")
    return Done(f"failed: {result.error}")



# --- what is left to ship -------------------------------------------------------------------------


def _greater(a, b):
    return case((a >= b, a), else_=b)


def to_ship_clause():
    """Orders the warehouse still has to ship something of: paid, with units neither our parcels nor the
    platform's own word (per line) cover; shipped on the platform but not in full by our parcels (a
    platform that marks the whole order shipped after the first one); or with a replacement still due."""
    line = OrderLine
    due = line.quantity - line.released_qty
    sale = line.kind != "replacement"
    platform_done = _greater(_greater(line.shipped_qty, line.shipment_qty), func.coalesce(line.shipped_quantity, 0))

    def some(*where):
        return select(line.id).where(line.order_id == Order.id, *where).exists()

    return or_(
        and_(Order.status == "paid", some(sale, due > platform_done)),
        and_(Order.status == "shipped", some(sale, line.shipment_qty > 0), some(sale, due > line.shipment_qty)),
        and_(Order.status != "cancelled", some(line.kind == "replacement",
                                               due > _greater(line.shipped_qty, line.shipment_qty))),
    )
