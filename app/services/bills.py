"""Bills in: an uploaded bill file (``POST /v1/stores/{id}/bills``), pulled settlement data (a resync of
``bills``, whose page loop is pull.py's) and the scheduled pull (``bills.pull``). Every way ends in
``domain.fees.import_lines``: each line once, matched to its order, the order's fee and subsidy recomputed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import BillLine, Capability
from adapters.bills import BillColumns, BillFormatError, parse_bill_csv
from adapters.errors import AdapterError, AuthExpiredError, ThrottledError, TransientError
from app.config import Settings
from app.domain.fees import ImportResult, import_lines
from app.domain.windows import poll_window
from app.jobs.catalogue import job, per_store
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.models import BillEntry, BillImport, Store, SyncCursor
from app.models.base import utcnow
from app.services.connections import connect
from app.services.errors import Invalid, NotFound
from app.services.platforms import UnknownPlatform, adapter_class

log = logging.getLogger("coopsync.bills")

STREAM = "bills"  # the sync cursor of scheduled bill pulls
PULL_INTERVAL = timedelta(hours=6)  # between scheduled pulls of one store
PULL_OVERLAP = timedelta(days=2)  # each pull reads this far back again: settlement data comes T+1 and late
PULL_LAG = timedelta(days=1)  # nor closer to now: a day's bill is complete the next day
FIRST_LOOKBACK = timedelta(days=3)
WINDOWS_PER_RUN = 40  # windows one scheduled pull may catch up
THROTTLE_WAIT_MAX_S = 60.0  # seconds slept in-process on a throttle; longer goes back to the job table
UNMATCHED_SHOWN = 100  # unmatched lines an upload's answer lists (the rest: GET .../bill-lines?unmatched=true)


class BillRejected(Invalid):
    """A bill file that cannot be read: ``line`` and ``column`` say where; nothing of it was imported."""

    def __init__(self, detail: str, *, line: int | None, column: str | None) -> None:
        super().__init__(detail)
        self.line = line
        self.column = column


@dataclass
class UploadResult:
    bill: BillImport
    duplicate: bool  # the same file was imported before: nothing changed
    unmatched: list[BillEntry] = field(default_factory=list)
    duplicate_lines: int = 0


def columns_for(store: Store) -> BillColumns:
    """The store's own mapping (``settings.bill_columns``), else its platform's built-in one."""
    own = store.options.bill_columns
    if own is not None:
        return own
    try:
        builtin = adapter_class(store.platform).bill_columns
    except UnknownPlatform:
        builtin = None
    if builtin is None:
        raise Invalid(f"{store.platform} has no built-in bill mapping: set the store's settings.bill_columns "
                      "(README, Bills)")
    return builtin


async def upload_bill(session: AsyncSession, store_id: int, content: bytes, name: str | None) -> UploadResult:
    """Import one bill file in the caller's transaction. The same file again answers its first import and
    changes nothing; a file that cannot be read raises ``BillRejected`` before anything is written."""
    store = await session.get(Store, store_id)
    if store is None:
        raise NotFound(f"no store {store_id}")
    columns = columns_for(store)
    # Imports of one store one at a time (two uploads of one file must not both insert it).
    await session.execute(select(Store.id).where(Store.id == store_id).with_for_update())
    digest = hashlib.sha256(content).hexdigest()
    earlier = (await session.execute(select(BillImport).where(
        BillImport.store_id == store_id, BillImport.digest == digest))).scalar_one_or_none()
    if earlier is not None:
        return UploadResult(earlier, duplicate=True)
    try:
        lines = parse_bill_csv(content, columns, source="bill")
    except BillFormatError as exc:
        raise BillRejected(f"the bill cannot be read, nothing was imported: {exc.message}", line=exc.line,
                           column=exc.column) from None
    bill = BillImport(store_id=store_id, name=(name or None) and name[:255], digest=digest, lines=len(lines))
    session.add(bill)
    await session.flush()
    result = await import_lines(session, store, lines, bill_import_id=bill.id)
    bill.new_lines, bill.matched = result.new, result.matched
    log.info("bill imported", extra={"store_id": store_id, "bill_import_id": bill.id, "lines": len(lines),
                                     "new": result.new, "unmatched": len(result.unmatched)})
    return UploadResult(bill, duplicate=False, unmatched=result.unmatched, duplicate_lines=result.duplicates)


async def apply_bill_page(session: AsyncSession, store: Store, lines: list[BillLine]) -> ImportResult:
    """One page of pulled settlement data, in the caller's transaction (a resync saves its position with it)."""
    return await import_lines(session, store, lines)


# -- scheduled pulls -----------------------------------------------------------------------------

def _pulls_bills(platform: str) -> bool:
    try:
        return Capability.BILLS in adapter_class(platform).capabilities
    except UnknownPlatform:
        return False


async def schedule_bill_pulls(session: AsyncSession, now: datetime, settings: Settings) -> None:
    """Queue a pull of every connected store that pulls bills and has not for ``PULL_INTERVAL``
    (stores whose polling is off are left alone too)."""
    started = dict((await session.execute(select(SyncCursor.store_id, SyncCursor.last_started_at).where(
        SyncCursor.stream == STREAM))).all())
    for store in (await session.execute(select(Store).order_by(Store.id))).scalars():
        if store.auth_status != "ok" or store.options.poll_interval_s <= 0 or not _pulls_bills(store.platform):
            continue
        last = started.get(store.id)
        if last is None or now - last >= PULL_INTERVAL:
            await handle_bill_pull.enqueue(session, {"store_id": store.id})


async def _cursor(session: AsyncSession, store_id: int) -> SyncCursor:
    row = (await session.execute(select(SyncCursor).where(
        SyncCursor.store_id == store_id, SyncCursor.stream == STREAM).with_for_update())).scalar_one_or_none()
    if row is None:
        row = SyncCursor(store_id=store_id, stream=STREAM)
        session.add(row)
        await session.flush()
    return row


async def _page(adapter, window, cursor, sleep):
    """One page; a short throttle is waited out here, a longer one ends the run for the job table."""
    while True:
        try:
            return await adapter.fetch_bills(window, cursor)
        except ThrottledError as exc:
            wait = exc.retry_after_s or 1.0
            if wait > THROTTLE_WAIT_MAX_S:
                raise
            await sleep(wait)


@job("bills.pull", dedupe=per_store("bills.pull"), lock=per_store("bills.pull"), schedule=schedule_bill_pulls)
async def handle_bill_pull(ctx: JobContext) -> Outcome:
    """Pull the store's settlement data from its high water (less an overlap) to a day ago; the cursor moves
    in the same commit as a window's last lines."""
    store_id = int(ctx.job.payload["store_id"])
    now = utcnow()
    async with ctx.db.transaction() as session:
        store = await session.get(Store, store_id)
        if store is None:
            return Done("store gone")
        row = await _cursor(session, store_id)
        row.last_started_at = now
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
    except AuthExpiredError as exc:
        return Done(f"store needs authorisation: {exc}")  # pulls start again once it is authorised
    except TransientError as exc:
        return Retry(exc.retry_after_s or backoff_s(ctx.job.attempts, base_s=60, cap_s=3600), str(exc))
    sleep = ctx.services.get("sleep", asyncio.sleep)
    new = 0
    try:
        for _ in range(WINDOWS_PER_RUN):
            async with ctx.db.read() as session:
                high_water = (await session.execute(select(SyncCursor.high_water).where(
                    SyncCursor.store_id == store_id, SyncCursor.stream == STREAM))).scalar_one_or_none()
            window = poll_window(high_water, now, overlap=PULL_OVERLAP, lag=PULL_LAG, max_window=adapter.bill_window,
                                 first_lookback=FIRST_LOOKBACK)
            if window is None or (high_water is not None and window.end <= high_water):
                break
            cursor = None
            while True:
                page = await _page(adapter, window, cursor, sleep)
                async with ctx.db.transaction() as session:
                    result = await apply_bill_page(session, store, page.items)
                    new += result.new
                    if page.next_cursor is None:
                        row = await _cursor(session, store_id)
                        row.high_water = window.end
                        row.last_succeeded_at = utcnow()
                        row.last_error = None
                        row.consecutive_failures = 0
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
                await ctx.extend_lease()
    except AuthExpiredError as exc:
        return Done(f"store needs authorisation: {exc}")
    except ThrottledError as exc:
        return Retry(exc.retry_after_s or 60.0, str(exc), counts=False)
    except TransientError as exc:
        return Retry(exc.retry_after_s or backoff_s(ctx.job.attempts, base_s=60, cap_s=3600), str(exc))
    except AdapterError as exc:
        async with ctx.db.transaction() as session:
            row = await _cursor(session, store_id)
            row.last_error = str(exc)[:1000]
            row.consecutive_failures += 1
        log.warning("bill pull failed", extra={"store_id": store_id, "error": str(exc)[:300]})
        return Done(f"failed: {exc}")
    return Done(f"{new} new bill line(s)")
