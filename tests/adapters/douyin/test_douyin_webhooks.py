"""Douyin push messages: event-sign verification, de-duplication key, notices, the ack."""

from __future__ import annotations

import pytest

from adapters.base import OrderNotice, RefundNotice
from adapters.errors import PayloadError, SignatureError
from douyin_fakes import APP_KEY, APP_SECRET, FIXTURES

VECTOR = (FIXTURES / "push-101-vector.json").read_bytes()
VECTOR_SIGN = "5356a0b17fb28b6fe4b98afffba63051"  # china.md 3.7 [C]
OBJECT_BODY = (FIXTURES / "push-206-msgId-object.json").read_bytes()


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    from adapters.douyin.webhooks import event_sign
    return {"app-id": APP_KEY, "event-sign": event_sign(APP_KEY, body, secret), "Content-Type": "application/json"}


def test_china_md_vector_verifies(adapter):
    adapter.verify_webhook({"App-Id": APP_KEY, "Event-Sign": VECTOR_SIGN}, VECTOR, [APP_SECRET])


def test_tampered_body_fails(adapter):
    with pytest.raises(SignatureError):
        adapter.verify_webhook({"app-id": APP_KEY, "event-sign": VECTOR_SIGN}, VECTOR.replace(b"2990", b"2991"),
                               [APP_SECRET])


def test_other_app_id_fails(adapter):
    with pytest.raises(SignatureError):
        adapter.verify_webhook({"app-id": "999", "event-sign": VECTOR_SIGN}, VECTOR, [APP_SECRET])


@pytest.mark.parametrize("headers", [{"app-id": APP_KEY}, {"event-sign": VECTOR_SIGN}, {}])
def test_missing_header_fails(adapter, headers):
    with pytest.raises(SignatureError):
        adapter.verify_webhook(headers, VECTOR, [APP_SECRET])


def test_empty_body_fails(adapter):
    with pytest.raises(SignatureError):
        adapter.verify_webhook(signed(b""), b"", [APP_SECRET])


def test_previous_secret_verifies_during_rotation(adapter):
    adapter.verify_webhook(signed(OBJECT_BODY, "old-secret"), OBJECT_BODY, ["new-secret", "old-secret"])


def test_no_candidate_secrets_falls_back_to_the_app_secret(adapter):
    adapter.verify_webhook(signed(OBJECT_BODY), OBJECT_BODY, [])
    with pytest.raises(SignatureError):
        adapter.verify_webhook(signed(OBJECT_BODY), OBJECT_BODY, ["some-other-secret"])


def test_identity_is_the_message_ids(adapter):
    assert adapter.webhook_identity({}, VECTOR).dedupe_key == "7000000000000000001:0:101:1700000000:0"
    identity = adapter.webhook_identity({}, OBJECT_BODY)
    assert identity.dedupe_key == ("7000000000000000002:0:206:1700900000:0,7000000000000000003:0:104:1700900001:0,"
                                   "7000000000000000004:0:102:1700900002:0")
    assert identity.topic == "102,104,206" and not identity.is_ping


def test_identity_of_unreadable_body_leaves_hashing_to_the_core(adapter):
    assert adapter.webhook_identity({}, b"not json").dedupe_key is None


def test_msg_id_with_string_data_gives_an_order_notice_with_exact_big_id(adapter):
    delivery = adapter.parse_webhook({}, VECTOR)
    assert delivery.notices == [OrderNotice(external_id="6900000000000000001", status_hint="2")]
    assert delivery.orders == [] and delivery.refunds == []


def test_msgId_with_object_data_gives_refund_and_order_notices_and_ignores_logistics(adapter):
    delivery = adapter.parse_webhook({}, OBJECT_BODY)
    assert delivery.notices == [
        RefundNotice(external_id="7010000000000000001", order_external_id="6920000000000000001"),
        OrderNotice(external_id="6920000000000000001", status_hint="3"),
    ]


@pytest.mark.parametrize("tag", ["100", "101", "102", "103", "106", "108", "109", "110"])
def test_trade_tags_name_the_parent_order(adapter, tag):
    body = ('[{"tag":"%s","msg_id":"m","data":"{\\"p_id\\":42}"}]' % tag).encode()
    assert adapter.parse_webhook({}, body).notices == [OrderNotice(external_id="42")]


@pytest.mark.parametrize("tag", ["200", "201", "202", "203", "204", "205", "206", "207", "208"])
def test_refund_tags_name_the_after_sale(adapter, tag):
    body = ('[{"tag":"%s","msgId":"m","data":{"aftersale_id":7,"p_id":42}}]' % tag).encode()
    assert adapter.parse_webhook({}, body).notices == [RefundNotice(external_id="7", order_external_id="42")]


@pytest.mark.parametrize("tag", ["0", "104", "105", "113", "209", "400", "999"])
def test_other_tags_give_nothing(adapter, tag):
    body = ('[{"tag":"%s","msg_id":"m","data":"{}"}]' % tag).encode()
    assert adapter.parse_webhook({}, body).notices == []


@pytest.mark.parametrize("body", [b"{", b'{"tag":"101"}', b'[{"tag":"101","msg_id":"m","data":"not json"}]',
                                  b'[{"tag":"101","msg_id":"m","data":"{}"}]'])
def test_unreadable_push_is_a_payload_error(adapter, body):
    with pytest.raises(PayloadError):
        adapter.parse_webhook({}, body)


def test_ack_is_what_douyin_expects(adapter):
    assert adapter.webhook_ack("accepted") == {"code": 0, "msg": "success"}
    assert adapter.webhook_ack("duplicate") == {"code": 0, "msg": "success"}
