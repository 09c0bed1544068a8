"""Pinduoduo's message service (消息服务): one WebSocket per app, its frames, acknowledgements and heartbeats.

Facts from operations.md 6.1 (community clients in Rust, TypeScript and the Java SDK agree; no official
page was readable): connect to ``wss://message-api.pinduoduo.com/message/{client_id}/{timestamp_ms}/{sign}``;
frames are JSON ``{id, commandType, time, sendTime, message: {type, mallID, content}}`` with ``content`` a
JSON string; the client acknowledges each message by its id and sends ``HeartBeat`` frames. What PDD does
with a message left unacknowledged is UNCONFIRMED: the consumer acknowledges only what it has stored, and
polling stays on for whatever the channel loses. Messages only name an order (``tid``) or an after-sale;
the worker fetches its current state, so a late or repeated message is harmless.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from adapters.base import OrderNotice, RefundNotice, WebhookDelivery
from adapters.channels import ChannelMessage, channel_of
from adapters.errors import PayloadError, PermanentError, TransientError

PLATFORM = "pinduoduo"
CHANNEL = "pdd-message-service"
DEFAULT_URL = "wss://message-api.pinduoduo.com"
HEARTBEAT_S = 10.0  # seconds between our HeartBeat frames (the TypeScript client's default; Rust sends every 5)
OPEN_TIMEOUT_S = 10.0  # seconds for the WebSocket handshake
MAX_FRAME_BYTES = 4 * 1024 * 1024  # a frame carries one message; anything larger is not PDD's

log = logging.getLogger("coopsync.channels.pinduoduo")

# Trade messages that change what an order snapshot holds (status, shipping, review); memo and address
# changes do not. Refund messages all name an after-sale whose state moved.
ORDER_TYPES = frozenset({
    "pdd_trade_TradeConfirmed", "pdd_trade_TradeSellerShip", "pdd_trade_TradeSuccess", "pdd_trade_TradeRiskChanged",
})
REFUND_PREFIX = "pdd_refund_"


def connect_sign(client_id: str, timestamp_ms: int, client_secret: str) -> str:
    """base64 of the *hex string* of md5(client_id + timestamp + client_secret), not of the raw digest.

    Base64 of hex digits never yields ``+`` or ``/`` (only ``=`` padding), so the sign is a safe path segment."""
    digest = hashlib.md5(f"{client_id}{timestamp_ms}{client_secret}".encode()).hexdigest()
    return base64.b64encode(digest.encode()).decode()


def connect_url(base_url: str, client_id: str, client_secret: str, timestamp_ms: int) -> str:
    """The signed URL of one connection (the timestamp is part of the sign: build it afresh each time)."""
    sign = connect_sign(client_id, timestamp_ms, client_secret)
    return f"{base_url.rstrip('/')}/message/{client_id}/{timestamp_ms}/{sign}"


def now_ms() -> int:
    return int(time.time() * 1000)


def heartbeat_frame(timestamp_ms: int) -> str:
    return json.dumps({"commandType": "HeartBeat", "time": timestamp_ms}, separators=(",", ":"))


def ack_frame(message: ChannelMessage, timestamp_ms: int) -> str:
    """``{"commandType":"Ack","time","id","sendTime","type","mallID"}``: the Rust client's acknowledgement."""
    return json.dumps({"commandType": "Ack", "time": timestamp_ms, **message.ack}, separators=(",", ":"),
                      ensure_ascii=False)


@dataclass(frozen=True)
class Frame:
    """One frame from the service: its command, and the message when it is a ``Common`` one."""

    command: str
    message: ChannelMessage | None = None
    raw: Mapping[str, Any] | None = None


def _load(text: str | bytes) -> dict[str, Any]:
    try:
        frame = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"message service frame is not JSON: {exc}", platform=PLATFORM) from exc
    if not isinstance(frame, dict):
        raise PayloadError("message service frame is not a JSON object", platform=PLATFORM)
    return frame


def _content(message: Mapping[str, Any]) -> dict[str, Any]:
    """``content`` is a JSON string; an object is taken as it is."""
    content = message.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content) if content.strip() else {}
        except ValueError as exc:
            raise PayloadError(f"message {message.get('type')}: content is not JSON", platform=PLATFORM) from exc
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise PayloadError(f"message {message.get('type')}: content is not an object", platform=PLATFORM)
    return content


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _wanted(topic: str) -> bool:
    return topic in ORDER_TYPES or topic.startswith(REFUND_PREFIX)


def parse_frame(text: str | bytes) -> Frame:
    """Read one frame; a ``Common`` frame carries a message, stored as the frame's own bytes."""
    frame = _load(text)
    command = str(frame.get("commandType") or "")
    if command != "Common":
        return Frame(command, raw=frame)
    message = frame.get("message")
    if not isinstance(message, dict):
        raise PayloadError(f"Common frame {frame.get('id')} without a message object", platform=PLATFORM)
    topic = str(message.get("type") or "")
    mall_id = _text(message.get("mallID", message.get("mall_id")))
    body = text.encode() if isinstance(text, str) else bytes(text)
    ack = {"id": frame.get("id"), "sendTime": frame.get("sendTime"), "type": message.get("type"),
           "mallID": message.get("mallID", message.get("mall_id"))}
    return Frame(command, ChannelMessage(CHANNEL, _message_id(frame.get("id"), message), topic, mall_id, body,
                                         _wanted(topic), ack=ack), raw=frame)


def _message_id(frame_id: Any, message: dict) -> str:
    """The frame's id with a digest of the message it carries. Whether PDD's frame id is unique per
    message or a sequence per connection is unconfirmed; with the digest, two keys are equal only for
    the same message (a redelivery), so a sequence number can never make a new message a duplicate."""
    digest = hashlib.sha256(json.dumps(message, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{_text(frame_id) or '-'}:{digest}"


def parse_delivery(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    """A stored message as notices: an order message names its ``tid``, a refund message its after-sale
    (``refund_id``, read also as ``after_sales_id`` or ``id``) and order. Refuses anything the channel
    consumer did not store: Pinduoduo has no HTTP webhooks."""
    if channel_of(headers) != CHANNEL:
        raise PermanentError("pinduoduo has no webhooks; only its message service is read", platform=PLATFORM)
    frame = parse_frame(body)
    if frame.message is None:
        raise PayloadError(f"stored frame is a {frame.command!r}, not a message", platform=PLATFORM)
    message = frame.message
    content = _content((frame.raw or {}).get("message") or {})
    tid = _text(content.get("tid") or content.get("order_sn"))
    if message.topic in ORDER_TYPES:
        if tid is None:
            raise PayloadError(f"{message.topic} {message.message_id} without tid", platform=PLATFORM)
        return WebhookDelivery(topic=message.topic, notices=[OrderNotice(external_id=tid)])
    if message.topic.startswith(REFUND_PREFIX):
        refund_id = _text(content.get("refund_id") or content.get("after_sales_id") or content.get("id"))
        if refund_id is None or tid is None:
            raise PayloadError(f"{message.topic} {message.message_id} without refund_id and tid", platform=PLATFORM)
        return WebhookDelivery(topic=message.topic, notices=[RefundNotice(external_id=refund_id, order_external_id=tid)])
    return WebhookDelivery(topic=message.topic)


class MessageServiceConnection:
    """One open connection: iterate it for messages, ``ack`` each one once it is stored. HeartBeat frames go
    out every ``heartbeat_s`` while it is open, and WebSocket pings (answered by any server) find a dead
    connection within two heartbeats. Every way the connection can end is raised as ``TransientError``
    (``PermanentError`` when the service refuses the app's sign)."""

    def __init__(self, ws: ClientConnection, *, heartbeat_s: float, clock_ms: Callable[[], int]) -> None:
        self.ws = ws
        self.heartbeat_s = heartbeat_s
        self.clock_ms = clock_ms
        self.heartbeats = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, heartbeat_s: float = HEARTBEAT_S, open_timeout_s: float = OPEN_TIMEOUT_S,
                   clock_ms: Callable[[], int] = now_ms) -> AsyncIterator["MessageServiceConnection"]:
        try:
            ws = await connect(url, open_timeout=open_timeout_s, ping_interval=heartbeat_s,
                               ping_timeout=2 * heartbeat_s, max_size=MAX_FRAME_BYTES, close_timeout=2.0)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise PermanentError(f"the message service refused the app (HTTP {status}): check the client id "
                                     "and secret, and that the app has the message service", platform=PLATFORM,
                                     code=str(status)) from exc
            raise TransientError(f"the message service answered HTTP {status}", platform=PLATFORM) from exc
        except InvalidURI as exc:
            raise PermanentError(f"message service URL is not a WebSocket URL: {exc}", platform=PLATFORM) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TransientError(f"cannot reach the message service: {exc!r}", platform=PLATFORM) from exc
        connection = cls(ws, heartbeat_s=heartbeat_s, clock_ms=clock_ms)
        beat = asyncio.create_task(connection._beat(), name="pdd-message-heartbeat")
        try:
            yield connection
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await ws.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.ws.send(heartbeat_frame(self.clock_ms()))
            except ConnectionClosed:
                return  # the reader sees the close and ends the session
            self.heartbeats += 1

    async def __aiter__(self) -> AsyncIterator[ChannelMessage]:
        try:
            async for text in self.ws:
                try:
                    frame = parse_frame(text)
                except PayloadError:
                    # Not acknowledged, so not lost if PDD redelivers; nothing here could store it anyway.
                    log.warning("unreadable message service frame dropped: %r", str(text)[:300])
                    continue
                if frame.message is not None:
                    yield frame.message
                elif frame.command == "Fail":
                    log.warning("message service reported a failure: %s", json.dumps(frame.raw)[:500])
        except ConnectionClosed as exc:
            raise TransientError(f"message service connection lost: {exc}", platform=PLATFORM) from exc
        raise TransientError(f"message service closed the connection (code {self.ws.close_code})", platform=PLATFORM)

    async def ack(self, message: ChannelMessage) -> None:
        try:
            await self.ws.send(ack_frame(message, self.clock_ms()))
        except ConnectionClosed as exc:
            raise TransientError(f"message service connection lost before an ack: {exc}", platform=PLATFORM) from exc
