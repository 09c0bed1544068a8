"""Shopify webhook intake: HMAC over the raw body, de-duplication key, topic dispatch to the mappers.
Both header spellings are read: ``X-Shopify-*`` (HTTPS webhooks) and ``shopify-*`` (Events delivery).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Mapping

from adapters.base import WebhookDelivery, WebhookIdentity, header
from adapters.errors import PayloadError
from adapters.shopify.mapping import PLATFORM, map_order, map_refund
from adapters.signing import verify_text_signature

ORDER_TOPICS = frozenset({"orders/create", "orders/updated", "orders/paid", "orders/cancelled"})
REFUND_TOPICS = frozenset({"refunds/create"})
TOPICS = ORDER_TOPICS | REFUND_TOPICS


def _h(headers: Mapping[str, str], name: str) -> str | None:
    return header(headers, f"X-Shopify-{name}", f"shopify-{name}")


def signature(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(secret, raw body)), as Shopify sends it."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


def verify(headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
    verify_text_signature(_h(headers, "Hmac-Sha256"), body, secrets, signature, header="X-Shopify-Hmac-Sha256",
                          platform=PLATFORM)


def identity(headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
    """Event id first (the same event delivered to several subscriptions), else the delivery id."""
    topic = _h(headers, "Topic")
    event_id = _h(headers, "Event-Id")
    if event_id:
        return WebhookIdentity(dedupe_key=f"event:{event_id}", topic=topic)
    webhook_id = _h(headers, "Webhook-Id")
    return WebhookIdentity(dedupe_key=f"webhook:{webhook_id}" if webhook_id else None, topic=topic)


def _load(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"webhook body is not JSON: {exc}", platform=PLATFORM) from exc
    if not isinstance(payload, dict):
        raise PayloadError("webhook body is not a JSON object", platform=PLATFORM)
    return payload


def parse(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    topic = _h(headers, "Topic")
    if not topic:
        raise PayloadError("missing X-Shopify-Topic header", platform=PLATFORM)
    topic = topic.strip().lower()
    if topic not in TOPICS:
        # A subscription we do not act on (e.g. inventory_levels/update): accept it and do nothing, so a
        # stray subscription neither fills the failed inbox nor makes Shopify retry and then drop the hook.
        return WebhookDelivery(topic=topic)
    payload = _load(body)
    if topic in ORDER_TOPICS:
        # Embedded refunds travel inside the order snapshot (OrderSnapshot.refunds), not twice.
        return WebhookDelivery(topic=topic, orders=[map_order(payload)])
    refund = map_refund(payload)
    # The body is the whole refund: it applies at once. Its order changed too (financial_status, current
    # totals), which a separate best-effort job refetches; a slow or unreachable Shopify never holds up
    # the refund's restock and amount.
    return WebhookDelivery(topic=topic, refunds=[refund], refresh_orders=[refund.order_external_id])
