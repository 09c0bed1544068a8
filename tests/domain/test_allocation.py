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
