"""Stock push: every change of available stock queues one coalesced push per store of that sku.

One job per store may be queued and one may run (``dedupe_key`` / ``lock_key``): the latest
quantity always wins, a slow push never piles up work, and a change made while a push is in
flight queues exactly one more.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, TransientError
from app.domain import ledger
from app.domain.allocation import Policy, ShopDemand, allocate, finish_offer, policy_problems, sales_pace, settle_quotas
from app.metrics import STOCK_PUSHES
from app.models import Listing, Order, Sku, Store
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
# The sales-speed buffer (DESIGN "Live-stream stock"; app/domain/allocation.py sales_pace):
PACE_TAU_S = 5.0  # seconds: a shop's sales rate decays by e every this long once it sells slower
PACE_WINDOW_S = 0.2  # seconds: the shortest span a rate is measured over (one sale is not a spike)
PACE_LONGEST_S = 1.0  # seconds: the longest span units heard at once are spread over (a burst is a burst)
PACE_FLOOR = 0.05  # units per second: a rate below this is taken as 0 (the buffer ends, no more re-plans)
PACE_RECHECK_S = 1.0  # seconds: while a buffer holds a shop's figure down, it is re-planned this often
MAX_HEAR_LAG_S = 30.0  # seconds: a sale heard later than this is a backlog (resync, outage), not a lag
MAX_PUSH_LAG_S = 5.0  # seconds: bound on one push-lag sample (a retried push is not a normal landing)
DEFAULT_PUSH_LAG_S = 0.2  # seconds a figure takes to land on a shop not measured yet (beyond the debounce)
UNHEARD_HOLD_S = 5.0  # seconds a raise waits at least for sales known only from a shop's count to arrive
LAG_SMOOTHING = 0.3  # weight of a new lag sample in the smoothed lag (which a longer sample replaces at once)


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


def stored_policy(policy: dict) -> dict | None:
    """The form a policy is kept in on the sku: ``mode``, ``shares`` and ``caps`` always (the body
    clients have sent since the first version), the rules only where given; None for the default
    (``shared`` with the sales-speed buffer on and no rule)."""
    stored = {"mode": policy.get("mode", "shared"), "shares": dict(policy.get("shares") or {}),
              "caps": dict(policy.get("caps") or {})}
    stores = {key: {k: v for k, v in (rule or {}).items() if v is not None}
              for key, rule in (policy.get("stores") or {}).items()}
    if stores:
        stored["stores"] = stores
    if policy.get("lock"):
        lock = dict(policy["lock"])
        if isinstance(lock.get("until"), datetime):
            lock["until"] = lock["until"].isoformat()
        stored["lock"] = lock
    if policy.get("sales_speed_buffer") is False:
        stored["sales_speed_buffer"] = False
    if stored == {"mode": "shared", "shares": {}, "caps": {}}:
        return None
    return stored


async def set_allocation(session: AsyncSession, sku: Sku, policy: dict) -> None:
    """Set what each shop is offered of ``sku`` and re-plan every shop of it at once: the quotas are set
    afresh here, in the caller's transaction, so every shop's push sees the new policy whole (never one
    shop's new part beside another's old one). Nothing is changed when the policy is refused."""
    problems = policy_problems(policy)
    if problems:
        raise Invalid("; ".join(problems))
    lock = policy.get("lock") or None
    named = {*(policy.get("shares") or {}), *(policy.get("caps") or {}), *(policy.get("stores") or {})}
    if lock:
        named.add(str(lock["store_id"]))
    for store_id in sorted(named):
        if not str(store_id).isdigit() or await session.get(Store, int(store_id)) is None:
            field = "lock.store_id" if lock and str(store_id) == str(lock["store_id"]) else "shares/caps/stores"
            raise Invalid(f"{field}: no store {store_id!r}")
    stored = stored_policy(policy)
    rules = Policy.of(stored)
    if rules.lock is not None and rules.active_lock(utcnow()) is None:
        raise Invalid("lock.until: the lock has already ended")
    sku.allocation = stored
    await rebalance(session, sku)
    if rules.lock is not None:
        # The lock's end re-plans the sku even if nothing else moves then.
        await handle_lock_ends.enqueue(session, {"sku_id": sku.id, "until": rules.lock.until.isoformat()},
                                       run_after=rules.lock.until)


async def rebalance(session: AsyncSession, sku: Sku) -> None:
    """Split the available stock of ``sku`` afresh over its shops by its policy (explicit request or a
    policy change) and push every shop of it."""
    # Listings locked before the sku row is written (at flush): the order every plan and apply keeps.
    listings = await ledger.lock_listings(session, Listing.sku_id == sku.id)
    for listing in listings:
        listing.quota = None  # settle_quotas then splits the available stock afresh
    await _settle(session, sku, listings, utcnow())
    await queue_stock_push(session, sku.id)


async def _settle(session: AsyncSession, sku: Sku, listings: list[Listing], now: datetime) -> None:
    """Bring the quotas of ``sku``'s listings up to date with its available stock: every listing under
    a share policy, an active lock's listings under the shared one (the locked units not sold yet)."""
    demands = [ShopDemand(l.id, l.store_id) for l in listings]
    quotas = settle_quotas(sku.on_hand - sku.reserved, {l.id: l.quota for l in listings}, demands,
                           Policy.of(sku.allocation), now=now)
    for listing in listings:
        if listing.quota != quotas.get(listing.id):
            listing.quota = quotas.get(listing.id)


async def _end_lock_if_over(session: AsyncSession, sku: Sku, now: datetime) -> bool:
    """An ended lock is dropped from the policy and the sku re-planned (True when it was)."""
    rules = Policy.of(sku.allocation)
    if rules.lock is None or rules.active_lock(now) is not None:
        return False
    sku.allocation = stored_policy({k: v for k, v in (sku.allocation or {}).items() if k != "lock"})
    log.info("allocation lock ended", extra={"sku": sku.sku, "store": rules.lock.store_id})
    await rebalance(session, sku)
    return True


@job("stock.lock_ends", local=True, dedupe=lambda payload: f"stock.lock_ends:{payload['sku_id']}:{payload['until']}")
async def handle_lock_ends(ctx: JobContext) -> Outcome:
    """At a lock's end: drop it and re-plan every shop of the sku (a lock moved later waits again)."""
    async with ctx.db.transaction() as session:
        sku_id = int(ctx.job.payload["sku_id"])
        await ledger.lock_listings(session, Listing.sku_id == sku_id)  # listings, then the sku: the lock order
        await ledger.lock_skus(session, {sku_id})
        sku = await session.get(Sku, sku_id)
        if sku is None:
            return Done("sku gone")
        if await _end_lock_if_over(session, sku, utcnow()):
            return Done("lock ended; re-planned")
        lock = Policy.of(sku.allocation).lock
        if lock is not None:
            await handle_lock_ends.enqueue(session, {"sku_id": sku_id, "until": lock.until.isoformat()},
                                           run_after=lock.until)
            return Done("the lock lasts longer now")
    return Done("no lock")


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
    # An absolute set computed from the platform's count read just before, to settle what a delta left
    # unknown: "lost" (its answer never came; ``believed`` then assumes a raise landed and a cut did
    # not, the reading that offers less) or "refused" (a cut the platform refused).
    correction: str | None = None
    refusal: str | None = None  # why the cut was refused ("refused" corrections), for the flag
    wanted: int | None = None  # set from a count read: the figure wanted before the count moved it


def outstanding(listing: Listing) -> int:
    """What a shop can still sell of a listing plus what it sold that we have not heard of yet."""
    if listing.pushed_quantity is None:
        return 0
    return max(0, listing.pushed_quantity - listing.sold_since_push)


def _believed(listing: Listing) -> int | None:
    return None if listing.pushed_quantity is None else listing.pushed_quantity - listing.sold_since_push


def heard_sales(listing: Listing) -> int:
    """A counter that every sale heard of moves up by its units: it raises sold_since_push, or uses up
    units already counted from the platform's count (unheard_sales). The pace is read off it."""
    return listing.sold_since_push - listing.unheard_sales


def listing_pace(listing: Listing, now: datetime, first_heard_at: datetime | None = None) -> float:
    """The listing's sales rate now (units per second): its last estimate, decayed, or the rate of the
    sales heard since, whichever is higher (``sales_pace``). Read without writing: the estimate is
    kept on the row only where the row is locked anyway (a push's accounting, ``_fold_pace``)."""
    since = listing.sales_rated_at or listing.pushed_at or listing.created_at
    rate = sales_pace(listing.sales_rate if listing.sales_rated_at else 0.0, since,
                      heard_sales(listing) - listing.sales_mark, now, tau_s=PACE_TAU_S, window_s=PACE_WINDOW_S,
                      longest_s=PACE_LONGEST_S, first_heard_at=first_heard_at)
    return rate if rate >= PACE_FLOOR else 0.0


def _unheard_hold(listing: Listing) -> datetime:
    """Until when a delta platform's listing with sales known only from its count is not raised: long
    enough for their orders to arrive (twice its hearing lag, at least UNHEARD_HOLD_S) after the figure
    that counted them was set. Past it, what is still unheard is taken as not coming soon; it stays
    counted against the listing (a figure too low, never too high)."""
    since = listing.pushed_at or listing.updated_at
    return since + timedelta(seconds=max(UNHEARD_HOLD_S, 2 * (listing.hear_lag_s or 0.0)))


def push_horizon(listing: Listing) -> float:
    """Seconds from a change of stock to the listing's new figure landing on its shop."""
    return listing.push_lag_s if listing.push_lag_s is not None else PUSH_DEBOUNCE_S + DEFAULT_PUSH_LAG_S


async def desired_quantities(session: AsyncSession, sku_ids: set[int], *, buffered: set[int] | None = None,
                             fold: bool = False) -> dict[int, int]:
    """Sellable quantity per listing id for every listing of ``sku_ids``, by each sku's policy.

    Under a share policy a listing is offered its quota (less the store's safety stock and the rule's
    buffer): the shops' own sales use quotas up, so sales that trail behind never move a figure. A
    raise is also capped by the available stock less what the *other* listings still have outstanding,
    so a rebalance raises a shop only once the shops whose part shrank were pushed down; a figure is
    never lowered below its quota by that cap. The quotas are brought up to date here (the sku rows are
    locked first), and a lock that has ended is dropped and its sku re-planned.

    Under ``shared`` (the default) every shop is offered the available stock less what the other shops
    are expected to sell before its new figure lands (the sales-speed buffer, on unless the policy
    turns it off): their sales rate times how late their sales reach us plus this listing's push
    horizon. ``buffered`` collects the listings a buffer held down, to be re-planned as it decays;
    ``fold``: the caller locked every listing of ``sku_ids`` (before the skus, the order every locker
    keeps), and their sales-pace estimates are written back."""
    if not sku_ids:
        return {}
    now = utcnow()
    await ledger.lock_skus(session, sku_ids)
    skus = (await session.execute(select(Sku).where(Sku.id.in_(sku_ids)))).scalars().all()
    rows = (await session.execute(
        select(Listing, Store).join(Store, Store.id == Listing.store_id).where(Listing.sku_id.in_(sku_ids))
        .order_by(Listing.id).execution_options(populate_existing=True)
    )).all()
    safety_of: dict[int, int] = {}
    listings_of: dict[int, list[Listing]] = {}
    hear_lags: dict[int, _HearLag] = {}
    for listing, store in rows:
        safety_of[listing.id] = store.options.safety_stock
        listings_of.setdefault(listing.sku_id, []).append(listing)
        if fold:
            hear_lag = hear_lags.setdefault(listing.store_id, _HearLag(session, listing.store_id, now))
            await _fold_pace(listing, now, hear_lag)
    result: dict[int, int] = {}
    for sku in skus:
        available = sku.on_hand - sku.reserved
        listings = listings_of.get(sku.id, [])
        if fold:  # a writing plan: an ended lock is dropped and the sku re-planned (elsewhere it is ignored)
            await _end_lock_if_over(session, sku, now)
        policy = Policy.of(sku.allocation)
        await _settle(session, sku, listings, now)
        if not policy.quotas:
            lock = policy.active_lock(now)
            locked = [l.quota for l in listings if lock is not None and l.store_id == lock.store_id
                      and l.quota is not None]
            paces = {l.id: listing_pace(l, now) for l in listings}
            demands = [ShopDemand(l.id, l.store_id, safety_of[l.id], rate=paces[l.id], hear_lag_s=l.hear_lag_s or 0.0,
                                  horizon_s=push_horizon(l),
                                  outstanding=None if l.pushed_quantity is None else outstanding(l))
                       for l in listings]
            result.update(allocate(available, demands, policy, now=now, lock_left=max(locked) if locked else None))
            if buffered is not None and policy.sales_speed_buffer:
                for l in listings:
                    if any(paces[o.id] > 0 for o in listings
                           if o.id != l.id and (lock is None or o.store_id != lock.store_id)):
                        buffered.add(l.id)
            continue
        committed = {l.id: outstanding(l) for l in listings}
        total = sum(committed.values())
        for listing in listings:
            # Sales learnt only from the platform's count have not used up the quota yet: they will
            # when their orders arrive; until then they are held back from the offer.
            offer = finish_offer((listing.quota or 0) - listing.unheard_sales - safety_of[listing.id],
                                 policy.rule(listing.store_id))
            believed = _believed(listing)
            if believed is not None and offer > believed:
                headroom = max(0, available - (total - committed[listing.id]))
                offer = max(believed, min(offer, headroom))
            result[listing.id] = offer
    return result


async def plan_store_push(session: AsyncSession, store_id: int, *, force: bool, cas: bool = False,
                          delta: bool = False, idempotent: bool = False, read: bool = False) -> list[PlannedPush]:
    """Listings whose shop should be told a new figure.

    With compare-and-set under a share policy the shop's own count (pushed less sold since) is named
    as the expected figure. Where the platform takes increments (``delta``) a change goes out as the
    difference between the wanted figure and the shop's count as we believe it, which keeps the sales
    the shop made that we have not heard of; the delta and its idempotency key are written here,
    before anything is sent, so a retry sends the same delta under the same key. A delta whose answer
    was lost is sent again only under its key (``idempotent``); elsewhere it is never sent again: where
    the platform's count can be read (``read``) a correction is planned (an absolute set from that
    count, ``push_store``), else the listing is left flagged. The rest are absolute figures
    (``push_store`` reads the shop's count just before setting one)."""
    rows = (await session.execute(
        select(Listing, Sku.allocation).join(Sku, Sku.id == Listing.sku_id)
        .where(Listing.store_id == store_id, Listing.sku_id.is_not(None))
    )).all()
    buffered: set[int] = set()
    now = utcnow()
    sku_ids = {listing.sku_id for listing, _ in rows}
    # Every listing of these skus (other shops' too) is locked first, before desired_quantities locks the
    # skus (the order the apply path keeps too): their quotas and sales paces are written here.
    await ledger.lock_listings(session, Listing.sku_id.in_(sorted(sku_ids)))
    wanted = await desired_quantities(session, sku_ids, buffered=buffered, fold=True)
    plan = []
    for listing, _ in rows:
        quantity = wanted.get(listing.id, 0)
        # The sku as desired_quantities left it (a lock that ended was dropped there).
        shares = Policy.of((await session.get(Sku, listing.sku_id)).allocation).quotas
        believed = _believed(listing)
        if listing.pending_delta is not None and force and not idempotent:
            listing.pending_delta = listing.pending_delta_key = None  # an operator's absolute set settles it
        if listing.pending_delta is not None:
            if idempotent:
                plan.append(PlannedPush(listing.id, listing.external_sku_key, (believed or 0) + listing.pending_delta,
                                        dict(listing.listing_ref or {}), None, listing.sold_since_push,
                                        listing.pushed_quantity, believed, listing.pending_delta,
                                        listing.pending_delta_key, shares))
            elif read and believed is not None:
                # Never resent blind: whether it landed is read off the platform's count first.
                plan.append(PlannedPush(listing.id, listing.external_sku_key, quantity, dict(listing.listing_ref or {}),
                                        None, listing.sold_since_push, listing.pushed_quantity,
                                        believed + max(0, listing.pending_delta), None, None, shares,
                                        correction="lost"))
            continue
        if delta and believed is not None and not force:
            if quantity > believed and listing.unheard_sales > 0 and (held_until := _unheard_hold(listing)) > now:
                # Units the shop sold are known from its count but their orders have not arrived: the
                # available stock still counts them, so a raise now would offer them again. It waits.
                await handle_pace_recheck.enqueue(session, {"store_id": store_id}, run_after=held_until)
                continue
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
        if force or (believed if guarded or not cas or read else listing.pushed_quantity) != quantity \
                or listing.push_error:
            plan.append(PlannedPush(listing.id, listing.external_sku_key, quantity, dict(listing.listing_ref or {}),
                                    believed if guarded else None, listing.sold_since_push, listing.pushed_quantity,
                                    believed, None, None, shares))
    if any(listing.id in buffered for listing, _ in rows):
        # A sales-speed buffer holds a figure down: look again as the other shops' rates decay. A job of
        # its own: a stock.push put off this long would hold back the pushes of every sale until then
        # (a queued push absorbs the later ones).
        await handle_pace_recheck.enqueue(session, {"store_id": store_id}, run_after=later(PACE_RECHECK_S))
    return plan


async def _read_then_set(adapter, plan: list[PlannedPush], read_first: bool = True, *, assume_empty: bool = False,
                         cas: bool = False) -> tuple[list[PlannedPush], dict[str, int], list[PlannedPush]]:
    """Blind-set platforms (WooCommerce), compare-and-set platforms under the shared policy (``cas``: the
    count read is the expected figure, so a sale between the read and the write refuses the write and
    the push reads again), and corrections on any platform: read the shops' counts just
    before the set, and set each to its count moved by the change we want, so the sales the shop made
    that we have not heard of stay taken. A raise waits while such sales exist (the count is below
    what we believe): they are reported but not yet applied; a correction does not wait (it must
    settle the delta now) but is then not raised above the count. The figure set is never above what
    we want (so never above the available stock): a count above our belief means sales we heard of
    were overwritten by an earlier set and sold again, and the belief goes negative through that
    oversell (a shop shows at least 0, so it is taken as 0). Returns (to send, counts read, deferred);
    a correction whose count could not be read is left out of both (it stays flagged). ``assume_empty``:
    the platform cannot be read, every count is taken as 0 (refused cuts, ``_correct_refused_cuts``)."""
    reading = [p for p in plan if p.correction or (read_first and p.believed is not None and p.expected is None
                                                   and p.delta is None)]
    if assume_empty:
        counts = {p.external_sku_key: 0 for p in reading}
    else:
        counts = await adapter.fetch_stock([StockLevel(p.external_sku_key, p.quantity, p.listing_ref)
                                            for p in reading]) if reading else {}
    send, deferred = [], []
    for p in plan:
        count = counts.get(p.external_sku_key)
        if p not in reading or p.believed is None:
            send.append(p)
            continue
        if count is None:
            if not p.correction:
                send.append(p)
            continue
        believed = max(0, p.believed)
        change = p.quantity - believed
        figure = max(0, min(p.quantity, count + change))
        if change > 0 and count < believed:
            if not p.correction:
                deferred.append(p)  # never raised while its reported sales may still be unheard
                continue
            figure = min(figure, count)
        refusal = p.refusal
        if assume_empty and refusal is not None:
            refusal += "; the count cannot be read on this platform and was taken as 0"
        send.append(replace(p, quantity=figure, expected=count if cas and not p.correction else None, delta=None,
                            key=None, refusal=refusal, wanted=p.quantity))
    return send, counts, deferred


UNHEARD_RETRY_S = 0.2  # seconds before a raise that waits for unheard sales is planned again


@dataclass
class _Round:
    """What one round of a push sent and heard back."""

    report: list[dict]
    refused_cuts: list[tuple[int, str]] = field(default_factory=list)  # (listing id, the platform's words)
    retry_after: float | None = None
    conflicted: bool = False
    auth_failed: str | None = None
    # Sets from a count read that a compare-and-set refused (the shop sold in between), with the
    # platform's count now: set again from it at once (the figure must come down during a sale).
    recount: list[tuple[PlannedPush, int]] = field(default_factory=list)


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
        readable = Capability.STOCK_READ in capabilities
        # Absolute figures are set from the shop's count read just before (never over sales it made that
        # we have not heard of): on blind-set platforms, and on compare-and-set ones for the listings
        # whose plan names no expected figure (the shared policy), the count then being the expected one.
        read_first = not delta and readable
        plan = await plan_store_push(session, store_id, force=force, cas=cas, delta=delta, idempotent=idempotent,
                                     read=readable)
    if not plan:
        return [], Done("nothing to push")
    deferred: list[PlannedPush] = []
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
        counts: dict[str, int] = {}
        if any(p.correction for p in plan) or (read_first and any(p.believed is not None for p in plan)):
            plan, counts, deferred = await _read_then_set(adapter, plan, read_first, cas=cas)
        rounds = [await _send_and_account(ctx, store, capabilities, adapter, plan, counts)]
        for _ in range(RECOUNT_TRIES):
            if not rounds[-1].recount:
                break
            again, recounts, waiting = _recounted(rounds[-1].recount)
            deferred += waiting
            rounds.append(await _send_and_account(ctx, store, capabilities, adapter, again, recounts))
        if rounds[-1].recount:
            rounds[-1].conflicted = True  # the shop outsold every try: the job tries again shortly
    except AdapterError as exc:
        error = str(exc)
        async with ctx.db.transaction() as session:
            for p in plan:
                listing = await session.get(Listing, p.listing_id)
                if listing is not None:
                    listing.push_error = error[:1000]
        STOCK_PUSHES.labels(store.platform, "error").inc(len(plan))
        if isinstance(exc, TransientError):
            return [], Retry(exc.retry_after_s or 5.0, error)
        if isinstance(exc, AuthExpiredError):
            # Parked, not dead: the push runs again the moment the store is authorised.
            return [], wait_for_authorization(store_id, exc)
        return [{"external_sku_key": p.external_sku_key, "quantity": p.quantity, "ok": False, "error": error}
                for p in plan], Done(error)
    if rounds[0].refused_cuts:
        rounds.append(await _correct_refused_cuts(ctx, store, capabilities, adapter, rounds[0].refused_cuts,
                                                  readable))
    report = [row for r in rounds for row in r.report]
    auth_failed = next((r.auth_failed for r in rounds if r.auth_failed), None)
    if auth_failed is not None:
        return report, wait_for_authorization(store_id, auth_failed)
    if any(r.conflicted for r in rounds):
        # The shop sold something we have not heard of: wait for its order, then push again.
        return report, Retry(CONFLICT_RETRY_S, "compare-and-set conflict", counts=False)
    retry_after = max((r.retry_after for r in rounds if r.retry_after is not None), default=None)
    if retry_after is not None:
        return report, Retry(retry_after, "some listings were throttled or unavailable")
    if deferred:
        return report, Retry(UNHEARD_RETRY_S, "a raise waits for sales the shop reported but we have not applied",
                             counts=False)
    return report, Done()


RECOUNT_TRIES = 3  # sets again from the count a compare-and-set refusal reports, within one push


def _recounted(refused: list[tuple[PlannedPush, int]]) -> tuple[list[PlannedPush], dict[str, int], list[PlannedPush]]:
    """Sets from a count read, again from the count the platform reported when it refused them; and
    the raises that wait while the shop's sales are unheard (the push is tried again for them)."""
    again, counts, waiting = [], {}, []
    for p, count in refused:
        believed = max(0, p.believed or 0)
        change = p.wanted - believed
        if change > 0 and count < believed:
            waiting.append(p)
            continue
        again.append(replace(p, quantity=max(0, min(p.wanted, count + change)), expected=count))
        counts[p.external_sku_key] = count
    return again, counts, waiting


async def _correct_refused_cuts(ctx: JobContext, store: Store, capabilities, adapter,
                                refused: list[tuple[int, str]], readable: bool) -> _Round:
    """A refused cut (a Pinduoduo item in a promotion slot, Douyin's 库存不足): the shop sold what we
    have not heard of, or will not go lower. Read its count, set what is left, and flag the listing.
    Where the count cannot be read it is taken as 0, and 0 is set: a cut refused for going below zero
    means the shop has less than the cut, so nothing of what we want is left (an increment cannot go
    below zero on any of these platforms); a shop that refuses any cut refuses that too, and stays
    flagged. Taking the count as 0 counts every unit we believe it showed as sold unheard, which can
    only make later figures smaller, never larger."""
    async with ctx.db.transaction() as session:
        corrections = await _plan_refused(session, refused)
    if not corrections:
        return _Round([])
    try:
        corrections, counts, _ = await _read_then_set(adapter, corrections, False, assume_empty=not readable)
        return await _send_and_account(ctx, store, capabilities, adapter, corrections, counts)
    except AdapterError as exc:
        async with ctx.db.transaction() as session:
            for p in corrections:
                listing = await session.get(Listing, p.listing_id)
                if listing is not None:
                    listing.push_error = (f"a cut was refused ({p.refusal}); reading the platform's count "
                                          f"failed too: {exc}")[:1000]
        return _Round([], retry_after=exc.retry_after_s if isinstance(exc, TransientError) else None)


async def _plan_refused(session: AsyncSession, refused: list[tuple[int, str]]) -> list[PlannedPush]:
    """Corrections for refused cuts: what each listing should show now, set from the count read next."""
    listings = await ledger.lock_listings(session, Listing.id.in_([listing_id for listing_id, _ in refused]))
    wanted = await desired_quantities(session, {l.sku_id for l in listings if l.sku_id is not None})
    why = dict(refused)
    plan = []
    for listing in listings:
        believed = _believed(listing)
        if listing.sku_id is None or believed is None or listing.pending_delta is not None:
            continue
        plan.append(PlannedPush(listing.id, listing.external_sku_key, wanted.get(listing.id, 0),
                                dict(listing.listing_ref or {}), None, listing.sold_since_push,
                                listing.pushed_quantity, believed, correction="refused", refusal=why[listing.id]))
    return plan


async def _send_and_account(ctx: JobContext, store: Store, capabilities, adapter, plan: list[PlannedPush],
                            counts: dict[str, int]) -> _Round:
    """Send ``plan`` and write what the platform answered onto each listing, in one transaction."""
    levels = [StockLevel(p.external_sku_key, p.quantity, p.listing_ref, p.expected, p.delta, p.key) for p in plan]
    results = await adapter.push_stock(levels) if levels else []
    by_key = {r.external_sku_key: r for r in results}
    done = _Round([])
    lowered_skus: set[int] = set()
    now = utcnow()
    store_id = store.id
    async with ctx.db.transaction() as session:
        locked = {l.id: l for l in await ledger.lock_listings(session, Listing.id.in_([p.listing_id for p in plan]))}
        hear_lag = _HearLag(session, store_id, now)
        for p in plan:
            listing = locked.get(p.listing_id)
            if listing is None:
                continue  # deleted since the push was planned
            heard_before = heard_sales(listing)
            await _fold_pace(listing, now, hear_lag)
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
                    if p.correction == "lost":
                        listing.pending_delta = None  # settled by the count: never sent again
                        listing.pending_delta_key = None
                else:
                    listing.pushed_quantity = p.quantity
                    # Sales heard of after planning happened after the set (a compare-and-set would have
                    # failed otherwise), so they still count against the new figure.
                    listing.sold_since_push = listing.sold_since_push - p.sold_snapshot
                listing.platform_quantity = counts.get(p.external_sku_key, listing.platform_quantity)
                listing.pushed_at = now
                listing.push_error = None
                if p.correction == "refused":
                    # Left flagged for the operator: the shop would not go as low as asked.
                    listing.push_error = (f"a cut was refused ({p.refusal}); {p.quantity} was set from the "
                                          f"platform's count {counts.get(p.external_sku_key)}")[:1000]
                else:
                    _sample_push_lag(listing, ctx, now)
                STOCK_PUSHES.labels(store.platform, "ok").inc()
            elif result is not None and result.error_kind == "conflict" and p.wanted is not None \
                    and result.current_quantity is not None:
                STOCK_PUSHES.labels(store.platform, "conflict").inc()
                done.recount.append((p, result.current_quantity))
            elif result is not None and result.error_kind == "conflict":
                done.conflicted = True
                STOCK_PUSHES.labels(store.platform, "conflict").inc()
                if result.current_quantity is not None and p.guarded and _waited_too_long(ctx):
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
                    if p.delta < 0 and result is not None and result.error_kind not in AUTH_KINDS \
                            and result.error_kind != "throttled":
                        done.refused_cuts.append((listing.id, error or "refused"))
                elif p.delta is not None and not (Capability.STOCK_DELTA_IDEMPOTENT in capabilities):
                    error = f"the answer to a delta of {p.delta:+d} was lost; the platform's count must be read " \
                            f"before this listing is pushed again: {error}"
                elif p.correction == "refused":
                    error = f"a cut was refused ({p.refusal}), and so was setting {p.quantity} from the " \
                            f"platform's count {counts.get(p.external_sku_key)}: {error}"
                listing.push_error = (error or "failed")[:1000]
                STOCK_PUSHES.labels(store.platform, "error").inc()
                if transient:
                    done.retry_after = max(done.retry_after or 0, result.retry_after_s or 5.0)
                if result is not None and result.error_kind in AUTH_KINDS:
                    done.auth_failed = result.error or "token expired"
            # Whatever moved the counts here is not a sale: the pace's mark moves with them.
            listing.sales_mark += heard_sales(listing) - heard_before
            listing.updated_at = now
            done.report.append({"listing_id": p.listing_id, "external_sku_key": p.external_sku_key,
                                "quantity": p.quantity, "ok": bool(result and result.ok),
                                "error": None if result and result.ok else (result.error if result else "no result")})
        for sku_id in lowered_skus:
            # Shops whose part was waiting on this one's going down can now be raised.
            other_stores = (await session.execute(select(Listing.store_id).where(
                Listing.sku_id == sku_id, Listing.store_id != store_id).distinct())).scalars().all()
            for other in other_stores:
                await queue_store_push(session, other)
    return done


class _HearLag:
    """How late a store's sales reach us, sampled from its newest orders: when each was applied
    (created here) less when the buyer placed it; and when the first of them since a moment was
    applied. Read once per plan or push, only where new sales were heard."""

    def __init__(self, session: AsyncSession, store_id: int, now: datetime) -> None:
        self.session, self.store_id, self.now = session, store_id, now
        self.rows: list | None = None

    async def since(self, moment: datetime | None) -> tuple[float | None, datetime | None]:
        """(the longest hearing lag, the first applied) among the orders applied after ``moment``."""
        if self.rows is None:
            self.rows = (await self.session.execute(
                select(Order.placed_at, Order.created_at).where(Order.store_id == self.store_id)
                .order_by(Order.id.desc()).limit(HEAR_LAG_ORDERS))).all()
        new = [(placed, created) for placed, created in self.rows
               if created is not None and (moment is None or created > moment)]
        lags = [(created - placed).total_seconds() for placed, created in new if placed is not None]
        lags = [lag for lag in lags if 0 <= lag <= MAX_HEAR_LAG_S]
        return (max(lags) if lags else None), min((created for _, created in new), default=None)


HEAR_LAG_ORDERS = 50  # newest orders of a store looked at for its hearing lag


async def _fold_pace(listing: Listing, now: datetime, hear_lag: _HearLag) -> None:
    """Keep the listing's sales-pace estimate on its row (it is locked here), once per window."""
    since = listing.sales_rated_at or listing.pushed_at or listing.created_at
    if listing.sales_rated_at is not None and (now - since).total_seconds() < PACE_WINDOW_S:
        return  # too soon: the sales heard since ride on to the next estimate
    heard = heard_sales(listing) - listing.sales_mark
    first_heard_at = None
    if heard > 0:
        sample, first_heard_at = await hear_lag.since(listing.sales_rated_at)
        if sample is not None:
            listing.hear_lag_s = _smoothed_lag(listing.hear_lag_s, sample)
    listing.sales_rate = listing_pace(listing, now, first_heard_at)
    listing.sales_rated_at = now
    listing.sales_mark = heard_sales(listing)


def _sample_push_lag(listing: Listing, ctx: JobContext, now: datetime) -> None:
    """How long this figure took to land: from when the job's first change came due (its creation, or
    its run time less the debounce when it was put off on purpose) to the platform's answer."""
    job = ctx.job
    put_off = None if job.run_after is None else job.run_after - timedelta(seconds=PUSH_DEBOUNCE_S)
    became_due = max(t for t in (job.created_at, put_off) if t is not None)
    sample = min(MAX_PUSH_LAG_S, max(0.0, (now - became_due).total_seconds()))
    listing.push_lag_s = _smoothed_lag(listing.push_lag_s, sample)


def _smoothed_lag(previous: float | None, sample: float) -> float:
    """A lag that rises at once to a longer sample and comes down slowly over shorter ones: a lag
    under-estimated under load is what oversells (the same bias as the sales pace)."""
    if previous is None:
        return sample
    return max(sample, (1 - LAG_SMOOTHING) * previous + LAG_SMOOTHING * sample)


def _waited_too_long(ctx: JobContext) -> bool:
    return (utcnow() - ctx.job.created_at).total_seconds() > CONFLICT_PATIENCE_S


# Pushes run before other due work (priority 10): a stale figure is what oversells.
@job("stock.push", priority=10, dedupe=per_store("stock.push"), lock=per_store("stock.push"))
async def handle_stock_push(ctx: JobContext) -> Outcome:
    _, outcome = await push_store(ctx, int(ctx.job.payload["store_id"]), force=bool(ctx.job.payload.get("force")))
    return outcome


@job("stock.pace_recheck", local=True, dedupe=per_store("stock.pace_recheck"))
async def handle_pace_recheck(ctx: JobContext) -> Outcome:
    """Queue a push of the store, whose figures a sales-speed buffer held down a while ago."""
    async with ctx.db.transaction() as session:
        await queue_store_push(session, int(ctx.job.payload["store_id"]))
    return Done()
