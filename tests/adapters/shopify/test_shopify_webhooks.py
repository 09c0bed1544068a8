"""Shopify webhook intake: HMAC vectors from global.md section 3, header spellings, dedupe keys, topics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from adapters.base import OrderStatus, RefundStatus
from adapters.errors import PayloadError, SignatureError

from shopify_helpers import load, raw

SECRET = "test_secret_key"
BODY = b'{"id":450789469,"name":"#1001"}'
BODY_HMAC = "MxI37n96E6iNH7GKO8dJ7XZXgU8OBFb+XYinOC+o9mU="
TAMPERED = b'{"id":450789469,"name":"#1002"}'
TAMPERED_HMAC = "1OmqA6hIZXFWoBFjvbIqDtNtu16UiumFwU3iG9iy234="
EMPTY_HMAC = "wde+AV/P/S1RUZlUH69IkPgPFLVGtBzMGLvoVzqwiwo="


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_verify_accepts_the_documented_vector(make_adapter):
    make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": BODY_HMAC}, BODY, [SECRET])


def test_verify_rejects_a_tampered_body_under_the_original_hmac(make_adapter):
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": BODY_HMAC}, TAMPERED, [SECRET])


def test_verify_accepts_the_tampered_body_with_its_own_vector(make_adapter):
    make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": TAMPERED_HMAC}, TAMPERED, [SECRET])


@pytest.mark.parametrize("name", ["X-Shopify-Hmac-Sha256", "X-Shopify-Hmac-SHA256", "x-shopify-hmac-sha256",
                                  "shopify-hmac-sha256", "Shopify-Hmac-Sha256"])
def test_verify_reads_both_header_spellings_case_insensitively(make_adapter, name):
    make_adapter().verify_webhook({name: BODY_HMAC}, BODY, [SECRET])


def test_verify_accepts_the_previous_secret_during_rotation(make_adapter):
    make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": BODY_HMAC}, BODY, ["new-secret", SECRET])


def test_verify_rejects_when_no_secret_matches(make_adapter):
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": BODY_HMAC}, BODY, ["other", ""])


def test_verify_rejects_an_empty_body_even_with_its_valid_hmac(make_adapter):
    assert sign(b"") == EMPTY_HMAC  # the vector is right; the empty body is refused anyway
    with pytest.raises(SignatureError, match="empty"):
        make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": EMPTY_HMAC}, b"", [SECRET])


def test_verify_rejects_a_missing_header(make_adapter):
    with pytest.raises(SignatureError, match="missing"):
        make_adapter().verify_webhook({"X-Shopify-Topic": "orders/create"}, BODY, [SECRET])


def test_verify_rejects_a_hex_digest(make_adapter):
    hex_digest = "331237ee7f7a13a88d1fb18a3bc749ed7657814f0e0456fe5d88a7382fa8f665"
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook({"X-Shopify-Hmac-Sha256": hex_digest}, BODY, [SECRET])


def test_identity_prefers_the_event_id(make_adapter):
    ident = make_adapter().webhook_identity(
        {"X-Shopify-Event-Id": "evt-1", "X-Shopify-Webhook-Id": "wh-1", "X-Shopify-Topic": "orders/paid"}, BODY)
    assert ident.dedupe_key == "event:evt-1"
    assert ident.topic == "orders/paid"
    assert ident.is_ping is False


def test_identity_falls_back_to_the_webhook_id_in_either_spelling(make_adapter):
    ident = make_adapter().webhook_identity({"shopify-webhook-id": "wh-9", "shopify-topic": "orders/create"}, BODY)
    assert ident.dedupe_key == "webhook:wh-9"
    assert ident.topic == "orders/create"


def test_identity_without_ids_leaves_dedupe_to_the_body_hash(make_adapter):
    assert make_adapter().webhook_identity({"X-Shopify-Topic": "orders/create"}, BODY).dedupe_key is None


def test_orders_create_body_becomes_an_order_snapshot(make_adapter):
    delivery = make_adapter().parse_webhook(
        {"X-Shopify-Topic": "orders/create"}, raw("orders_create_webhook_activepieces.json"))
    assert delivery.topic == "orders/create"
    [order] = delivery.orders
    assert order.external_id == "5324830114101"
    assert order.status is OrderStatus.PAID
    assert order.total_minor == 262995
    assert order.lines[0].merchant_sku == "sku-hosted-1"


def test_orders_cancelled_body_carries_its_embedded_refund(make_adapter):
    delivery = make_adapter().parse_webhook(
        {"shopify-topic": "orders/cancelled"}, raw("orders_cancelled_webhook_activepieces.json"))
    [order] = delivery.orders
    assert order.status is OrderStatus.CANCELLED
    [refund] = order.refunds
    assert refund.status is RefundStatus.SUCCEEDED
    assert delivery.refunds == []  # not sent twice


@pytest.mark.parametrize("topic", ["orders/updated", "orders/paid"])
def test_other_order_topics_map_the_same_way(make_adapter, topic):
    delivery = make_adapter().parse_webhook({"X-Shopify-Topic": topic}, raw("orders_create_webhook_activepieces.json"))
    assert [o.external_id for o in delivery.orders] == ["5324830114101"]


def test_refunds_create_body_is_a_whole_refund_and_its_order_a_best_effort_refresh(make_adapter):
    body = json.dumps(load("refund_rest_create_2026-07_shopify_app_js.json")["refund"]).encode()
    delivery = make_adapter().parse_webhook({"X-Shopify-Topic": "refunds/create"}, body)
    [refund] = delivery.refunds
    assert refund.external_id == "929361472"
    assert refund.order_external_id == "450789469"
    # No notice: nothing the refund needs is fetched before it applies.
    assert delivery.notices == [] and delivery.refresh_orders == ["450789469"]


def test_an_unhandled_topic_is_accepted_and_ignored(make_adapter):
    delivery = make_adapter().parse_webhook({"X-Shopify-Topic": "inventory_levels/update"}, b'{"available": 3}')
    assert delivery.orders == [] and delivery.refunds == [] and delivery.notices == []


def test_a_body_that_is_not_json_is_a_payload_error(make_adapter):
    with pytest.raises(PayloadError):
        make_adapter().parse_webhook({"X-Shopify-Topic": "orders/create"}, b"<html>")


def test_a_delivery_without_topic_is_a_payload_error(make_adapter):
    with pytest.raises(PayloadError):
        make_adapter().parse_webhook({}, raw("orders_create_webhook_activepieces.json"))


def test_an_order_without_updated_at_is_a_payload_error(make_adapter):
    order = load("orders_create_webhook_activepieces.json")
    del order["updated_at"]
    with pytest.raises(PayloadError, match="updated_at"):
        make_adapter().parse_webhook({"X-Shopify-Topic": "orders/create"}, json.dumps(order).encode())
