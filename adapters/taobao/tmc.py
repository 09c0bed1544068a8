"""Taobao's message service (TMC) read through its documented pull API over the TOP gateway.

TMC also speaks a binary protocol over ``ws://mc.api.taobao.com/``, but its frame format is not in the
facts we trust (operations.md 6.2 names only the endpoint and the connect sign), so this module uses the
documented pair instead: ``taobao.tmc.messages.consume`` (``group_name``, ``quantity`` 10-200) hands out
messages, and ``taobao.tmc.messages.confirm`` (``s_message_ids``, at most 200) confirms the ones we
stored. Both are app-level calls: signed with the app's key and secret, no seller session. How long TMC
waits before handing an unconfirmed message out again is UNCONFIRMED; the consumer confirms only what it
stored, and polling stays on. A message is ``TmcMessage {id, topic, user_id, user_nick, pub_app_key,
pub_time, content}`` with ``content`` a JSON string; trade messages name ``tid``, refund messages
``refund_id`` and ``tid``. The worker fetches their current state.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from adapters.base import OrderNotice, RefundNotice, WebhookDelivery
from adapters.channels import ChannelMessage, channel_of
from adapters.errors import PayloadError, PermanentError, TransientError
from adapters.taobao.client import PLATFORM, TopClient
from adapters.taobao.mapping import unwrap_list

CHANNEL = "taobao-tmc"
DEFAULT_GROUP = "default"
MIN_QUANTITY, MAX_QUANTITY = 10, 200  # messages per consume, as documented
MAX_CONFIRM = 200  # message ids per confirm

# Trade topics that change what an order snapshot holds (status, amounts, shipping, refunds on lines);
# memo, rating, address and reminder topics do not. Every refund topic names a refund whose state moved.
ORDER_TOPICS = frozenset({
    "taobao_trade_TradeCreate", "taobao_trade_TradeBuyerPay", "taobao_trade_TradeSellerShip",
    "taobao_trade_TradePartlySellerShip", "taobao_trade_TradeSuccess", "taobao_trade_TradeClose",
    "taobao_trade_TradeCloseAndModifyDetailOrder", "taobao_trade_TradeModifyFee", "taobao_trade_TradeChanged",
    "taobao_trade_TradePartlyRefund", "taobao_trade_TradeDelayConfirmPay", "taobao_trade_TradePartlyConfirmPay",
    "taobao_trade_TradeAlipayCreate",
})
REFUND_PREFIX = "taobao_refund_"


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _wanted(topic: str) -> bool:
    return topic in ORDER_TOPICS or topic.startswith(REFUND_PREFIX)


def message_of(row: Mapping[str, Any]) -> ChannelMessage:
    """One ``tmc_message`` of a consume answer, stored as its own JSON."""
    if not isinstance(row, Mapping):
        raise PayloadError("a TMC message is not an object", platform=PLATFORM)
    topic = str(row.get("topic") or "")
    message_id = _text(row.get("id"))
    body = json.dumps(row, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    return ChannelMessage(CHANNEL, message_id, topic, _text(row.get("user_id")), body, _wanted(topic),
                          shop_nick=_text(row.get("user_nick")), ack={"id": message_id})


async def consume(client: TopClient, group: str = DEFAULT_GROUP, quantity: int = MAX_QUANTITY) -> list[ChannelMessage]:
    """taobao.tmc.messages.consume; ref: https://open.taobao.com/api.htm?docId=21986&docType=2"""
    quantity = max(MIN_QUANTITY, min(MAX_QUANTITY, quantity))
    body = await client.call("taobao.tmc.messages.consume", {"group_name": group, "quantity": quantity})
    result = client.unwrap(body, "tmc_messages_consume_response")
    return [message_of(row) for row in unwrap_list(result.get("messages"), "tmc_message")]


async def confirm(client: TopClient, message_ids: list[str], group: str = DEFAULT_GROUP) -> None:
    """taobao.tmc.messages.confirm; ref: https://open.taobao.com/api.htm?docId=21985&docType=2

    Confirming a message twice changes nothing, so the call keeps its in-call retries."""
    for start in range(0, len(message_ids), MAX_CONFIRM):
        chunk = message_ids[start:start + MAX_CONFIRM]
        body = await client.call("taobao.tmc.messages.confirm", {"group_name": group, "s_message_ids": ",".join(chunk)})
        result = client.unwrap(body, "tmc_messages_confirm_response")
        if str(result.get("is_success")).lower() not in ("true", "1"):
            raise TransientError(f"taobao.tmc.messages.confirm answered is_success={result.get('is_success')!r}",
                                 platform=PLATFORM)


def _content(row: Mapping[str, Any]) -> dict[str, Any]:
    content = row.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content) if content.strip() else {}
        except ValueError as exc:
            raise PayloadError(f"TMC message {row.get('id')}: content is not JSON", platform=PLATFORM) from exc
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise PayloadError(f"TMC message {row.get('id')}: content is not an object", platform=PLATFORM)
    return content


def parse_delivery(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    """A stored TMC message as notices. Refuses anything the channel consumer did not store: TOP has no
    HTTP webhooks."""
    if channel_of(headers) != CHANNEL:
        raise PermanentError("taobao has no webhooks; only its message service (TMC) is read", platform=PLATFORM)
    try:
        row = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"stored TMC message is not JSON: {exc}", platform=PLATFORM) from exc
    if not isinstance(row, dict):
        raise PayloadError("stored TMC message is not an object", platform=PLATFORM)
    topic = str(row.get("topic") or "")
    content = _content(row)
    tid = _text(content.get("tid"))
    if topic in ORDER_TOPICS:
        if tid is None:
            raise PayloadError(f"{topic} {row.get('id')} without tid", platform=PLATFORM)
        return WebhookDelivery(topic=topic, notices=[OrderNotice(external_id=tid)])
    if topic.startswith(REFUND_PREFIX):
        refund_id = _text(content.get("refund_id"))
        if refund_id is None:
            raise PayloadError(f"{topic} {row.get('id')} without refund_id", platform=PLATFORM)
        return WebhookDelivery(topic=topic, notices=[RefundNotice(external_id=refund_id, order_external_id=tid)])
    return WebhookDelivery(topic=topic)
