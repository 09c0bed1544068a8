"""Douyin Shop push messages: ``event-sign`` verification and the ``[{tag, msg_id, data}]`` envelope.

Messages only name an order (``p_id``) or an after-sale (``aftersale_id``); the worker fetches the
current state, since pushes can repeat, arrive late or out of order (china.md 6).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Mapping

from adapters.base import OrderNotice, RefundNotice, WebhookDelivery, WebhookIdentity, header
from adapters.errors import PayloadError, SignatureError
from adapters.signing import signed_by_any

PLATFORM = "douyin"

# Tags (china.md 3.7). 109 (amount changed) is included because it changes the order's total.
ORDER_TAGS = frozenset({"100", "101", "102", "103", "106", "108", "109", "110"})
REFUND_TAGS = frozenset({"200", "201", "202", "203", "204", "205", "206", "207", "208"})
# 104 logistics, 105 address, 113 memo, 209 deadline, 400 product: nothing a snapshot holds changes.

ACK = {"code": 0, "msg": "success"}


def event_sign(app_key: str, body: bytes, app_secret: str) -> str:
    """lower hex MD5(app_key + raw body + app_secret), over the raw bytes as received."""
    return hashlib.md5(app_key.encode() + body + app_secret.encode()).hexdigest()


def verify(headers: Mapping[str, str], body: bytes, app_key: str, secrets: list[str]) -> None:
    """Raise SignatureError unless ``app-id`` is our app and ``event-sign`` matches one of ``secrets``."""
    if not body:
        raise SignatureError("empty push body", platform=PLATFORM)
    app_id = header(headers, "app-id")
    given = header(headers, "event-sign")
    if not app_id or not given:
        raise SignatureError("push without app-id or event-sign header", platform=PLATFORM)
    # Constant-time compares: both headers are attacker-controlled.
    if not hmac.compare_digest(app_id.encode(), app_key.encode()):
        raise SignatureError("push app-id is not this store's app_key", platform=PLATFORM)
    given_b = given.strip().lower().encode()
    if not signed_by_any(given_b, secrets, lambda secret: event_sign(app_key, body, secret).encode(), skip_empty=False):
        raise SignatureError("event-sign does not match", platform=PLATFORM)


def _messages(body: bytes) -> list[Mapping[str, Any]]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"push body is not JSON: {exc}", platform=PLATFORM) from exc
    if not isinstance(parsed, list) or not all(isinstance(m, dict) for m in parsed):
        raise PayloadError("push body is not a JSON array of messages", platform=PLATFORM)
    return parsed


def _msg_id(message: Mapping[str, Any]) -> str | None:
    value = message.get("msg_id", message.get("msgId"))
    return str(value) if value not in (None, "") else None


def _data(message: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` is a JSON string in the official SDK and an object in SKIT's samples."""
    data = message.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise PayloadError(f"message {_msg_id(message)}: data is not JSON", platform=PLATFORM) from exc
    if not isinstance(data, dict):
        raise PayloadError(f"message {_msg_id(message)}: data is not an object", platform=PLATFORM)
    return data


def identity(body: bytes) -> WebhookIdentity:
    """Dedupe key = the messages' ids joined; None (hash the body) when they cannot be read."""
    try:
        messages = _messages(body)
    except PayloadError:
        return WebhookIdentity(dedupe_key=None)
    ids = [_msg_id(m) for m in messages]
    tags = sorted({str(m.get("tag")) for m in messages})
    key = ",".join(i for i in ids if i) if ids and all(ids) else None
    return WebhookIdentity(dedupe_key=key, topic=",".join(tags) or None)


def parse(body: bytes) -> WebhookDelivery:
    """Notices for the order and refund messages of one push; other tags are ignored."""
    messages = _messages(body)
    notices: list[OrderNotice | RefundNotice] = []
    seen: set[tuple[str, str]] = set()
    tags: list[str] = []
    for message in messages:
        tag = str(message.get("tag", ""))
        tags.append(tag)
        if tag not in ORDER_TAGS and tag not in REFUND_TAGS:
            continue
        data = _data(message)
        p_id = data.get("p_id")
        if tag in ORDER_TAGS:
            if p_id in (None, "", 0):
                raise PayloadError(f"order message {_msg_id(message)} without p_id", platform=PLATFORM)
            key = ("order", str(p_id))
            notice: OrderNotice | RefundNotice = OrderNotice(
                external_id=str(p_id),
                status_hint=str(data["order_status"]) if data.get("order_status") is not None else None,
            )
        else:
            aftersale_id = data.get("aftersale_id")
            if aftersale_id in (None, "", 0):
                raise PayloadError(f"refund message {_msg_id(message)} without aftersale_id",
                                   platform=PLATFORM)
            key = ("refund", str(aftersale_id))
            notice = RefundNotice(external_id=str(aftersale_id),
                                  order_external_id=str(p_id) if p_id not in (None, "", 0) else None)
        if key not in seen:  # one push may carry several messages about the same order
            seen.add(key)
            notices.append(notice)
    return WebhookDelivery(topic=",".join(sorted(set(tags))) or None, notices=notices)
