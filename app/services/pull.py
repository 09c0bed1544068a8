"""Pull is the truth: operator resyncs and scheduled polls fetch snapshots page by page through the
adapter and reconcile them exactly as webhooks are. Each page is applied in one transaction that
also saves the position reached (resync) or advances the cursor (poll), so a killed process goes
on from the last saved page: nothing is missed, nothing applied twice."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, OrderSnapshot, Page, RefundSnapshot, TimeWindow
from adapters.errors import AdapterError, AuthExpiredError, ThrottledError, TransientError
from app.domain import ledger, new_orders
from app.db import is_sqlite
from app.domain.reconcile import lock_for_snapshots, upsert_order, upsert_refund
from app.models import Order, Refund, Resync, Store, SyncCursor
from app.models.base import utcnow
from app.services.platforms import adapter_class
from app.config import Settings
from app.domain.windows import poll_window, split_windows
from app.jobs.catalogue import job, per_store
from app.jobs.outcomes import Dead, Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.services.errors import Conflict, Invalid, NotFound
from app.services.push import push_store
from app.services import bills
from app.services.connections import connect, wait_for_authorization

log = logging.getLogger("coopsync.pull")

RESOURCE_CAPABILITY = {"orders": Capability.ORDERS_PULL, "refunds": Capability.REFUNDS_PULL,
                       "inventory": Capability.STOCK_PUSH, "bills": Capability.BILLS}
MAX_RESYNC_SPAN = timedelta(days=92)  # platforms keep about three months of incremental history
THROTTLE_WAIT_MAX_S = 60.0  # seconds we sleep in-process on a throttle; longer waits go back to the job table
TRANSIENT_TRIES = 3  # in-loop tries of one page before the job is re-queued with its position saved
FIRST_POLL_LOOKBACK = timedelta(hours=1)  # how far back the very first poll of a store looks
POLL_WINDOWS_PER_RUN = 96  # windows one poll run may catch up before yielding the worker


@dataclass
class Counts:
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class StopPull(Exception):
    """Raised to end a pull with an outcome (auth expired, long throttle)."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


async def fetch_page(adapter, resource: str, window: TimeWindow, cursor: str | None,
                     sleep=asyncio.sleep) -> Page:
    """One page; throttling waits and goes on (never fails the pull); a short outage is retried."""
    tries = 0
    while True:
        try:
            if resource == "orders":
                return await adapter.fetch_orders(window, cursor)
            if resource == "bills":
                return await adapter.fetch_bills(window, cursor)
            return await adapter.fetch_refunds(window, cursor)
        except ThrottledError as exc:
            wait = exc.retry_after_s or 1.0
            if wait > THROTTLE_WAIT_MAX_S:
                raise StopPull(Retry(wait, f"throttled: {exc}", counts=False), str(exc)) from exc
            await sleep(wait)
        except TransientError as exc:
            tries += 1
            if tries >= TRANSIENT_TRIES:
                raise StopPull(Retry(exc.retry_after_s or backoff_s(tries, base_s=2, cap_s=120),
                                     f"unavailable: {exc}", counts=True), str(exc)) from exc
            await sleep(exc.retry_after_s or backoff_s(tries, base_s=0.5, cap_s=10))


async def _missing_orders(ctx: JobContext, store: Store, refunds: list[RefundSnapshot], adapter) -> list[OrderSnapshot]:
    """Orders that pulled refunds name but that are not here yet: fetch them (outside a transaction)."""
    wanted = {r.order_external_id for r in refunds}
    if not wanted:
        return []
    async with ctx.db.read() as session:
        have = set((await session.execute(select(Order.external_id).where(
            Order.store_id == store.id, Order.external_id.in_(wanted)))).scalars().all())
    fetched = []
    for external_id in sorted(wanted - have):
        snap = await adapter.fetch_order(external_id)
        if snap is not None:
            fetched.append(snap)
    return fetched


async def apply_items(session, store: Store, resource: str, items: list, counts: Counts, via: str,
                      extra_orders: list[OrderSnapshot] = ()) -> None:
    """Apply one page; each item in a savepoint so one poison record never blocks the rest."""
    held = await _held_versions(session, store.id, resource, items)
    if not is_sqlite(session):
        newer = [snap for snap in items if not _not_newer(snap, held.get(snap.external_id))]
        await lock_for_snapshots(session, [(store.id, list(extra_orders) + (newer if resource == "orders" else []),
                                            newer if resource != "orders" else [])])
    for snap in extra_orders:
        async with session.begin_nested():
            await upsert_order(session, store, snap, via=via)
    fresh = await _Together.start(session, store, items, via) if resource == "orders" and not extra_orders else None
    for snap in items:
        counts.fetched += 1
        if _not_newer(snap, held.get(snap.external_id)):
            counts.unchanged += 1  # what upsert_* would conclude, without its locks and savepoint
            continue
        if fresh is not None:
            if fresh.takes(snap):
                continue
            await fresh.flush(counts)
        await _apply_one(session, store, resource, snap, counts, via)
        if fresh is not None:
            await fresh.seen_alone(snap)
    if fresh is not None:
        await fresh.flush(counts)


class _Together:
    """New orders of a page that go the set-based way (``new_orders``), in runs between the records
    applied one by one; a run that fails is applied one by one, so a poison record fails alone."""

    def __init__(self, session, store: Store, via: str, held: new_orders.Held, seen: Counter) -> None:
        self.session, self.store, self.via, self.held, self.seen = session, store, via, held, seen
        self.run: list[OrderSnapshot] = []

    @classmethod
    async def start(cls, session, store: Store, items: list, via: str) -> "_Together":
        held = await new_orders.read_held(session, [(store.id, snap) for snap in items])
        return cls(session, store, via, held, Counter(snap.external_id for snap in items))

    def takes(self, snap: OrderSnapshot) -> bool:
        if self.seen[snap.external_id] == 1 and new_orders.fits(self.held, self.store.id, snap):
            self.run.append(snap)
            return True
        return False

    async def flush(self, counts: Counts) -> None:
        run, self.run = self.run, []
        if not run:
            return
        try:
            async with self.session.begin_nested():
                await new_orders.insert_new_orders(self.session, self.held, [(self.store, s, self.via) for s in run])
            counts.created += len(run)
            return
        except Exception as exc:
            ledger.forget_locks(self.session)
            if not new_orders.falls_back(exc):
                raise  # the database's trouble (a deadlock, a lost connection): the page is tried again
            await new_orders.refresh_held(self.session, self.held, set().union(
                *(new_orders.line_keys(self.store.id, snap) for snap in run)), [])
            log.warning("set-based apply of %d pulled orders failed; applying them one by one", len(run),
                        exc_info=True)
        for snap in run:
            await _apply_one(self.session, self.store, "orders", snap, counts, self.via)

    async def seen_alone(self, snap: OrderSnapshot) -> None:
        """A record applied one by one may have created or changed listings the next ones use."""
        await new_orders.refresh_held(self.session, self.held, new_orders.line_keys(self.store.id, snap), [])


async def _apply_one(session, store: Store, resource: str, snap, counts: Counts, via: str) -> None:
    """One record in a savepoint of its own; a failure is counted, not raised."""
    try:
        try:
            async with session.begin_nested():
                if resource == "orders":
                    result = await upsert_order(session, store, snap, via=via)
                else:
                    result = await upsert_refund(session, store, snap, via=via, wait_for_order=False)
        except BaseException:
            ledger.forget_locks(session)  # the savepoint's stock changes are gone
            raise
        setattr(counts, result.change, getattr(counts, result.change) + 1)
    except (AdapterError, ValueError) as exc:
        counts.failed += 1
        counts.errors.append(f"{getattr(snap, 'external_id', '?')}: {exc}"[:300])
        log.warning("pulled record failed", extra={"store_id": store.id, "error": str(exc)[:300]})


async def _held_versions(session, store_id: int, resource: str, items: list) -> dict[str, tuple]:
    """(platform updated_at, status) of the page's records we already hold, in one query."""
    ids = [snap.external_id for snap in items]
    if not ids:
        return {}
    model = Order if resource == "orders" else Refund
    rows = (await session.execute(select(model.external_id, model.platform_updated_at, model.status).where(
        model.store_id == store_id, model.external_id.in_(ids)))).all()
    return {external_id: (updated_at, status) for external_id, updated_at, status in rows}


def _not_newer(snap, held: tuple | None) -> bool:
    """The stale-skip rule of reconcile: nothing to do for a snapshot that is not newer than ours.
    Orders that embed refunds go the full way (their refunds may be new)."""
    if held is None or getattr(snap, "refunds", None):
        return False
    updated_at, status = held
    return snap.updated_at < updated_at or (snap.updated_at == updated_at and str(snap.status) == status)


async def _store_and_adapter(ctx: JobContext, store_id: int):
    """The store and its connected adapter; raises ``AuthExpiredError`` while it waits for authorisation."""
    async with ctx.db.read() as session:
        store = await session.get(Store, store_id)
    if store is None:
        return None, None
    return store, await connect(ctx.db, store, ctx.services.get("http"))


# -- operator resyncs --------------------------------------------------------------------------

async def create_resync(session: AsyncSession, store_id: int, resource: str, since: datetime | None,
                        until: datetime | None) -> Resync:
    """Validate and queue a resync in the caller's transaction (the API and the CLI share it)."""
    store = await session.get(Store, store_id)
    if store is None:
        raise NotFound(f"no store {store_id}")
    capabilities = adapter_class(store.platform).capabilities
    if RESOURCE_CAPABILITY[resource] not in capabilities:
        raise Invalid(f"{store.platform} stores cannot resync {resource}")
    if resource != "inventory":
        if since is None or until is None:
            raise Invalid("since and until are required for orders, refunds and bills")
        if until <= since:
            raise Invalid("until must be after since")
        if until - since > MAX_RESYNC_SPAN:
            raise Invalid(f"a resync covers at most {MAX_RESYNC_SPAN.days} days")
        windows = len(split_windows(since, until, _window_of(adapter_class(store.platform), resource)))
    else:
        windows = 1
    resync = Resync(store_id=store_id, resource=resource, since=since, until=until,
                    position={"window": 0, "cursor": None, "windows": windows})
    session.add(resync)
    await session.flush()
    await handle_resync.enqueue(session, {"resync_id": resync.id, "store_id": store_id, "resource": resource})
    return resync


async def cancel_resync(session: AsyncSession, resync_id: int) -> Resync:
    """Ask a resync to stop: a queued one is cancelled now, a running one at its next page."""
    resync = await session.get(Resync, resync_id, with_for_update=True)
    if resync is None:
        raise NotFound(f"no resync {resync_id}")
    if resync.status in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"resync {resync_id} already {resync.status}")
    resync.cancel_requested = True
    if resync.status == "queued":
        resync.status, resync.finished_at = "cancelled", utcnow()
    return resync


def _window_of(adapter, resource: str) -> timedelta:
    """How wide one window of the resource's list API may be (bills: ``bill_window``)."""
    return adapter.bill_window if resource == "bills" else adapter.max_window


def _resync_lock(payload: dict) -> str:
    # An inventory resync pushes the store's stock itself: it shares the lock of the store's push
    # jobs, so the two never set the same listings at once.
    if payload["resource"] == "inventory":
        return f"stock.push:{payload['store_id']}"
    return f"resync:{payload['store_id']}:{payload['resource']}"


@job("resync.run", max_attempts=50, lock=_resync_lock)
async def handle_resync(ctx: JobContext) -> Outcome:
    resync_id = int(ctx.job.payload["resync_id"])
    async with ctx.db.transaction() as session:
        resync = await session.get(Resync, resync_id, with_for_update=True)
        if resync is None or resync.status in ("succeeded", "failed", "cancelled"):
            return Done("nothing to do")
        if resync.cancel_requested:
            resync.status, resync.finished_at = "cancelled", utcnow()
            return Done("cancelled")
        resync.status = "running"
        resync.started_at = resync.started_at or utcnow()
        resource, since, until, position = resync.resource, resync.since, resync.until, dict(resync.position or {})
    try:
        store, adapter = await _store_and_adapter(ctx, resync.store_id)
    except AuthExpiredError as exc:
        await _note(ctx, resync_id, f"waiting for the store to be authorised again: {exc}")
        return wait_for_authorization(resync.store_id, exc)
    except TransientError as exc:
        return Retry(exc.retry_after_s or backoff_s(ctx.job.attempts), str(exc))
    if store is None:
        return await _finish(ctx, resync_id, "failed", "store no longer exists")
    if resource == "inventory":
        return await _resync_inventory(ctx, resync_id, store.id)
    windows = split_windows(since, until, _window_of(adapter, resource))
    index = int(position.get("window", 0))
    cursor = position.get("cursor")
    created_since_analyze = 0
    while index < len(windows):
        window = windows[index]
        try:
            page = await fetch_page(adapter, resource, window, cursor, ctx.services.get("sleep", asyncio.sleep))
            extra = await _missing_orders(ctx, store, page.items, adapter) if resource == "refunds" else []
        except StopPull as stop:
            await _note(ctx, resync_id, str(stop))
            return stop.outcome
        except AuthExpiredError as exc:
            # The position is kept: the resync goes on from this page once the store is authorised.
            await _note(ctx, resync_id, f"waiting for the store to be authorised again: {exc}")
            return wait_for_authorization(store.id, exc)
        except AdapterError as exc:
            return await _finish(ctx, resync_id, "failed", str(exc))
        next_index, next_cursor = (index, page.next_cursor) if page.next_cursor else (index + 1, None)
        counts = Counts()
        async with ctx.db.transaction() as session:
            resync = await session.get(Resync, resync_id, with_for_update=True)
            if resource == "bills":
                # Lines new to us are "created", lines held already "unchanged"; "updated": orders whose
                # fee or subsidy the page recomputed.
                taken = await bills.apply_bill_page(session, store, page.items)
                counts.fetched, counts.created, counts.unchanged = taken.lines, taken.new, taken.duplicates
                counts.updated = len(taken.orders)
            else:
                await apply_items(session, store, resource, page.items, counts, "resync", extra)
            # The position is saved in the same transaction as the page's records.
            resync.pages += 1
            resync.fetched += counts.fetched
            resync.created += counts.created
            resync.updated += counts.updated
            resync.unchanged += counts.unchanged
            resync.failed += counts.failed
            resync.position = {"window": next_index, "cursor": next_cursor, "windows": len(windows)}
            if counts.errors:
                resync.error = "; ".join(counts.errors)[:2000]
            cancel = resync.cancel_requested
            if cancel:
                resync.status, resync.finished_at = "cancelled", utcnow()
        if cancel:
            return Done("cancelled")
        created_since_analyze += counts.created
        if created_since_analyze >= ANALYZE_EVERY_CREATED and not ctx.db.is_sqlite:
            await _analyze_after_bulk_load(ctx)
            created_since_analyze = 0
        await ctx.extend_lease()
        index, cursor = next_index, next_cursor
    return await _finish(ctx, resync_id, "succeeded", None)


# A first resync writes orders faster than autovacuum notices: PostgreSQL planned the page's lookups on a
# table it thought empty (34 ms a query at 20,000 orders, 1 ms once analysed). So a resync analyses the
# tables it fills after every so many new orders, as a bulk load should.
ANALYZE_EVERY_CREATED = 10_000
_BULK_LOADED_TABLES = ("sales_order", "order_line", "stock_movement", "refund", "refund_line")


async def _analyze_after_bulk_load(ctx: JobContext) -> None:
    async with ctx.db.transaction() as session:
        await session.execute(text("ANALYZE " + ", ".join(_BULK_LOADED_TABLES)))


async def _resync_inventory(ctx: JobContext, resync_id: int, store_id: int) -> Outcome:
    report, outcome = await push_store(ctx, store_id, force=True)
    async with ctx.db.transaction() as session:
        resync = await session.get(Resync, resync_id, with_for_update=True)
        resync.results = report
        resync.pages, resync.fetched = 1, len(report)
        resync.updated = sum(1 for r in report if r.get("ok"))
        resync.failed = sum(1 for r in report if not r.get("ok"))
    if isinstance(outcome, Retry):
        return outcome
    return await _finish(ctx, resync_id, "succeeded" if not isinstance(outcome, Dead) else "failed",
                         getattr(outcome, "error", None))


async def _note(ctx: JobContext, resync_id: int, message: str) -> None:
    async with ctx.db.transaction() as session:
        resync = await session.get(Resync, resync_id, with_for_update=True)
        resync.error = message[:2000]


async def _finish(ctx: JobContext, resync_id: int, status: str, error: str | None) -> Outcome:
    async with ctx.db.transaction() as session:
        resync = await session.get(Resync, resync_id, with_for_update=True)
        if resync.status not in ("cancelled",):
            resync.status = status
        if error:
            resync.error = error[:2000]
        resync.finished_at = utcnow()
    return Done(status) if status != "failed" else Done(f"failed: {error}")


# -- scheduled polling -----------------------------------------------------------------------

async def _cursor(session, store_id: int, stream: str) -> SyncCursor:
    row = (await session.execute(select(SyncCursor).where(
        SyncCursor.store_id == store_id, SyncCursor.stream == stream).with_for_update())).scalar_one_or_none()
    if row is None:
        row = SyncCursor(store_id=store_id, stream=stream)
        session.add(row)
        await session.flush()
    return row


async def poll_stream(ctx: JobContext, store: Store, adapter, stream: str, now: datetime) -> Counts:
    counts = Counts()
    settings = ctx.settings
    own_overlap = store.options.poll_overlap_s
    overlap = timedelta(seconds=settings.poll_overlap_s if own_overlap is None else own_overlap)
    lag = timedelta(seconds=settings.poll_lag_s)
    for _ in range(POLL_WINDOWS_PER_RUN):
        async with ctx.db.read() as session:
            high_water = (await session.execute(select(SyncCursor.high_water).where(
                SyncCursor.store_id == store.id, SyncCursor.stream == stream))).scalar_one_or_none()
        window = poll_window(high_water, now, overlap=overlap, lag=lag, max_window=adapter.max_window,
                             first_lookback=FIRST_POLL_LOOKBACK)
        if window is None or (high_water is not None and window.end <= high_water):
            break  # caught up
        cursor = None
        while True:
            page = await fetch_page(adapter, stream, window, cursor, ctx.services.get("sleep", asyncio.sleep))
            extra = await _missing_orders(ctx, store, page.items, adapter) if stream == "refunds" else []
            async with ctx.db.transaction() as session:
                row = await _cursor(session, store.id, stream)
                await apply_items(session, store, stream, page.items, counts, "poll", extra)
                row.last_started_at = row.last_started_at or now
                if page.next_cursor is None:
                    # The cursor advances in the same commit as the last records of its window.
                    row.high_water = window.end
                    row.last_succeeded_at = utcnow()
                    row.last_error = None
                    row.consecutive_failures = 0
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            await ctx.extend_lease()
    return counts


async def schedule_polls(session: AsyncSession, now: datetime, settings: Settings) -> None:
    """Queue a poll of every connected store whose interval has passed since its last one."""
    for store in (await session.execute(select(Store).order_by(Store.id))).scalars():
        interval = store.options.poll_interval_s
        if interval > 0 and store.auth_status == "ok" and (
                store.last_poll_at is None or now - store.last_poll_at >= timedelta(seconds=interval)):
            await handle_poll.enqueue(session, {"store_id": store.id})


# One queued poll per store (dedupe) and one running, across processes (lock).
@job("sync.poll", dedupe=per_store("sync.poll"), lock=per_store("sync.poll"), schedule=schedule_polls)
async def handle_poll(ctx: JobContext) -> Outcome:
    try:
        store, adapter = await _store_and_adapter(ctx, int(ctx.job.payload["store_id"]))
    except AuthExpiredError as exc:
        return Done(f"store needs authorisation: {exc}")  # polls start again once it is authorised
    except TransientError as exc:
        return Retry(exc.retry_after_s or backoff_s(ctx.job.attempts, base_s=10, cap_s=900), str(exc))
    if store is None:
        return Done("store gone")
    capabilities = adapter_class(store.platform).capabilities
    now = utcnow()
    streams = [s for s, cap in (("orders", Capability.ORDERS_PULL), ("refunds", Capability.REFUNDS_PULL))
               if cap in capabilities]
    outcome: Outcome = Done()
    try:
        for stream in streams:
            await poll_stream(ctx, store, adapter, stream, now)
    except StopPull as stop:
        outcome = stop.outcome
    except AuthExpiredError as exc:
        outcome = Done(f"store needs authorisation: {exc}")
    except AdapterError as exc:
        async with ctx.db.transaction() as session:
            for stream in streams:
                row = await _cursor(session, store.id, stream)
                row.last_error = str(exc)[:1000]
                row.consecutive_failures += 1
        outcome = Retry(backoff_s(ctx.job.attempts, base_s=10, cap_s=900), str(exc))
    async with ctx.db.transaction() as session:
        row = await session.get(Store, store.id, with_for_update=True)
        row.last_poll_at = now
    return outcome
