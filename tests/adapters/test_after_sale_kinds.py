"""Every platform's after-sale types onto the canonical kinds (operations.md part 3), with where a
return's goods and an exchange's replacement stand. Pinduoduo and Douyin have their own tables in
their mapping tests; these are Taobao, Shopify and WooCommerce."""

from __future__ import annotations

import json

import pytest

from adapters.base import restock_for_kind
from adapters.shopify.mapping import map_refund as shopify_refund
from adapters.taobao import mapping as taobao
from adapters.woocommerce.mapping import map_refund as woo_refund
from tests.conftest import FIXTURES


def load(path: str):
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("dispute_type, kind, restock", [
    ("REFUND", "refund_only", "no_restock"),
    ("REFUND_AND_RETURN", "return", "return"),
    ("TMALL_EXCHANGE", "exchange", "return"),
    ("TAOBAO_EXCHANGE", "exchange", "return"),
    ("RESHIPPING", "reship", "no_restock"),
    ("REPAIR", "repair", "no_restock"),
    ("OTHERS", "return", "return"),  # read from the goods: this refund had them returned
    (None, "return", "return"),  # dispute_type not asked for in ``fields``: the same
])
def test_taobao_dispute_type_is_the_kind(dispute_type, kind, restock):
    raw = load("taobao/refund-150000000000001.json") | {"dispute_type": dispute_type}
    refund = taobao.map_refund(raw)
    assert (refund.kind, refund.lines[0].restock) == (kind, restock)


def test_taobao_refund_only_during_the_sale_still_releases():
    refund = taobao.map_refund(load("taobao/refund-150000000000002.json") | {"dispute_type": "REFUND"})
    assert (refund.kind, refund.lines[0].restock, refund.return_status) == ("refund_only", "cancel", None)


@pytest.mark.parametrize("status, return_status, replacement", [
    ("WAIT_SELLER_AGREE", "awaiting_goods", None),
    ("WAIT_SELLER_CONFIRM_GOODS", "awaiting_goods", None),  # sent back, not confirmed
    ("WAIT_SELLER_CONSIGN_GOODS", "received", "due"),
    ("WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS", "received", "shipped"),
    ("EXCHANGE_TRANSFORM_TO_REFUND", None, "cancelled"),
    ("SUCCESS", "received", "shipped"),
])
def test_taobao_exchange_statuses(status, return_status, replacement):
    refund = taobao.map_refund(load("taobao/refund-150000000000003.json") | {"status": status})
    assert (refund.kind, refund.return_status, refund.replacement_status) == ("exchange", return_status, replacement)


def test_taobao_reship_takes_nothing_back():
    refund = taobao.map_refund(load("taobao/refund-150000000000004.json"))
    assert (refund.kind, refund.return_status, refund.replacement_status) == ("reship", None, "due")


def test_shopify_restocked_return_is_a_return_received_and_no_restock_is_money_only():
    legacy = shopify_refund(load("shopify/refund_rest_single_shopify_python_api.json")["refund"], "USD")
    assert (legacy.kind, legacy.return_status) == ("return", "received")
    money = shopify_refund(load("shopify/refund_rest_create_2026-07_shopify_app_js.json")["refund"], "USD")
    assert (money.kind, money.return_status) == ("refund_only", None)


def test_woocommerce_quantities_back_from_a_completed_order_are_a_return():
    order = next(o for o in load("woocommerce/orders_rest_list_docs.json") if o["id"] == 723)
    refunds = {r["id"]: r for r in load("woocommerce/order_refunds_rest_list_docs.json")}
    assert woo_refund(refunds[724], order).kind == "return"  # one line, quantity -1, order completed
    assert woo_refund(refunds[726], order).kind == "refund_only"  # amount only


@pytest.mark.parametrize("kind, shipped, restock", [
    ("refund_only", False, "cancel"), ("refund_only", True, "no_restock"), ("refund_only", None, "no_restock"),
    ("return", True, "return"), ("exchange", True, "return"), ("reship", True, "no_restock"),
    ("repair", True, "no_restock"), ("price_protection", None, "no_restock"),
])
def test_what_each_kind_does_with_its_goods(kind, shipped, restock):
    assert restock_for_kind(kind, shipped) == restock
