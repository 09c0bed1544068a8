"""Tmall stock (issue 17 point 3): a Taobao store whose settings say ``mall: tmall`` pushes through
tmall.item.quantity.update, increments with type 2 under an ``outer_biz_key`` applied once, absolute figures
with type 1; it declares idempotent deltas, which a Taobao store does not; a Taobao store is unchanged."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from adapters.base import Capability, StockLevel
from adapters.errors import PermanentError
from adapters.taobao.adapter import TaobaoAdapter, outer_biz_key, repeated_key
from tmall_fakes import TmallItem
from top_fakes import error, make_adapter

TMALL = {"mall": "tmall"}


@pytest.fixture
async def tmall(gateway, sleeps):
    async with httpx.AsyncClient() as http:
        yield make_adapter(sleeps, settings=TMALL, http=http)


def test_a_tmall_store_declares_idempotent_deltas_and_a_taobao_store_does_not():
    tmall = TaobaoAdapter.store_capabilities(TMALL)
    assert {Capability.STOCK_DELTA, Capability.STOCK_DELTA_IDEMPOTENT} <= tmall
    assert tmall - TaobaoAdapter.capabilities == {Capability.STOCK_DELTA_IDEMPOTENT}
    for settings in ({}, {"mall": "taobao"}, {"sign_method": "hmac"}):
        assert TaobaoAdapter.store_capabilities(settings) == TaobaoAdapter.capabilities
        assert Capability.STOCK_DELTA_IDEMPOTENT not in TaobaoAdapter.store_capabilities(settings)


async def test_a_tmall_delta_goes_out_with_type_2_under_its_outer_biz_key(tmall, fake):
    item = TmallItem(20)
    fake.on("tmall.item.quantity.update", item)
    key = uuid.uuid4().hex
    results = await tmall.push_stock([StockLevel("5", 17, {"num_iid": "1", "sku_id": "5"}, delta=-3, idempotency_key=key)])
    assert [(r.external_sku_key, r.ok) for r in results] == [("5", True)]
    (call,) = fake.calls
    assert call["method"] == "tmall.item.quantity.update" and call["item_id"] == "1"
    assert json.loads(call["options"]) == {"type": 2, "outer_biz_key": key}
    assert json.loads(call["sku_quantities"]) == [{"sku_id": 5, "quantity": -3}]
    assert "item_quantity" not in call and item.count == 17


async def test_a_tmall_absolute_figure_goes_out_with_type_1_and_no_key(tmall, fake):
    item = TmallItem(20)
    fake.on("tmall.item.quantity.update", item)
    results = await tmall.push_stock([StockLevel("1", 7, {"num_iid": "1"}), StockLevel("2", -4, {"num_iid": "2"})])
    assert [r.ok for r in results] == [True, True]
    assert [(c["item_id"], c["item_quantity"], json.loads(c["options"])) for c in fake.calls] == [
        ("1", "7", {"type": 1}), ("2", "0", {"type": 1})]  # a full figure is never negative
    assert all("sku_quantities" not in c for c in fake.calls)


@pytest.mark.parametrize("repeat", ["refusal", "success"])
async def test_a_tmall_delta_whose_answer_was_lost_is_sent_again_under_its_key_and_applied_once(
        tmall, fake, sleeps, repeat):
    item = TmallItem(20, repeat=repeat)
    item.lose_answers = 1
    fake.on("tmall.item.quantity.update", item)
    key = uuid.uuid4().hex
    results = await tmall.push_stock([StockLevel("1", 30, {"num_iid": "1"}, delta=10, idempotency_key=key)])
    assert results[0].ok  # the repeat says "done already" (or answers as the first did): settled
    assert [json.loads(c["options"])["outer_biz_key"] for c in fake.calls] == [key, key]
    assert (item.count, item.applied) == (30, 1) and len(sleeps) == 1


async def test_a_tmall_refusal_that_is_not_a_repeat_stays_a_refusal(tmall, fake):
    fake.script("tmall.item.quantity.update", error(15, "Remote service error", "isv.item-not-exist", "商品不存在"))
    results = await tmall.push_stock([StockLevel("1", 3, {"num_iid": "9"}, delta=1, idempotency_key=uuid.uuid4().hex)])
    assert (results[0].ok, results[0].error_kind) == (False, "permanent") and len(fake.calls) == 1


async def test_a_tmall_delta_without_a_key_is_sent_once_and_never_repeated_blind(tmall, fake):
    item = TmallItem(20)
    item.lose_answers = 1
    fake.on("tmall.item.quantity.update", item)
    results = await tmall.push_stock([StockLevel("1", 25, {"num_iid": "1"}, delta=5)])
    assert results[0].error_kind == "transient" and len(fake.calls) == 1
    assert json.loads(fake.calls[0]["options"]) == {"type": 2}


async def test_a_taobao_store_still_pushes_through_taobao_item_quantity_update(adapter, fake):
    fake.on("taobao.item.quantity.update", lambda params: {
        "item_quantity_update_response": {"item": {"num_iid": int(params["num_iid"])}}})
    results = await adapter.push_stock([
        StockLevel("s1", 9, {"num_iid": "1", "sku_id": "s1"}, delta=2, idempotency_key=uuid.uuid4().hex),
        StockLevel("2", 4, {"num_iid": "2"})])
    assert [r.ok for r in results] == [True, True]
    assert fake.methods() == ["taobao.item.quantity.update"] * 2
    assert [(c["quantity"], c["type"], "outer_biz_key" in c or "options" in c) for c in fake.calls] == [
        ("2", "2", False), ("4", "1", False)]


def test_outer_biz_key_is_hex_and_stable():
    key = uuid.uuid4()
    assert outer_biz_key(key.hex) == key.hex
    assert outer_biz_key(str(key)) == key.hex  # dashes dropped
    derived = outer_biz_key("order:7:line:1:delta")
    assert derived == outer_biz_key("order:7:line:1:delta") and len(derived) == 32
    assert all(c in "0123456789abcdef" for c in derived)


def test_only_a_refusal_naming_a_repeat_counts_as_applied():
    assert repeated_key(PermanentError("Remote service error / outer_biz_key重复", code="15"))
    assert repeated_key(PermanentError("Remote service error / 重复请求", code="15"))
    assert not repeated_key(PermanentError("Remote service error / 商品不存在", code="15"))
    assert not repeated_key(PermanentError("Remote service error / outer_biz_key格式错误", code="15"))
    # A repeated parameter, or an operation in progress, is not the increment applied before.
    assert not repeated_key(PermanentError("Remote service error / 请求参数sku_id重复", code="15"))
    assert not repeated_key(PermanentError("Remote service error / 操作已处理中，请稍后", code="15"))
