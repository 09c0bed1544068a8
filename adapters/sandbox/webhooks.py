"""Sandbox webhooks: base64 HMAC-SHA256 signature, event id for de-duplication, full snapshots."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Mapping

from adapters.base import WebhookDelivery, WebhookIdentity, header
from adapters.errors import PayloadError, SignatureError
from adapters.sandbox.market import EVENT_ID_HEADER, SIGNATURE_HEADER, TOPIC_HEADER
from adapters.sandbox.mapping import order_from_sandbox, refund_from_sandbox
from adapters.signing import signed_by_any

PLATFORM = "sandbox"


def verify(headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
    given = header(headers, SIGNATURE_HEADER)
    if not body or not given:
        raise SignatureError("missing body or X-Sandbox-Signature", platform=PLATFORM)
    try:
        given_raw = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("X-Sandbox-Signature is not base64", platform=PLATFORM) from exc
    if not signed_by_any(given_raw, secrets, lambda secret: hmac.new(secret.encode(), body, hashlib.sha256).digest(),
                         skip_empty=False):
        raise SignatureError("X-Sandbox-Signature does not match", platform=PLATFORM)


def identity(headers: Mapping[str, str]) -> WebhookIdentity:
    return WebhookIdentity(dedupe_key=header(headers, EVENT_ID_HEADER), topic=header(headers, TOPIC_HEADER))


def parse(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    topic = header(headers, TOPIC_HEADER) or ""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"sandbox webhook body is not JSON: {exc}", platform=PLATFORM) from exc
    if not isinstance(payload, dict):
        raise PayloadError("sandbox webhook body is not an object", platform=PLATFORM)
    if topic.startswith("order."):
        return WebhookDelivery(topic=topic, orders=[order_from_sandbox(payload)])
    if topic.startswith("refund."):
        return WebhookDelivery(topic=topic, refunds=[refund_from_sandbox(payload)])
    raise PayloadError(f"unknown sandbox topic {topic!r}", platform=PLATFORM)
