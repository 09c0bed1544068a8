"""WooCommerce webhook intake: signature vectors from global.md section 3, the unsigned ping, dedupe keys, topics."""

from __future__ import annotations

import json

import pytest

from adapters.base import OrderDeleted, OrderStatus, RefundNotice
from adapters.errors import PayloadError, SignatureError
from adapters.woocommerce.webhooks import signature

from woo_helpers import load, raw

BODY = b'{"id":727,"status":"processing"}'
BODY_SIG = "NkU7KOd+BePzOCUait4B7C7BiB5yAk39NIrqbSpyHsA="
ENTITY_SIG = "eujb8wkWXkuymKAp3o0cwKZsrV301kmVd7I89FEGRNI="
SOURCE = "https://shop.example.test/"


def test_verify_accepts_the_documented_vector(make_adapter):
    make_adapter().verify_webhook({"X-WC-Webhook-Signature": BODY_SIG}, BODY, ["my-woo-secret"])


def test_verify_decodes_html_entities_in_the_stored_secret(make_adapter):
    assert signature(BODY, "a&amp;b") == signature(BODY, "a&b") == ENTITY_SIG
    make_adapter().verify_webhook({"x-wc-webhook-signature": ENTITY_SIG}, BODY, ["a&amp;b"])


def test_verify_rejects_a_tampered_body(make_adapter):
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook({"X-WC-Webhook-Signature": BODY_SIG}, BODY.replace(b"727", b"728"),
                                      ["my-woo-secret"])


def test_verify_accepts_any_secret_during_rotation(make_adapter):
    make_adapter().verify_webhook({"X-WC-Webhook-Signature": BODY_SIG}, BODY, ["new", "my-woo-secret"])


def test_verify_rejects_a_json_body_without_signature(make_adapter):
    with pytest.raises(SignatureError, match="missing"):
        make_adapter().verify_webhook({}, BODY, ["my-woo-secret"])


def test_verify_rejects_an_empty_body(make_adapter):
    with pytest.raises(SignatureError, match="empty"):
        make_adapter().verify_webhook({"X-WC-Webhook-Signature": signature(b"", "s")}, b"", ["s"])


def test_the_unsigned_activation_ping_passes_and_is_a_ping(make_adapter):
    adapter = make_adapter()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    adapter.verify_webhook(headers, b"webhook_id=15", ["my-woo-secret"])
    ident = adapter.webhook_identity(headers, b"webhook_id=15")
    assert ident.is_ping and ident.dedupe_key is None
    delivery = adapter.parse_webhook(headers, b"webhook_id=15")
    assert delivery.orders == [] and delivery.notices == []


def test_a_ping_lookalike_with_a_signature_header_is_verified_normally(make_adapter):
    headers = {"X-WC-Webhook-Signature": "forged"}
    with pytest.raises(SignatureError):
        make_adapter().verify_webhook(headers, b"webhook_id=15", ["my-woo-secret"])
    assert make_adapter().webhook_identity(headers, b"webhook_id=15").is_ping is False


def test_dedupe_key_is_source_topic_order_and_modification_time(make_adapter):
    headers = {"X-WC-Webhook-Source": SOURCE, "X-WC-Webhook-Topic": "order.updated",
               "X-WC-Webhook-Delivery-ID": "changes-every-attempt"}
    ident = make_adapter().webhook_identity(headers, raw("order_rest_single_docs.json"))
    assert ident.dedupe_key == f"{SOURCE}|order.updated|727|2017-03-22T19:28:08"
    assert ident.topic == "order.updated" and not ident.is_ping


def test_a_new_modification_gets_a_new_dedupe_key(make_adapter):
    order = load("order_rest_single_docs.json")
    order["date_modified_gmt"] = "2017-03-23T08:00:00"
    headers = {"X-WC-Webhook-Source": SOURCE, "X-WC-Webhook-Topic": "order.updated"}
    assert make_adapter().webhook_identity(headers, json.dumps(order).encode()).dedupe_key.endswith("2017-03-23T08:00:00")


def test_order_updated_maps_the_order_and_names_its_refunds(make_adapter):
    body = json.dumps(load("orders_rest_list_docs.json")[1]).encode()
    delivery = make_adapter().parse_webhook({"X-WC-Webhook-Topic": "order.updated"}, body)
    [order] = delivery.orders
    assert (order.external_id, order.status) == ("723", OrderStatus.DELIVERED)
    assert delivery.notices == [RefundNotice("726", "723"), RefundNotice("724", "723")]


def test_order_created_maps_the_order(make_adapter):
    delivery = make_adapter().parse_webhook({"X-WC-Webhook-Topic": "order.created"}, raw("order_rest_single_docs.json"))
    assert [o.external_id for o in delivery.orders] == ["727"] and delivery.notices == []


def test_order_deleted_becomes_a_deleted_notice(make_adapter):
    delivery = make_adapter().parse_webhook({"X-WC-Webhook-Topic": "order.deleted"}, b'{"id":727}')
    assert delivery.notices == [OrderDeleted("727")] and delivery.orders == []


def test_order_deleted_dedupes_per_delivery(make_adapter):
    headers = {"X-WC-Webhook-Source": SOURCE, "X-WC-Webhook-Topic": "order.deleted", "X-WC-Webhook-Delivery-ID": "d1"}
    assert make_adapter().webhook_identity(headers, b'{"id":727}').dedupe_key == f"{SOURCE}|order.deleted|727|d1"


def test_a_product_topic_is_accepted_and_ignored(make_adapter):
    delivery = make_adapter().parse_webhook({"X-WC-Webhook-Topic": "product.updated"}, b'{"id":93}')
    assert delivery.orders == [] and delivery.notices == []


def test_a_body_that_is_not_json_is_a_payload_error(make_adapter):
    with pytest.raises(PayloadError):
        make_adapter().parse_webhook({"X-WC-Webhook-Topic": "order.updated"}, b"{not json")


def test_a_configured_status_map_covers_plugin_statuses(make_adapter):
    from woo_helpers import make_store

    order = load("order_rest_single_docs.json")
    order["status"] = "shipped"  # e.g. added by a shipment-tracking plug-in
    body = json.dumps(order).encode()
    adapter = make_adapter(make_store(status_map={"shipped": "shipped"}))
    assert adapter.parse_webhook({"X-WC-Webhook-Topic": "order.updated"}, body).orders[0].status is OrderStatus.SHIPPED
