"""Pinduoduo's message service, client side: the signed connect URL, frames, acks, heartbeats, and the
stored message read back as notices by ``parse_webhook`` (operations.md 6.1)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest

from adapters.base import OrderNotice, RefundNotice
from adapters.channels import CHANNEL_HEADER
from adapters.errors import PayloadError, PermanentError, TransientError
from adapters.pinduoduo import messages
from pdd_fakes import make_adapter
from tests.pdd_message_server import CLIENT_ID, CLIENT_SECRET, FakeMessageService

CHANNEL_HEADERS = {CHANNEL_HEADER: messages.CHANNEL}


def _frame(topic: str, content: dict, *, message_id: int = 7000000001, mall_id: int = 880001) -> str:
    return json.dumps({"id": message_id, "commandType": "Common", "time": 1717207200000, "sendTime": 1717207199000,
                       "message": {"type": topic, "mallID": mall_id, "content": json.dumps(content)}})


def test_connect_sign_is_base64_of_the_hex_md5_not_of_the_raw_digest():
    sign = messages.connect_sign("coop-client", 1717207200000, "coop-secret")
    text = "coop-client1717207200000coop-secret".encode()
    assert sign == base64.b64encode(hashlib.md5(text).hexdigest().encode()).decode()
    assert sign != base64.b64encode(hashlib.md5(text).digest()).decode()
    assert len(sign) == 44 and "/" not in sign and "+" not in sign  # a safe path segment


def test_connect_url_carries_client_id_timestamp_and_sign():
    url = messages.connect_url("wss://message-api.pinduoduo.com/", "coop-client", "coop-secret", 1717207200000)
    assert url == ("wss://message-api.pinduoduo.com/message/coop-client/1717207200000/"
                   + messages.connect_sign("coop-client", 1717207200000, "coop-secret"))


def test_a_common_frame_is_a_message_of_its_mall_and_its_ack_names_it():
    text = _frame("pdd_trade_TradeConfirmed", {"tid": "240601-1", "mall_id": 880001})
    frame = messages.parse_frame(text)
    message = frame.message
    assert (message.message_id.split(":")[0], message.topic, message.shop_id, message.wanted) == \
        ("7000000001", "pdd_trade_TradeConfirmed", "880001", True)
    assert message.body == text.encode() and message.dedupe_key == f"pdd-message-service:{message.message_id}"
    # The same frame id on another message (if PDD's ids are a sequence per connection) is another key;
    # the same message again (a redelivery) is the same key.
    other = messages.parse_frame(_frame("pdd_trade_TradeConfirmed", {"tid": "240601-2", "mall_id": 880001})).message
    assert other.dedupe_key != message.dedupe_key
    assert messages.parse_frame(text).message.dedupe_key == message.dedupe_key
    ack = json.loads(messages.ack_frame(message, 1717207201000))
    assert ack == {"commandType": "Ack", "time": 1717207201000, "id": 7000000001, "sendTime": 1717207199000,
                   "type": "pdd_trade_TradeConfirmed", "mallID": 880001}


def test_heartbeat_and_goods_frames_carry_nothing_we_store():
    assert messages.parse_frame('{"commandType":"HeartBeat","time":1}').message is None
    assert json.loads(messages.heartbeat_frame(5)) == {"commandType": "HeartBeat", "time": 5}
    assert messages.parse_frame(_frame("pdd_goods_GoodsUpdate", {"goods_id": 1})).message.wanted is False
    assert messages.parse_frame(_frame("pdd_trade_TradeMemoModified", {"tid": "x"})).message.wanted is False
    with pytest.raises(PayloadError):
        messages.parse_frame("not json")


def test_parse_webhook_turns_a_stored_message_into_a_notice_the_worker_fetches():
    adapter = make_adapter([])
    order = adapter.parse_webhook(CHANNEL_HEADERS, _frame("pdd_trade_TradeSellerShip", {"tid": "240601-1"}).encode())
    assert order.notices == [OrderNotice(external_id="240601-1")] and order.topic == "pdd_trade_TradeSellerShip"
    refund = adapter.parse_webhook(
        CHANNEL_HEADERS, _frame("pdd_refund_RefundCreated", {"tid": "240601-1", "refund_id": 9100000001}).encode())
    assert refund.notices == [RefundNotice(external_id="9100000001", order_external_id="240601-1")]
    assert adapter.parse_webhook(CHANNEL_HEADERS, _frame("pdd_goods_GoodsAdd", {}).encode()).notices == []
    with pytest.raises(PayloadError):
        adapter.parse_webhook(CHANNEL_HEADERS, _frame("pdd_trade_TradeConfirmed", {"mall_id": 1}).encode())


def test_parse_webhook_refuses_what_the_channel_did_not_store():
    adapter = make_adapter([])
    with pytest.raises(PermanentError, match="no webhooks"):
        adapter.parse_webhook({}, _frame("pdd_trade_TradeConfirmed", {"tid": "240601-1"}).encode())


async def test_a_connection_reads_messages_acks_them_and_sends_heartbeats():
    async with FakeMessageService() as server:
        first = server.publish("880001", "pdd_trade_TradeConfirmed", {"tid": "240601-1"})
        url = messages.connect_url(server.url, CLIENT_ID, CLIENT_SECRET, messages.now_ms())
        async with messages.MessageServiceConnection.open(url, heartbeat_s=0.05) as conn:
            received = []

            async def read() -> None:
                async for message in conn:
                    received.append(message)
                    await conn.ack(message)
                    if len(received) == 2:
                        return

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.05)
            second = server.publish("880001", "pdd_refund_RefundCreated", {"tid": "240601-1", "refund_id": 1})
            await asyncio.wait_for(reader, 5)
            await asyncio.sleep(0.3)
        assert [m.message_id.split(":")[0] for m in received] == [str(first), str(second)]
        for _ in range(100):
            if len(server.acked) == 2:
                break
            await asyncio.sleep(0.01)
        assert server.acked == [first, second] and server.pending == {}
        assert server.heartbeats >= 3  # every 0.05 s for 0.35 s and more


async def test_a_closed_connection_ends_the_iteration_with_a_transient_error():
    async with FakeMessageService() as server:
        server.plan = [(1, False)]
        server.publish("880001", "pdd_trade_TradeConfirmed", {"tid": "240601-1"})
        url = messages.connect_url(server.url, CLIENT_ID, CLIENT_SECRET, messages.now_ms())
        async with messages.MessageServiceConnection.open(url, heartbeat_s=5) as conn:
            with pytest.raises(TransientError, match="closed|lost"):
                async with asyncio.timeout(5):
                    async for _ in conn:
                        pass


async def test_a_refused_sign_is_a_permanent_error():
    async with FakeMessageService() as server:
        url = messages.connect_url(server.url, CLIENT_ID, "wrong-secret", messages.now_ms())
        with pytest.raises(PermanentError, match="HTTP 403"):
            async with messages.MessageServiceConnection.open(url):
                pass
        assert server.refused == 1


async def test_an_unreachable_service_is_a_transient_error():
    async with FakeMessageService() as server:
        url = server.url
    with pytest.raises(TransientError):
        async with messages.MessageServiceConnection.open(url + "/message/a/1/b", open_timeout_s=2):
            pass
