"""What each shop is offered of a sku (pure): the whole available quantity by default, less what the
other shops are expected to sell before the figure lands, or parts (quotas) per shop by share, percent,
fixed quantity, min and max, a buffer held back, delist below N, and a live stream's lock.

The policy, as stored on the sku (``Sku.allocation``, the body of ``PUT /v1/stock/{sku}/allocation``)::

    {"mode": "shared" | "shares",
     "shares": {"<store id>": weight}, "caps": {"<store id>": max units},
     "stores": {"<store id>": {"percent": p | "fixed": n, "min": n, "max": n, "buffer": n,
                               "delist_below": n}},
     "lock": {"store_id": id, "units": n, "until": "<aware ISO time>"},
     "sales_speed_buffer": true}

How one shop's offer is reached, in this order:

1. its *part*. ``shares``: a partition of the available stock (never more in total than available):
   an active lock's units go to its shop first; then every other shop's floor (``fixed``, else ``min``);
   then ``percent`` shops up to their percentage of what the lock left; the rest by ``shares`` weights
   (a shop without a rule or a weight gets weight 1 when no weights are given at all). ``max`` (or
   ``caps``) bounds each part; what a capped shop cannot take goes to the weighted shops. ``shared``:
   every shop's part overlaps the others': the whole available (less an active lock's units), or
   ``percent`` of it, or ``fixed`` (at most it), raised to ``min`` and bounded by ``max``; the lock's
   shop is offered its locked units only.
2. held back from the part: the store's safety stock, the rule's ``buffer``, and, under ``shared`` with
   ``sales_speed_buffer`` on (the default), the units the other shops are expected to sell before this
   shop's new figure lands (``expected_sales``).
3. ``delist_below``: an offer below it is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping


@dataclass(frozen=True)
class ShopDemand:
    """One listing of the sku in one store, as allocation sees it.

    ``rate``: the shop's recent sales of the sku, units per second (``sales_pace``); ``hear_lag_s``: how
    late its sales reach us (webhook or poll, then the apply); ``horizon_s``: how long a new figure
    for this listing takes to land on the shop once stock changed (debounce, queue, the platform call);
    ``outstanding``: what the shop can still sell as we believe it (None: no bound known)."""

    listing_id: int
    store_id: int
    safety_stock: int = 0
    rate: float = 0.0
    hear_lag_s: float = 0.0
    horizon_s: float = 0.0
    outstanding: int | None = None


@dataclass(frozen=True)
class StoreRule:
    """One store's rule for one sku (every field optional; see the module docstring)."""

    percent: int | None = None
    fixed: int | None = None
    min: int = 0
    max: int | None = None
    buffer: int = 0
    delist_below: int = 0


@dataclass(frozen=True)
class Lock:
    """Units of the sku set aside for one shop (a live stream's) until ``until``."""

    store_id: int
    units: int
    until: datetime


@dataclass(frozen=True)
class Policy:
    """A sku's allocation policy, read from its stored form (``Policy.of``)."""

    mode: str = "shared"
    shares: Mapping[int, int] = field(default_factory=dict)
    caps: Mapping[int, int] = field(default_factory=dict)
    stores: Mapping[int, StoreRule] = field(default_factory=dict)
    lock: Lock | None = None
    sales_speed_buffer: bool = True

    @classmethod
    def of(cls, raw: "dict | Policy | None") -> "Policy":
        """The policy a stored (or requested) dict describes; None is the default (shared, buffer on)."""
        if isinstance(raw, Policy):
            return raw
        raw = raw or {}
        mode = raw.get("mode", "shared")
        if mode not in ("shared", "shares"):
            raise ValueError(f"unknown allocation mode {mode!r}")
        stores = {}
        for key, rule in (raw.get("stores") or {}).items():
            stores[int(key)] = StoreRule(**{k: v for k, v in (rule or {}).items() if v is not None})
        lock = None
        if raw.get("lock"):
            until = raw["lock"]["until"]
            lock = Lock(int(raw["lock"]["store_id"]), int(raw["lock"]["units"]),
                        until if isinstance(until, datetime) else datetime.fromisoformat(until))
        return cls(mode=mode, shares={int(k): int(v) for k, v in (raw.get("shares") or {}).items()},
                   caps={int(k): int(v) for k, v in (raw.get("caps") or {}).items()}, stores=stores, lock=lock,
                   sales_speed_buffer=bool(raw.get("sales_speed_buffer", True)))

    @property
    def quotas(self) -> bool:
        """Parts are quotas (exclusive, used up by the shop's own sales) under ``shares``."""
        return self.mode == "shares"

    def active_lock(self, now: datetime | None) -> Lock | None:
        """The lock while it lasts (``now`` None: taken as lasting); an expired lock is ignored."""
        if self.lock is None or self.lock.units <= 0:
            return None
        if now is not None and self.lock.until <= now:
            return None
        return self.lock

    def rule(self, store_id: int) -> StoreRule:
        """The store's rule with ``caps`` folded into ``max`` (the lower of the two wins)."""
        rule = self.stores.get(store_id, StoreRule())
        cap = self.caps.get(store_id)
        if cap is not None and (rule.max is None or cap < rule.max):
            rule = StoreRule(rule.percent, rule.fixed, rule.min, cap, rule.buffer, rule.delist_below)
        return rule

    def weight(self, store_id: int) -> int:
        """The store's weight in the split of what floors and percentages leave."""
        rule = self.stores.get(store_id)
        if rule is not None and (rule.percent is not None or rule.fixed is not None):
            return 0
        return self.shares.get(store_id, 0 if self.shares else 1)


def policy_problems(raw: dict) -> list[str]:
    """What is wrong with a requested policy beyond each field's own bounds (the API's schema checks
    those), one sentence per problem naming its field; empty when it is consistent."""
    problems = []
    mode = raw.get("mode", "shared")
    stores = raw.get("stores") or {}
    percent_total = 0
    for key, rule in stores.items():
        rule = rule or {}
        if rule.get("percent") is not None and rule.get("fixed") is not None:
            problems.append(f"stores.{key}: percent and fixed are two ways of giving the part; give one")
        low, high = rule.get("min"), rule.get("max")
        if low is not None and high is not None and low > high:
            problems.append(f"stores.{key}: min {low} is above max {high}")
        if rule.get("fixed") is not None and high is not None and rule["fixed"] > high:
            problems.append(f"stores.{key}: fixed {rule['fixed']} is above max {high}")
        percent_total += rule.get("percent") or 0
        if str(key) in (raw.get("shares") or {}) and (rule.get("percent") is not None or rule.get("fixed") is not None):
            problems.append(f"stores.{key}: a store with a percent or fixed rule takes no share weight")
    if mode == "shares" and percent_total > 100:
        problems.append(f"stores: the percentages add up to {percent_total}, over 100 (under shares each "
                        "store's part is exclusive)")
    if mode == "shares" and not any((raw.get("shares") or {}).values()) and not any(
            (r or {}).get("percent") or (r or {}).get("fixed") or (r or {}).get("min") for r in stores.values()) \
            and not raw.get("lock"):
        problems.append("shares: a shares policy needs at least one store with a positive weight, percent, "
                        "fixed quantity or min")
    return problems


def allocate(available: int, listings: list[ShopDemand], policy: "dict | Policy | None", *,
             now: datetime | None = None, lock_left: int | None = None) -> dict[int, int]:
    """Quantity to offer per listing id, computed afresh from ``available`` (no quotas kept).

    ``lock_left``: the units of an active lock its shop has not sold yet (None: all of them). The sum
    offered under ``shares`` never exceeds ``available``; under ``shared`` the parts overlap, and once
    ``available`` is at most what the shops together are expected to sell before their figures land,
    the sales-speed buffer keeps the sum of the offers at most ``available`` too."""
    available = max(0, available)
    if not listings:
        return {}
    rules = Policy.of(policy)
    if rules.quotas:
        parts = store_parts(available, sorted({d.store_id for d in listings}), rules, now=now)
        return {d.listing_id: finish_offer(parts.get(d.store_id, 0) - d.safety_stock, rules.rule(d.store_id))
                for d in listings}
    lock = rules.active_lock(now)
    held = 0
    if lock is not None and any(d.store_id == lock.store_id for d in listings):
        held = min(available, max(0, lock.units if lock_left is None else lock_left))
    result: dict[int, int] = {}
    for d in listings:
        rule = rules.rule(d.store_id)
        if lock is not None and d.store_id == lock.store_id:
            result[d.listing_id] = finish_offer(held - d.safety_stock, rule)
            continue
        part = shared_part(available - held, rule)
        speed = 0
        if rules.sales_speed_buffer:
            others = [o for o in listings if o.listing_id != d.listing_id
                      and (lock is None or o.store_id != lock.store_id)]
            speed = expected_sales(others, d.horizon_s)
        result[d.listing_id] = finish_offer(part - d.safety_stock - speed, rule)
    return result


def shared_part(base: int, rule: StoreRule) -> int:
    """A shop's overlapping part of ``base`` units under ``shared``."""
    base = max(0, base)
    part = base
    if rule.fixed is not None:
        part = min(rule.fixed, base)
    elif rule.percent is not None:
        part = base * rule.percent // 100
    part = max(part, min(rule.min, base))
    return part if rule.max is None else min(part, rule.max)


def finish_offer(part: int, rule: StoreRule) -> int:
    """The offer from a part less what was held back so far: the rule's buffer, then delist below N."""
    offer = max(0, part - rule.buffer)
    return 0 if offer < rule.delist_below else offer


def expected_sales(others: list[ShopDemand], horizon_s: float) -> int:
    """Units ``others`` are expected to sell before a figure that lands in ``horizon_s`` seconds takes
    effect: each one's rate times how late its sales reach us (sold already, not heard of yet), plus its
    rate times the longer of the two horizons (the units both shops show stay on offer in both until
    this figure has landed and the other's own figure has come down), the latter never more than it
    can still sell. Rounded up: a fraction of a unit held back is a unit held back."""
    total = 0.0
    for o in others:
        rate = max(0.0, o.rate)
        ahead = rate * max(0.0, horizon_s, o.horizon_s)
        if o.outstanding is not None:
            ahead = min(ahead, max(0, o.outstanding))
        total += rate * max(0.0, o.hear_lag_s) + ahead
    return math.ceil(total - 1e-9) if total > 0 else 0


def store_parts(available: int, store_ids: list[int], policy: "dict | Policy", *,
                now: datetime | None = None) -> dict[int, int]:
    """Under ``shares``: each store's part of ``available``; the parts never add up to more."""
    rules = Policy.of(policy)
    left = max(0, available)
    parts = {s: 0 for s in store_ids}
    lock = rules.active_lock(now)
    rest = list(store_ids)
    if lock is not None and lock.store_id in parts:
        parts[lock.store_id] = min(lock.units, left)
        left -= parts[lock.store_id]
        rest.remove(lock.store_id)
    after_lock = left
    store_rules = {s: rules.rule(s) for s in rest}
    floors = {s: _bounded(r.fixed if r.fixed is not None else r.min, r.max) for s, r in store_rules.items()}
    if sum(floors.values()) >= left:
        for s, part in shrink(left, floors).items():
            parts[s] += part
        return parts
    for s, floor in floors.items():
        parts[s] += floor
    left -= sum(floors.values())
    wanted = {s: max(0, _bounded(after_lock * r.percent // 100, r.max) - parts[s])
              for s, r in store_rules.items() if r.percent is not None and r.fixed is None}
    given = shrink(left, wanted) if sum(wanted.values()) > left else wanted
    for s, part in given.items():
        parts[s] += part
    left -= sum(given.values())
    weights = {s: rules.weight(s) for s in rest}
    room = {s: None if store_rules[s].max is None else max(0, store_rules[s].max - parts[s]) for s in rest}
    for s, part in _split_with_caps(left, weights, room).items():
        parts[s] += part
    return parts


def settle_quotas(available: int, quotas: dict[int, int | None], listings: list[ShopDemand],
                  policy: "dict | Policy", *, now: datetime | None = None) -> dict[int, int | None]:
    """Quota per listing id, after stock came in or went out other than by the shops' own sales (which
    use up their quotas and the available stock alike, changing nothing here).

    Under ``shares`` every listing has a quota; under ``shared`` only an active lock's listings do (the
    locked units their shop has not sold yet), the others None.

    A listing without a quota it should have (a new policy, a new listing, a new lock) rebalances every
    quota from ``available``. Otherwise only the unallocated difference ``available - sum(quotas)``
    moves: more stock first brings ``fixed`` and ``min`` shops up to their figure, then ``percent``
    shops take their percentage of the rest and the weighted shops what is left, within ``max``; the
    lock's shop gets none of it (its units are fixed). Less stock is taken from the quotas pro rata to their size. A quota gone negative (a
    shop sold more than its part) counts as 0 here, so its debt is never handed out again."""
    rules = Policy.of(policy)
    if not listings:
        return {}
    lock = rules.active_lock(now)
    locked = {d.listing_id for d in listings if lock is not None and d.store_id == lock.store_id}
    if not rules.quotas:
        if any(quotas.get(i) is None for i in locked):
            return {d.listing_id: (min(lock.units, max(0, available)) if d.listing_id in locked else None)
                    for d in listings}
        return {d.listing_id: (quotas[d.listing_id] if d.listing_id in locked else None) for d in listings}
    if any(quotas.get(d.listing_id) is None for d in listings):
        parts = store_parts(available, sorted({d.store_id for d in listings}), rules, now=now)
        return {d.listing_id: parts.get(d.store_id, 0) for d in listings}
    result = {d.listing_id: int(quotas[d.listing_id]) for d in listings}
    unallocated = max(0, available) - sum(max(0, q) for q in result.values())
    if unallocated > 0:
        growing = [d for d in listings if d.listing_id not in locked]
        room: dict[int, int | None] = {}
        for d in growing:
            rule = rules.rule(d.store_id)
            room[d.listing_id] = None if rule.max is None else max(0, rule.max - max(0, result[d.listing_id]))
        # Floors first: ``fixed`` and ``min`` shops are brought up to their figure.
        floors = {}
        for d in growing:
            rule = rules.rule(d.store_id)
            floor = _bounded(rule.fixed if rule.fixed is not None else rule.min, rule.max)
            floors[d.listing_id] = max(0, floor - max(0, result[d.listing_id]))
        unallocated -= _grow(result, room, shrink(unallocated, floors) if sum(floors.values()) > unallocated
                             else floors)
        # Then ``percent`` shops take their percentage of what came in, the weighted shops the rest.
        incoming = unallocated
        percents = {}
        for d in growing:
            rule = rules.rule(d.store_id)
            if rule.percent is not None and rule.fixed is None:
                percents[d.listing_id] = _bounded(incoming * rule.percent // 100, room[d.listing_id])
        unallocated -= _grow(result, room, percents)
        weights = {d.listing_id: rules.weight(d.store_id) for d in growing}
        unallocated -= _grow(result, room, _split_with_caps(unallocated, weights, room))
    elif unallocated < 0:
        held = {k: q for k, q in result.items() if q > 0}
        take = min(-unallocated, sum(held.values()))
        if take > 0:
            for listing_id, part in largest_remainder(take, held).items():
                result[listing_id] -= min(part, held[listing_id])
    return result


def sales_pace(rate: float, rated_at: datetime | None, heard: int, now: datetime, *,
               tau_s: float, window_s: float, longest_s: float, first_heard_at: datetime | None = None) -> float:
    """A listing's sales rate (units per second) from its last estimate and the units heard since.

    A peak-hold that decays: the estimate rises at once to the rate of the units heard since
    ``rated_at``, and otherwise decays by ``exp(-elapsed / tau_s)``. The units heard are spread over
    the time since ``rated_at``, but over at least ``window_s`` (one unit heard a millisecond after
    the last estimate is not a thousand units a second) and at most ``longest_s`` (a burst after a
    quiet hour is a burst, not the hour's average). Rising fast and falling slowly errs on the side
    that holds more back: a rate under-estimated at the start of a flash sale is what oversells; one
    over-estimated for a few seconds after a sale (or after a lone sale) only offers a little less.
    ``first_heard_at``: when the first of the units heard was heard, where known (the span then starts
    there: the first estimate of a burst is not diluted by the quiet before it)."""
    if rated_at is None:
        return max(0, heard) / window_s
    elapsed = max(0.0, (now - rated_at).total_seconds())
    decayed = max(0.0, rate) * math.exp(-elapsed / tau_s)
    span = elapsed
    if first_heard_at is not None and first_heard_at > rated_at:
        span = max(0.0, (now - first_heard_at).total_seconds())
    return max(decayed, max(0, heard) / min(max(span, window_s), max(window_s, longest_s)))


def _grow(quotas: dict[int, int], room: dict[int, int | None], given: dict[int, int]) -> int:
    """Add ``given`` to ``quotas`` (using up ``room``); returns the units given."""
    total = 0
    for listing_id, units in given.items():
        quotas[listing_id] += units
        if room.get(listing_id) is not None:
            room[listing_id] -= units
        total += units
    return total


def _bounded(value: int, upper: int | None) -> int:
    value = max(0, value)
    return value if upper is None else min(value, upper)


def shrink(total: int, sizes: dict) -> dict:
    """``total`` (less than the sum of ``sizes``) split pro rata to ``sizes``; no part exceeds its size."""
    total = max(0, total)
    if total == 0 or not any(sizes.values()):
        return {k: 0 for k in sizes}
    return largest_remainder(total, sizes)


def _split_with_caps(total: int, weights: dict[int, int], caps: dict[int, int | None]) -> dict[int, int]:
    parts = {k: 0 for k in weights}
    active = {k for k, w in weights.items() if w > 0}
    remaining = total
    while remaining > 0 and active:
        split = largest_remainder(remaining, {k: weights[k] for k in weights if k in active})
        capped = False
        for k in [k for k in weights if k in active]:
            room = None if caps.get(k) is None else caps[k] - parts[k]
            give = split[k] if room is None else min(split[k], room)
            parts[k] += give
            remaining -= give
            if room is not None and parts[k] >= caps[k]:
                active.discard(k)
                capped = True
        if not capped:
            break
    return parts


def largest_remainder(total: int, weights: dict) -> dict:
    """Split integer ``total`` by ``weights`` so the parts add up to ``total`` exactly.

    Ties in the remainders go to the earlier key, so the result is deterministic.
    """
    if total < 0:
        return {k: -v for k, v in largest_remainder(-total, weights).items()}
    weight_sum = sum(weights.values())
    if weight_sum <= 0 or not weights:
        raise ValueError("largest_remainder needs a positive total weight")
    floors = {k: total * w // weight_sum for k, w in weights.items()}
    order = list(weights)
    remainders = sorted(weights, key=lambda k: (-(total * weights[k] % weight_sum), order.index(k)))
    short = total - sum(floors.values())
    for k in remainders[:short]:
        floors[k] += 1
    return floors
