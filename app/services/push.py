"""Stock push: every change of available stock queues one coalesced push per store of that sku.

One job per store may be queued and one may run (``dedupe_key`` / ``lock_key``): the latest
quantity always wins, a slow push never piles up work, and a change made while a push is in
flight queues exactly one more.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, TransientError
from app.domain import ledger
from app.domain.allocation import ShopDemand, allocate, settle_quotas
from app.metrics import STOCK_PUSHES
from app.models import Listing, Sku, Store
from app.models.base import utcnow
from app.services.connections import AUTH_KINDS, connect, wait_for_authorization
from app.services.platforms import store_capabilities
from app.domain import outbox
from app.jobs.catalogue import job, per_store
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.jobs.queue import later
from app.services.errors import Invalid

log = logging.getLogger("coopsync.push")

PUSH_DEBOUNCE_S = 0.05  # seconds a push waits so a burst of sales goes out as one figure; see configure()
CONFLICT_RETRY_S = 0.05  # seconds before a push refused by compare-and-set is tried again
CONFLICT_PATIENCE_S = 10.0  # seconds of conflicts before the platform's own count is believed


def configure(debounce_s: float) -> None:
    """Apply the process's settings (called at start-up; the ledger queues pushes without settings)."""
    global PUSH_DEBOUNCE_S
    PUSH_DEBOUNCE_S = max(0.0, debounce_s)


async def queue_stock_push(session: AsyncSession, sku_id: int) -> None:
    await queue_pushes_for_skus(session, {sku_id})


async def queue_pushes_for_skus(session: AsyncSession, sku_ids: set[int]) -> None:
    """Queue one push per store that lists any of ``sku_ids`` (the ledger's stock-changed outbox)."""
    store_ids = (await session.execute(
        select(Listing.store_id).where(Listing.sku_id.in_(sorted(sku_ids))).distinct().order_by(Listing.store_id)
    )).scalars().all()
    for store_id in store_ids:
        await queue_store_push(session, store_id)


outbox.on_stock_changed(queue_pushes_for_skus)


async def set_allocation(session: AsyncSession, sku: Sku, policy: dict) -> None:
    """Set what each shop is offered of ``sku`` (``mode`` shares or shared) and re-plan every shop of it
    at once: the quotas are set afresh here, in the caller's transaction, so every shop's push sees
    the new policy whole (never one shop's new part beside another's old one)."""
    if policy["mode"] == "shares" and not any(policy["shares"].values()):
        raise Invalid("shares: a shares policy needs at least one store with a positive weight")
    for store_id in sorted({*policy["shares"], *policy["caps"]}):
        if not store_id.isdigit() or await session.get(Store, int(store_id)) is None:
            raise Invalid(f"shares/caps: no store {store_id!r}")
    sku.allocation = policy if policy["mode"] != "shared" else None
    await rebalance(session, sku)


async def rebalance(session: AsyncSession, sku: Sku) -> None:
    """Split the available stock of ``sku`` afresh over its shops by its policy (explicit request or a
    policy change) and push every shop of it."""
    listings = (await session.execute(select(Listing).where(Listing.sku_id == sku.id).order_by(Listing.id)
                                      .execution_options(populate_existing=True))).scalars().all()
    for listing in listings:
        listing.quota = None  # settle_quotas then splits the available stock afresh
    if sku.allocation:
        await _settle(session, sku, listings)
    await queue_stock_push(session, sku.id)


async def _settle(session: AsyncSession, sku: Sku, listings: list[Listing]) -> None:
    """Bring the quotas of ``sku``'s listings up to date with its available stock (share policy only)."""
    demands = [ShopDemand(l.id, l.store_id) for l in listings]
    quotas = settle_quotas(sku.on_hand - sku.reserved, {l.id: l.quota for l in listings}, demands, sku.allocation)
    for listing in listings:
        if listing.quota != quotas.get(listing.id):
            listing.quota = quotas.get(listing.id)


async def queue_store_push(session: AsyncSession, store_id: int, *, force: bool = False,
                           debounce_s: float | None = None) -> None:
    """One queued push per store; changes inside the debounce window ride on the same push."""
    wait = PUSH_DEBOUNCE_S if debounce_s is None else debounce_s
    await handle_stock_push.enqueue(session, {"store_id": store_id, "force": force},
                                    run_after=later(wait) if wait > 0 else None)


@dataclass(frozen=True)
class PlannedPush:
    listing_id: int
    external_sku_key: str
    quantity: int
    listing_ref: dict
    expected: int | None  # what the platform should show now (compare-and-set), None for a blind set
    sold_snapshot: int  # sold_since_push when planned; a successful set accounts for exactly these
    previous: int | None  # pushed_quantity before this push
    believed: int | None = None  # pushed_quantity - sold_since_push when planned (None: never pushed)
    delta: int | None = None  # an increment (STOCK_DELTA platforms), sent under ``key``
    key: str | None = None
    guarded: bool = False  # share policy: a raise waits for sales that may be unheard


def outstanding(listing: Listing) -> int:
    """What a shop can still sell of a listing plus what it sold that we have not heard of yet."""
    if listing.pushed_quantity is None:
        return 0
    return max(0, listing.pushed_quantity - listing.sold_since_push)


def _believed(listing: Listing) -> int | None:
    return None if listing.pushed_quantity is None else listing.pushed_quantity - listing.sold_since_push


async def desired_quantities(session: AsyncSession, sku_ids: set[int]) -> dict[int, int]:
    """Sellable quantity per listing id for every listing of ``sku_ids``, by each sku's policy.

    Under a share policy a listing is offered its quota (less the store's safety stock): the shops'
    own sales use quotas up, so sales that trail behind never move a figure. A raise is also capped by
    the available stock less what the *other* listings still have outstanding, so a rebalance raises a
    shop only once the shops whose part shrank were pushed down; a figure is never lowered below its
    quota by that cap. The quotas are brought up to date here (the sku rows are locked first)."""
    if not sku_ids:
        return {}
    await ledger.lock_skus(session, sku_ids)
    skus = (await session.execute(select(Sku).where(Sku.id.in_(sku_ids)))).scalars().all()
    rows = (await session.execute(
        select(Listing, Store).join(Store, Store.id == Listing.store_id).where(Listing.sku_id.in_(sku_ids))
        .order_by(Listing.id).execution_options(populate_existing=True)
    )).all()
    by_sku: dict[int, list[ShopDemand]] = {}
    listings_of: dict[int, list[Listing]] = {}
    for listing, store in rows:
        safety = store.options.safety_stock
        by_sku.setdefault(listing.sku_id, []).append(ShopDemand(listing.id, store.id, safety))
        listings_of.setdefault(listing.sku_id, []).append(listing)
    result: dict[int, int] = {}
    for sku in skus:
        available = sku.on_hand - sku.reserved
        listings = listings_of.get(sku.id, [])
        if (sku.allocation or {}).get("mode", "shared") == "shared":
            for listing in listings:
                if listing.quota is not None:
                    listing.quota = None
            result.update(allocate(available, by_sku.get(sku.id, []), None))
            continue
        await _settle(session, sku, listings)
        safety = {d.listing_id: d.safety_stock for d in by_sku.get(sku.id, [])}
        committed = {l.id: outstanding(l) for l in listings}
        total = sum(committed.values())
        for listing in listings:
            # Sales learnt only from the platform's count have not used up the quota yet: they will
            # when their orders arrive; until then they are held back from the offer.
            offer = max(0, (listing.quota or 0) - listing.unheard_sales - safety[listing.id])
            believed = _believed(listing)
            if believed is not None and offer > believed:
                headroom = max(0, available - (total - committed[listing.id]))
                offer = max(believed, min(offer, headroom))
            result[listing.id] = offer
    return result


async def plan_store_push(session: AsyncSession, store_id: int, *, force: bool, cas: bool = False,
                          delta: bool = False, idempotent: bool = False) -> list[PlannedPush]:
    """Listings whose shop should be told a new figure.

    With compare-and-set under a share policy the shop's own count (pushed less sold since) is named
    as the expected figure. Where the platform takes increments (``delta``) a change goes out as the
    difference between the wanted figure and the shop's count as we believe it, which keeps the sales
    the shop made that we have not heard of; the delta and its idempotency key are written here,
    before anything is sent, so a retry sends the same delta under the same key. A delta whose answer
    was lost is sent again only under its key (``idempotent``); elsewhere it is left flagged. The rest
    are absolute figures (``push_store`` reads the shop's count just before setting one)."""
    rows = (await session.execute(
        select(Listing, Sku.allocation).join(Sku, Sku.id == Listing.sku_id)
        .where(Listing.store_id == store_id, Listing.sku_id.is_not(None))
    )).all()
    wanted = await desired_quantities(session, {listing.sku_id for listing, _ in rows})
    plan = []
    for listing, policy in rows:
        quantity = wanted.get(listing.id, 0)
        shares = (policy or {}).get("mode", "shared") != "shared"
        believed = _believed(listing)
        if listing.pending_delta is not None and force and not idempotent:
            listing.pending_delta = listing.pending_delta_key = None  # an operator's absolute set settles it
        if listing.pending_delta is not None:
            if idempotent:
                plan.append(PlannedPush(listing.id, listing.external_sku_key, (believed or 0) + listing.pending_delta,
                                        dict(listing.listing_ref or {}), None, listing.sold_since_push,
                                        listing.pushed_quantity, believed, listing.pending_delta,
                                        listing.pending_delta_key, shares))
            continue  # no key: never resent blind (the platform's count must be read first)
        if delta and believed is not None and not force:
            if quantity != believed or listing.push_error:
                if quantity == believed:
                    continue
                listing.pending_delta = quantity - believed
                listing.pending_delta_key = uuid.uuid4().hex
                plan.append(PlannedPush(listing.id, listing.external_sku_key, quantity, dict(listing.listing_ref or {}),
                                        None, listing.sold_since_push, listing.pushed_quantity, believed,
                                        listing.pending_delta, listing.pending_delta_key, shares))
            continue
        guarded = cas and shares
        # Without compare-and-set the figure is set from the shop's count read just before, so only a
        # change of what we want from the shop (not sales it made) calls for a push.
        if force or (believed if guarded or not cas else listing.pushed_quantity) != quantity or listing.push_error:
            plan.append(PlannedPush(listing.id, listing.external_sku_key, quantity, dict(listing.listing_ref or {}),
                                    believed if guarded else None, listing.sold_since_push, listing.pushed_quantity,
                                    believed, None, None, shares))
    return plan


async def _read_then_set(adapter, plan: list[PlannedPush]) -> tuple[list[PlannedPush], dict[str, int], list[PlannedPush]]:
    """Blind-set platforms (WooCommerce): read the shops' counts just before the set, and set each to
    its count moved by the change we want, so the sales the shop made that we have not heard of stay
    taken. A raise waits while such sales exist (the count is below what we believe): they are
    reported but not yet applied. The figure set is never above what we want (so never above the
    available stock): a count above our belief means sales we heard of were overwritten by an
    earlier set and sold again, and the belief goes negative through that oversell (a shop shows at
    least 0, so it is taken as 0). Returns (to send, counts read, deferred)."""
    counts = await adapter.fetch_stock([StockLevel(p.external_sku_key, p.quantity, p.listing_ref) for p in plan])
    send, deferred = [], []
    for p in plan:
        count = counts.get(p.external_sku_key)
        if count is None or p.believed is None:
            send.append(p)
            continue
        believed = max(0, p.believed)
        change = p.quantity - believed
        if change > 0 and count < believed:
            deferred.append(p)  # never raised while its reported sales may still be unheard
            continue
        send.append(PlannedPush(p.listing_id, p.external_sku_key, max(0, min(p.quantity, count + change)),
                                p.listing_ref, None, p.sold_snapshot, p.previous, p.believed, None, None, p.guarded))
    return send, counts, deferred


UNHEARD_RETRY_S = 0.2  # seconds before a raise that waits for unheard sales is planned again


async def push_store(ctx: JobContext, store_id: int, *, force: bool) -> tuple[list[dict], Outcome]:
    """Push what differs; returns a result per listing and the job outcome."""
    async with ctx.db.transaction() as session:
        store = await session.get(Store, store_id)
        if store is None:
            return [], Done("store gone")
        capabilities = store_capabilities(store)
        if Capability.STOCK_PUSH not in capabilities:
            return [], Done("platform cannot take stock pushes")
        cas = Capability.STOCK_COMPARE_AND_SET in capabilities
        delta = Capability.STOCK_DELTA in capabilities and not cas
        idempotent = Capability.STOCK_DELTA_IDEMPOTENT in capabilities
        read_first = not cas and not delta and Capability.STOCK_READ in capabilities
        plan = await plan_store_push(session, store_id, force=force, cas=cas, delta=delta, idempotent=idempotent)
    if not plan:
        return [], Done("nothing to push")
    outcome: Outcome = Done()
    counts: dict[str, int] = {}
    deferred: list[PlannedPush] = []
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
        if read_first and any(p.believed is not None for p in plan):
            plan, counts, deferred = await _read_then_set(adapter, plan)
        levels = [StockLevel(p.external_sku_key, p.quantity, p.listing_ref, p.expected, p.delta, p.key) for p in plan]
        results = await adapter.push_stock(levels) if levels else []
    except AdapterError as exc:
        results = []
        error = str(exc)
        async with ctx.db.transaction() as session:
            for p in plan:
                listing = await session.get(Listing, p.listing_id)
                listing.push_error = error[:1000]
        STOCK_PUSHES.labels(store.platform, "error").inc(len(plan))
        if isinstance(exc, TransientError):
            return [], Retry(exc.retry_after_s or 5.0, error)
        if isinstance(exc, AuthExpiredError):
            # Parked, not dead: the push runs again the moment the store is authorised.
            return [], wait_for_authorization(store_id, exc)
        return [{"external_sku_key": p.external_sku_key, "quantity": p.quantity, "ok": False, "error": error}
                for p in plan], Done(error)
    by_key = {r.external_sku_key: r for r in results}
    report = []
    retry_after = None
    conflicted = False
    auth_failed: str | None = None
    lowered_skus: set[int] = set()
    now = utcnow()
    async with ctx.db.transaction() as session:
        locked = {l.id: l for l in await ledger.lock_listings(session, Listing.id.in_([p.listing_id for p in plan]))}
        for p in plan:
            listing = locked.get(p.listing_id)
            if listing is None:
                continue  # deleted since the push was planned
            result = by_key.get(p.external_sku_key)
            if result is not None and result.ok:
                if p.guarded and p.believed is not None and p.quantity < p.believed:
                    lowered_skus.add(listing.sku_id)
                if p.delta is not None:
                    # An increment kept every sale the shop made: only our own figure moves.
                    listing.pushed_quantity = (listing.pushed_quantity or 0) + p.delta
                    listing.pending_delta = None
                    listing.pending_delta_key = None
                elif p.external_sku_key in counts and p.believed is not None:
                    # Set from the count read just before: the sales behind (believed - count) are in
                    # it. Those heard since planning are accounted for by the count; the rest will be
                    # absorbed when their orders arrive.
                    unheard = max(0, p.believed - counts[p.external_sku_key])
                    heard = listing.sold_since_push - p.sold_snapshot
                    listing.pushed_quantity = p.quantity
                    listing.sold_since_push = max(0, heard - unheard)
                    listing.unheard_sales += max(0, unheard - heard)
                else:
                    listing.pushed_quantity = p.quantity
                    # Sales heard of after planning happened after the set (a compare-and-set would have
                    # failed otherwise), so they still count against the new figure.
                    listing.sold_since_push = listing.sold_since_push - p.sold_snapshot
                listing.platform_quantity = counts.get(p.external_sku_key, listing.platform_quantity)
                listing.pushed_at = now
                listing.push_error = None
                STOCK_PUSHES.labels(store.platform, "ok").inc()
            elif result is not None and result.error_kind == "conflict":
                conflicted = True
                STOCK_PUSHES.labels(store.platform, "conflict").inc()
                if result.current_quantity is not None and _waited_too_long(ctx):
                    # The sales behind the difference never reached us (a lost webhook): believe the
                    # platform's count, and remember them as unheard so that their orders, when
                    # polling brings them in, are not counted against the listing a second time.
                    unheard = outstanding(listing) - result.current_quantity
                    if unheard > 0:
                        listing.sold_since_push += unheard
                        listing.unheard_sales += unheard
                    log.warning("stock push conflict resolved from the platform's count",
                                extra={"listing": listing.external_sku_key, "platform": result.current_quantity})
            else:
                error = result.error if result else "no result from the adapter"
                transient = result is not None and result.error_kind in ("transient", "throttled")
                if p.delta is not None and (not transient or result.error_kind == "throttled"):
                    listing.pending_delta = None  # refused: it did not apply
                    listing.pending_delta_key = None
                elif p.delta is not None and not (Capability.STOCK_DELTA_IDEMPOTENT in capabilities):
                    error = f"the answer to a delta of {p.delta:+d} was lost; the platform's count must be read " \
                            f"before this listing is pushed again: {error}"
                listing.push_error = (error or "failed")[:1000]
                STOCK_PUSHES.labels(store.platform, "error").inc()
                if transient:
                    retry_after = max(retry_after or 0, result.retry_after_s or 5.0)
                if result is not None and result.error_kind in AUTH_KINDS:
                    auth_failed = result.error or "token expired"
            listing.updated_at = now
            report.append({"listing_id": p.listing_id, "external_sku_key": p.external_sku_key,
                           "quantity": p.quantity, "ok": bool(result and result.ok),
                           "error": None if result and result.ok else (result.error if result else "no result")})
        for sku_id in lowered_skus:
            # Shops whose part was waiting on this one's going down can now be raised.
            other_stores = (await session.execute(select(Listing.store_id).where(
                Listing.sku_id == sku_id, Listing.store_id != store_id).distinct())).scalars().all()
            for other in other_stores:
                await queue_store_push(session, other)
    if auth_failed is not None:
        return report, wait_for_authorization(store_id, auth_failed)
    if conflicted:
        # The shop sold something we have not heard of: wait for its order, then push again.
        return report, Retry(CONFLICT_RETRY_S, "compare-and-set conflict", counts=False)
    if retry_after is not None:
        outcome = Retry(retry_after, "some listings were throttled or unavailable")
    elif deferred:
        outcome = Retry(UNHEARD_RETRY_S, "a raise waits for sales the shop reported but we have not applied",
                        counts=False)
    return report, outcome


def _waited_too_long(ctx: JobContext) -> bool:
    return (utcnow() - ctx.job.created_at).total_seconds() > CONFLICT_PATIENCE_S


# Pushes run before other due work (priority 10): a stale figure is what oversells.
@job("stock.push", priority=10, dedupe=per_store("stock.push"), lock=per_store("stock.push"))
async def handle_stock_push(ctx: JobContext) -> Outcome:
    _, outcome = await push_store(ctx, int(ctx.job.payload["store_id"]), force=bool(ctx.job.payload.get("force")))
    return outcome
