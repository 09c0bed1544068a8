"""Allocation (pure): what each shop is offered never sums past what is available."""

from __future__ import annotations

from hypothesis import given, strategies as st

from app.domain.allocation import ShopDemand, allocate, largest_remainder


def test_shared_offers_everyone_the_whole_available_less_safety_stock():
    demands = [ShopDemand(1, 10, 0), ShopDemand(2, 20, 5)]
    assert allocate(100, demands, None) == {1: 100, 2: 95}
    assert allocate(-3, demands, None) == {1: 0, 2: 0}


def test_shares_split_by_weight_and_add_up():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20), ShopDemand(3, 30)]
    offers = allocate(101, demands, {"mode": "shares", "shares": {"10": 70, "20": 20, "30": 10}})
    assert offers == {1: 71, 2: 20, 3: 10}


def test_a_capped_shop_leaves_its_rest_to_the_others():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20)]
    offers = allocate(100, demands, {"mode": "shares", "shares": {"10": 70, "20": 30}, "caps": {"10": 40}})
    assert offers == {1: 40, 2: 60}


def test_a_store_without_a_share_is_offered_nothing():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20)]
    assert allocate(50, demands, {"mode": "shares", "shares": {"10": 1}}) == {1: 50, 2: 0}


def test_largest_remainder_adds_up_exactly_and_breaks_ties_in_order():
    assert largest_remainder(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert largest_remainder(-10, {"a": 1, "b": 1, "c": 1}) == {"a": -4, "b": -3, "c": -3}


@given(available=st.integers(min_value=-5, max_value=10_000),
       weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6),
       caps=st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=500)), min_size=6, max_size=6))
def test_shares_never_offer_more_than_available(available, weights, caps):
    if not any(weights):
        weights = weights[:-1] + [1]
    demands = [ShopDemand(i, 100 + i) for i in range(len(weights))]
    policy = {"mode": "shares", "shares": {str(100 + i): w for i, w in enumerate(weights)},
              "caps": {str(100 + i): c for i, c in enumerate(caps[:len(weights)]) if c is not None}}
    offers = allocate(available, demands, policy)
    assert sum(offers.values()) <= max(0, available)
    assert all(v >= 0 for v in offers.values())
    for i, c in enumerate(caps[:len(weights)]):
        if c is not None:
            assert offers[i] <= c


@given(total=st.integers(min_value=-10**9, max_value=10**9),
       weights=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20))
def test_largest_remainder_parts_always_sum_to_the_whole(total, weights):
    parts = largest_remainder(total, dict(enumerate(weights)))
    assert sum(parts.values()) == total


# -- per-store rules, the lock and the sales-speed buffer (issue 15 point 3) ----------------------------

from datetime import datetime, timedelta, timezone  # noqa: E402

from app.domain.allocation import Policy, policy_problems, sales_pace, settle_quotas, store_parts  # noqa: E402

NOW = datetime(2026, 12, 1, 20, 0, tzinfo=timezone.utc)
LATER = (NOW + timedelta(hours=1)).isoformat()


def test_percent_fixed_min_and_weights_split_a_shares_policy_in_that_order():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20), ShopDemand(3, 30), ShopDemand(4, 40)]
    policy = {"mode": "shares", "shares": {"30": 3, "40": 1},
              "stores": {"10": {"fixed": 100}, "20": {"percent": 50}, "40": {"min": 60}}}
    # 1000: fixed 100 and min 60 first, 50 % of 1000 for store 20, the 340 left 3:1 over 30 and 40.
    assert allocate(1000, demands, policy) == {1: 100, 2: 500, 3: 255, 4: 145}
    # Too little for the floors: they shrink pro rata, nothing else is offered.
    assert allocate(80, demands, policy) == {1: 50, 2: 0, 3: 0, 4: 30}


def test_a_buffer_is_held_back_and_below_delist_the_shop_is_offered_nothing():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20, safety_stock=1)]
    rules = {"stores": {"10": {"buffer": 5}, "20": {"delist_below": 10}}}
    assert allocate(50, demands, {"mode": "shared", **rules}) == {1: 45, 2: 49}
    assert allocate(10, demands, {"mode": "shared", **rules}) == {1: 5, 2: 0}  # 10 - 1 safety is below 10
    assert allocate(11, demands, {"mode": "shared", **rules}) == {1: 6, 2: 10}


def test_under_shared_percent_fixed_min_and_max_bound_each_overlapping_part():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20), ShopDemand(3, 30)]
    policy = {"mode": "shared", "stores": {"10": {"percent": 40}, "20": {"fixed": 30}, "30": {"max": 70, "min": 5}}}
    assert allocate(100, demands, policy) == {1: 40, 2: 30, 3: 70}
    assert allocate(20, demands, policy) == {1: 8, 2: 20, 3: 20}


def test_a_lock_sets_its_units_aside_for_its_shop_and_is_ignored_once_it_ends():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20), ShopDemand(3, 30)]
    lock = {"store_id": 10, "units": 200, "until": LATER}
    shared = {"mode": "shared", "lock": lock, "sales_speed_buffer": False}
    assert allocate(500, demands, shared, now=NOW) == {1: 200, 2: 300, 3: 300}
    assert allocate(500, demands, shared, now=NOW, lock_left=150) == {1: 150, 2: 350, 3: 350}
    assert allocate(500, demands, shared, now=NOW + timedelta(hours=2)) == {1: 500, 2: 500, 3: 500}
    shares = {"mode": "shares", "shares": {"10": 1, "20": 1, "30": 3}, "lock": lock}
    assert allocate(500, demands, shares, now=NOW) == {1: 200, 2: 75, 3: 225}
    assert allocate(150, demands, shares, now=NOW) == {1: 150, 2: 0, 3: 0}


def test_the_sales_speed_buffer_takes_off_what_the_other_shops_will_sell_before_the_figure_lands():
    # Shop 1 sells 30 units/s and is heard of 0.5 s late; a figure lands 0.3 s after a change.
    demands = [ShopDemand(1, 10, rate=30.0, hear_lag_s=0.5, horizon_s=0.3),
               ShopDemand(2, 20, rate=0.0, hear_lag_s=0.0, horizon_s=0.3),
               ShopDemand(3, 30, rate=10.0, hear_lag_s=2.0, horizon_s=0.3)]
    offers = allocate(100, demands, None)  # the default: shared, buffer on
    # 30 * 0.8 = 24 and 10 * 2.3 = 23.
    assert offers == {1: 100 - 23, 2: 100 - 24 - 23, 3: 100 - 24}
    assert allocate(100, demands, {"mode": "shared", "sales_speed_buffer": False}) == {1: 100, 2: 100, 3: 100}
    # A shop cannot go on to sell more than it still shows: shop 1 with 5 left holds back the 15 it sold
    # unheard (30/s over its 0.5 s lag) and at most 5 more.
    capped = [ShopDemand(1, 10, rate=30.0, hear_lag_s=0.5, horizon_s=0.3, outstanding=5), demands[1]]
    assert allocate(100, capped, None) == {1: 100, 2: 80}


@given(available=st.integers(min_value=0, max_value=2000),
       paces=st.lists(st.tuples(st.floats(min_value=0, max_value=500), st.floats(min_value=0, max_value=5)),
                      min_size=2, max_size=6),
       horizon=st.floats(min_value=0, max_value=3))
def test_once_available_is_what_the_shops_will_sell_before_the_figures_land_the_offers_add_up_to_no_more(
        available, paces, horizon):
    demands = [ShopDemand(i, 100 + i, rate=r, hear_lag_s=lag, horizon_s=horizon) for i, (r, lag) in enumerate(paces)]
    expected = sum(r * (lag + horizon) for r, lag in paces)
    offers = allocate(available, demands, None)
    assert all(0 <= v <= available for v in offers.values())
    if available <= expected:
        assert sum(offers.values()) <= available


RULE = st.fixed_dictionaries({}, optional={
    "percent": st.integers(min_value=0, max_value=60), "fixed": st.integers(min_value=0, max_value=400),
    "min": st.integers(min_value=0, max_value=300), "max": st.integers(min_value=0, max_value=500),
    "buffer": st.integers(min_value=0, max_value=20), "delist_below": st.integers(min_value=0, max_value=30)})


def _valid_rules(rules: list[dict]) -> list[dict]:
    """Hypothesis' rules made consistent the way the API insists (one of percent/fixed; min <= max;
    fixed <= max; percentages at most 100 in total)."""
    fixed = []
    total = 0
    for rule in rules:
        rule = dict(rule)
        if "percent" in rule and "fixed" in rule:
            del rule["fixed"]
        if "max" in rule:
            rule["min"] = min(rule.get("min", 0), rule["max"])
            if "fixed" in rule:
                rule["fixed"] = min(rule["fixed"], rule["max"])
        if total + rule.get("percent", 0) > 100:
            rule.pop("percent")
        total += rule.get("percent", 0)
        fixed.append(rule)
    return fixed


@given(available=st.integers(min_value=-5, max_value=3000), rules=st.lists(RULE, min_size=1, max_size=5),
       weights=st.lists(st.integers(min_value=0, max_value=50), min_size=5, max_size=5),
       lock=st.one_of(st.none(), st.tuples(st.integers(min_value=0, max_value=4), st.integers(min_value=1, max_value=800))))
def test_share_rules_never_offer_more_than_available_and_keep_min_max_delist_buffer_and_lock(
        available, rules, weights, lock):
    rules = _valid_rules(rules)
    stores = [100 + i for i in range(len(rules))]
    policy = {"mode": "shares", "shares": {str(s): w for s, w in zip(stores, weights)},
              "stores": {str(s): r for s, r in zip(stores, rules)}}
    locked = None
    if lock is not None and lock[0] < len(stores):
        locked = stores[lock[0]]
        policy["lock"] = {"store_id": locked, "units": lock[1], "until": LATER}
    demands = [ShopDemand(i, s) for i, s in enumerate(stores)]
    parts = store_parts(available, stores, policy, now=NOW)
    offers = allocate(available, demands, policy, now=NOW)
    assert sum(parts.values()) <= max(0, available)
    assert sum(offers.values()) <= max(0, available)
    rest = max(0, available) - (min(lock[1], max(0, available)) if locked else 0)
    floors = sum(min(r.get("fixed", r.get("min", 0)), r.get("max", 10**9))
                 for s, r in zip(stores, rules) if s != locked)
    for i, (store, rule) in enumerate(zip(stores, rules)):
        part = parts[store]
        if store == locked:
            assert part == min(lock[1], max(0, available))
            continue
        if "max" in rule:
            assert part <= rule["max"]
        if floors <= rest:
            assert part >= min(rule.get("fixed", rule.get("min", 0)), rule.get("max", 10**9))
        if "fixed" in rule and floors <= rest:
            assert part == rule["fixed"]
        expected = max(0, part - rule.get("buffer", 0))
        assert offers[i] == (0 if expected < rule.get("delist_below", 0) else expected)


@given(before=st.integers(min_value=0, max_value=1000), change=st.integers(min_value=-500, max_value=800),
       rules=st.lists(RULE, min_size=2, max_size=4), weights=st.lists(st.integers(min_value=0, max_value=9),
                                                                     min_size=4, max_size=4))
def test_settled_quotas_never_add_up_to_more_than_available_and_stay_within_max(before, change, rules, weights):
    rules = _valid_rules(rules)
    stores = [100 + i for i in range(len(rules))]
    policy = {"mode": "shares", "shares": {str(s): w for s, w in zip(stores, weights)},
              "stores": {str(s): r for s, r in zip(stores, rules)}}
    demands = [ShopDemand(i, s) for i, s in enumerate(stores)]
    quotas = settle_quotas(before, {d.listing_id: None for d in demands}, demands, policy)
    after = max(0, before + change)
    quotas = settle_quotas(after, quotas, demands, policy)
    assert sum(max(0, q) for q in quotas.values()) <= after
    for i, rule in enumerate(rules):
        if "max" in rule:
            assert quotas[i] <= rule["max"]


def test_stock_coming_in_tops_fixed_and_min_shops_up_first_and_leaves_the_lock_alone():
    demands = [ShopDemand(1, 10), ShopDemand(2, 20), ShopDemand(3, 30)]
    policy = {"mode": "shares", "stores": {"10": {"fixed": 100}, "20": {"min": 50}},
              "lock": {"store_id": 30, "units": 40, "until": LATER}}
    quotas = {1: 30, 2: 10, 3: 40}  # store 10 sold 70 of its 100, store 20 sold 40 of 50
    # 60 in, short of the 70 + 40 the floors lack: shared 70 : 40.
    assert settle_quotas(140, quotas, demands, policy, now=NOW) == {1: 68, 2: 32, 3: 40}
    assert settle_quotas(200, quotas, demands, policy, now=NOW) == {1: 100, 2: 60, 3: 40}


def test_a_policy_is_checked_as_a_whole():
    assert policy_problems({"mode": "shares", "shares": {"1": 1}, "stores": {"2": {"percent": 60}, "3": {"percent": 50}}})
    assert policy_problems({"mode": "shared", "stores": {"2": {"percent": 60}, "3": {"percent": 50}}}) == []
    assert policy_problems({"stores": {"2": {"percent": 10, "fixed": 5}}})
    assert policy_problems({"stores": {"2": {"min": 10, "max": 5}}})
    assert policy_problems({"mode": "shares", "shares": {}})
    assert policy_problems({"mode": "shares", "shares": {}, "stores": {"2": {"fixed": 5}}}) == []
    assert Policy.of(None) == Policy(mode="shared", sales_speed_buffer=True)


def test_a_sales_pace_rises_at_once_and_decays_slowly():
    def pace(rate, heard, seconds):
        return sales_pace(rate, NOW, heard, NOW + timedelta(seconds=seconds), tau_s=5, window_s=0.5, longest_s=2)

    assert pace(0.0, 30, 1) == 30.0
    assert pace(0.0, 1, 0.001) == 2.0  # one unit heard a millisecond later is not a thousand a second
    assert 11.0 < pace(30.0, 0, 5) < 11.1  # 30 / e
    assert pace(30.0, 200, 2) == 100.0
    assert pace(0.0, 200, 3600) == 100.0  # a burst after a quiet hour is a burst


def test_the_first_estimate_of_a_burst_is_not_diluted_by_the_quiet_before_it():
    burst_began = NOW + timedelta(seconds=59.5)
    assert sales_pace(0.0, NOW, 150, NOW + timedelta(seconds=60), tau_s=5, window_s=0.2, longest_s=1,
                      first_heard_at=burst_began) == 300.0
