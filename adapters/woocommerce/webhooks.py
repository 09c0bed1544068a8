"""WooCommerce webhook intake: the unsigned activation ping, the HMAC over the raw body, a dedupe key.
Woo has no stable delivery id, so the key is built from the content (see identity()).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from typing import Any, Mapping

from adapters.base import OrderDeleted, WebhookDelivery, WebhookIdentity, header
from adapters.errors import PayloadError
from adapters.signing import verify_text_signature
from adapters.woocommerce.mapping import PLATFORM, map_order, refund_notices

ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})
DELETED_TOPIC = "order.deleted"
PING_TOPIC = "ping"
_PING_BODY = re.compile(rb"webhook_id=\d+")


def signature(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(body)) keyed with the secret HTML-entity-decoded, as WC_Webhook signs it."""
    # Woo stores the secret through its form sanitiser and signs with wp_specialchars_decode(secret):
    # a secret saved as "a&amp;b" signs with "a&b".
    key = html.unescape(secret).encode("utf-8")
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode("ascii")


def is_ping(headers: Mapping[str, str], body: bytes) -> bool:
    """The activation ping: form body ``webhook_id=N`` and no signature header."""
    return header(headers, "X-WC-Webhook-Signature") is None and bool(_PING_BODY.fullmatch(body.strip()))


def verify(headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
    if is_ping(headers, body):
        # Woo sends the ping unsigned and disables activation unless it gets a 200. Letting it through is
        # safe against forgery: a ping is answered and never stored or applied (is_ping in the identity).
        return
    verify_text_signature(header(headers, "X-WC-Webhook-Signature"), body, secrets, signature,
                          header="X-WC-Webhook-Signature", platform=PLATFORM)


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"webhook body is not JSON: {exc}", platform=PLATFORM) from exc


def identity(headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
    """Dedupe key ``source|topic|order id|date_modified_gmt``.

    Woo has no stable delivery id: X-WC-Webhook-Delivery-ID is wp_hash(webhook id . time), new on every
    attempt, and core never retries. Duplicates come from several hooks firing on one save (update_order,
    order_refunded) and carry the same order state; that state is named by the shop (source), the order id
    and its modification time. The topic is part of the key so an order.created and the order.updated of
    the same save stay two rows; both are full snapshots, so applying the second is a no-op.
    """
    if is_ping(headers, body):
        return WebhookIdentity(dedupe_key=None, topic=PING_TOPIC, is_ping=True)
    topic = header(headers, "X-WC-Webhook-Topic")
    source = header(headers, "X-WC-Webhook-Source") or ""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return WebhookIdentity(dedupe_key=None, topic=topic)  # parse_webhook will reject it properly
    if not isinstance(payload, dict) or payload.get("id") is None:
        return WebhookIdentity(dedupe_key=None, topic=topic)
    if topic == DELETED_TOPIC:
        # {"id": N} carries no version: a trash, restore, trash again would look identical. Each delivery
        # is its own event then; its delivery id is unique per attempt (and Woo does not retry).
        delivery = header(headers, "X-WC-Webhook-Delivery-ID")
        key = f"{source}|{topic}|{payload['id']}|{delivery}" if delivery else None
        return WebhookIdentity(dedupe_key=key, topic=topic)
    modified = payload.get("date_modified_gmt")
    if not modified:
        return WebhookIdentity(dedupe_key=None, topic=topic)
    # Same shop, same topic, same order, same modification time = the same state delivered again
    # (several hooks fire on one save: woocommerce_update_order and woocommerce_order_refunded).
    return WebhookIdentity(dedupe_key=f"{source}|{topic}|{payload['id']}|{modified}", topic=topic)


def parse(headers: Mapping[str, str], body: bytes,
          status_overrides: Mapping[str, str] | None = None) -> WebhookDelivery:
    if is_ping(headers, body):
        return WebhookDelivery(topic=PING_TOPIC)
    topic = header(headers, "X-WC-Webhook-Topic")
    if not topic:
        raise PayloadError("missing X-WC-Webhook-Topic header", platform=PLATFORM)
    topic = topic.strip().lower()
    if topic != DELETED_TOPIC and topic not in ORDER_TOPICS:
        return WebhookDelivery(topic=topic)  # product.*, coupon.*: not ours to act on; accept and ignore
    payload = _load(body)
    if not isinstance(payload, dict) or payload.get("id") in (None, ""):
        raise PayloadError(f"{topic} body has no order id", platform=PLATFORM)
    if topic == DELETED_TOPIC:
        return WebhookDelivery(topic=topic, notices=[OrderDeleted(external_id=str(payload["id"]))])
    # refunds[] inside the order are only {id, reason, total}: notices make the worker fetch their lines.
    return WebhookDelivery(topic=topic, orders=[map_order(payload, status_overrides)],
                           notices=list(refund_notices(payload)))
