"""What each shop is offered of a sku: the whole available quantity less safety stock by default,
or shares / caps per shop during a sale, never offering more in total than is available."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShopDemand:
    """One listing of the sku in one store, as allocation sees it."""

    listing_id: int
    store_id: int
    safety_stock: int = 0


def allocate(available: int, listings: list[ShopDemand], policy: dict | None) -> dict[int, int]:
    """Quantity to offer per listing id.

    ``policy`` (per sku, optional):
    - ``{"mode": "shared"}`` or None: every listing is offered ``available - safety_stock``. Simple
      and what most shops expect, but two shops can both sell the last unit between pushes.
    - ``{"mode": "shares", "shares": {"<store_id>": weight, ...}, "caps": {"<store_id>": max}}``:
      the available quantity is split by weight with largest-remainder rounding, each part capped;
      what a capped or absent shop cannot use is rebalanced over the others. The sum offered never
      exceeds ``available`` (zero oversell across shops by construction).
    """
    available = max(0, available)
    if not listings:
        return {}
    mode = (policy or {}).get("mode", "shared")
    if mode == "shared":
        return {d.listing_id: max(0, available - d.safety_stock) for d in listings}
    if mode != "shares":
        raise ValueError(f"unknown allocation mode {mode!r}")
    shares = {str(k): int(v) for k, v in (policy.get("shares") or {}).items()}
    caps = {str(k): int(v) for k, v in (policy.get("caps") or {}).items()}
    # Stores: each store's listings of this sku share its part (usually one listing per store).
    by_store: dict[int, list[ShopDemand]] = {}
    for d in listings:
        by_store.setdefault(d.store_id, []).append(d)
    weights = {s: shares.get(str(s), 0 if shares else 1) for s in by_store}
    limits = {s: max(0, caps[str(s)]) if str(s) in caps else None for s in by_store}
    parts = _split_with_caps(available, weights, limits)
    result: dict[int, int] = {}
    for store_id, demands in by_store.items():
        part = parts.get(store_id, 0)
        for d in demands:
            # A store's own safety stock is held back from its part, never handed to another store.
            result[d.listing_id] = max(0, part - d.safety_stock)
    return result


def settle_quotas(available: int, quotas: dict[int, int | None], listings: list[ShopDemand],
                  policy: dict) -> dict[int, int]:
    """Quota per listing id under a share policy, after stock came in or went out other than by the
    shops' own sales (which use up their quotas and the available stock alike, changing nothing here).

    A listing without a quota (a new policy, a new listing) rebalances every quota from ``available``.
    Otherwise only the unallocated difference ``available - sum(quotas)`` moves: more stock is split by
    the policy's weights (caps counted on the quota), less is taken from the quotas pro rata to their
    size. A quota gone negative (a shop sold more than its part) counts as 0 here, so its debt is never
    handed out again."""
    plain = [ShopDemand(d.listing_id, d.store_id) for d in listings]
    if not listings:
        return {}
    if any(quotas.get(d.listing_id) is None for d in listings):
        return allocate(available, plain, policy)
    result = {d.listing_id: int(quotas[d.listing_id]) for d in listings}
    unallocated = max(0, available) - sum(max(0, q) for q in result.values())
    if unallocated > 0:
        shares = {str(k): int(v) for k, v in (policy.get("shares") or {}).items()}
        caps = {str(k): int(v) for k, v in (policy.get("caps") or {}).items()}
        weights = {d.listing_id: shares.get(str(d.store_id), 0 if shares else 1) for d in listings}
        limits = {d.listing_id: (max(0, caps[str(d.store_id)] - max(0, result[d.listing_id]))
                                 if str(d.store_id) in caps else None) for d in listings}
        for listing_id, give in _split_with_caps(unallocated, weights, limits).items():
            result[listing_id] += give
    elif unallocated < 0:
        held = {k: q for k, q in result.items() if q > 0}
        take = min(-unallocated, sum(held.values()))
        if take > 0:
            for listing_id, part in largest_remainder(take, held).items():
                result[listing_id] -= min(part, held[listing_id])
    return result


def _split_with_caps(total: int, weights: dict[int, int], caps: dict[int, int | None]) -> dict[int, int]:
    parts = {k: 0 for k in weights}
    active = {k for k, w in weights.items() if w > 0}
    remaining = total
    while remaining > 0 and active:
        split = largest_remainder(remaining, {k: weights[k] for k in active})
        capped = False
        for k in list(active):
            room = None if caps[k] is None else caps[k] - parts[k]
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
    remainders = sorted(weights, key=lambda k: (-(total * weights[k] % weight_sum), list(weights).index(k)))
    short = total - sum(floors.values())
    for k in remainders[:short]:
        floors[k] += 1
    return floors
