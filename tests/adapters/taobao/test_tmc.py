"""Taobao TMC, client side: consume and confirm through the signed TOP gateway as app-level calls, and a
stored message read back as notices by ``parse_webhook`` (operations.md 6.2)."""

from __future__ import annotations

import json

import httpx
import pytest

from adapters.base import OrderNotice, RefundNotice
from adapters.channels import CHANNEL_HEADER
from adapters.errors import PayloadError, PermanentError, TransientError
from adapters.taobao import tmc
from adapters.taobao.client import TopClient
from top_fakes import APP_KEY, GATEWAY, SECRET, make_adapter

CHANNEL_HEADERS = {CHANNEL_HEADER: tmc.CHANNEL}


def _message(message_id: int, topic: str, content: dict, user_id: int = 2200000001) -> dict:
    return {"id": message_id, "topic": topic, "user_id": user_id, "user_nick": "秦巴茶叶", "pub_app_key": "12497914",
            "pub_time": "2024-06-10 20:16:31", "content": json.dumps(content)}


@pytest.fixture
async def client(gateway):
    async with httpx.AsyncClient() as http:
        yield TopClient(http, app_key=APP_KEY, app_secret=SECRET, access_token=None, base_url=GATEWAY)


async def test_consume_is_an_app_call_and_maps_each_message(fake, client):
    fake.on("taobao.tmc.messages.consume", lambda p: {"tmc_messages_consume_response": {"messages": {"tmc_message": [
        _message(9007199254740993, "taobao_trade_TradeBuyerPay", {"tid": 3300000000000001}),
        _message(2, "taobao_item_ItemUpdate", {"num_iid": 1})]}}})
    batch = await tmc.consume(client, "coop", quantity=500)
    [call] = fake.calls
    assert "session" not in call and call["group_name"] == "coop" and call["quantity"] == "200"
    first, second = batch
    # An id past 2^53 survives exactly: it is the delivery identity.
    assert (first.message_id, first.topic, first.shop_id, first.shop_nick, first.wanted) == \
        ("9007199254740993", "taobao_trade_TradeBuyerPay", "2200000001", "秦巴茶叶", True)
    assert first.dedupe_key == "taobao-tmc:9007199254740993"
    assert second.wanted is False


async def test_an_empty_consume_is_no_message(fake, client):
    fake.on("taobao.tmc.messages.consume", lambda p: {"tmc_messages_consume_response": {}})
    assert await tmc.consume(client) == []


async def test_confirm_sends_the_ids_in_chunks_of_200(fake, client):
    fake.on("taobao.tmc.messages.confirm", lambda p: {"tmc_messages_confirm_response": {"is_success": True}})
    ids = [str(n) for n in range(1, 251)]
    await tmc.confirm(client, ids, "coop")
    assert [c["s_message_ids"].split(",") for c in fake.calls] == [ids[:200], ids[200:]]
    assert {c["group_name"] for c in fake.calls} == {"coop"} and all("session" not in c for c in fake.calls)


async def test_a_confirm_without_success_is_transient(fake, client):
    fake.on("taobao.tmc.messages.confirm", lambda p: {"tmc_messages_confirm_response": {"is_success": False}})
    with pytest.raises(TransientError):
        await tmc.confirm(client, ["1"])


def test_parse_webhook_turns_trade_and_refund_messages_into_notices():
    adapter = make_adapter([])

    def parse(row: dict):
        return adapter.parse_webhook(CHANNEL_HEADERS, tmc.message_of(row).body)

    assert parse(_message(1, "taobao_trade_TradeSellerShip", {"tid": 3300000000000001, "oid": 1})).notices == \
        [OrderNotice(external_id="3300000000000001")]
    assert parse(_message(2, "taobao_refund_RefundCreated", {"refund_id": 150000000000001, "tid": 3300000000000001}
                          )).notices == [RefundNotice(external_id="150000000000001", order_external_id="3300000000000001")]
    assert parse(_message(3, "taobao_trade_TradeMemoModified", {"tid": 1})).notices == []
    with pytest.raises(PayloadError):
        parse(_message(4, "taobao_refund_RefundSuccess", {"tid": 1}))
    with pytest.raises(PermanentError, match="no webhooks"):
        adapter.parse_webhook({}, tmc.message_of(_message(1, "taobao_trade_TradeBuyerPay", {"tid": 1})).body)
