"""The PDD gateway client: signed requests, error envelope classification, in-call retries."""

from __future__ import annotations

import httpx
import pytest

from adapters.errors import AuthExpiredError, PermanentError, ThrottledError, TransientError
from adapters.pinduoduo.client import classify_error
from adapters.signing import sign_wrapped_md5
from pdd_fakes import CLIENT_ID, SECRET, TOKEN, error, load, make_adapter


@pytest.mark.parametrize("body, kind, retry_after", [
    ({"error_code": 10019, "error_msg": "access_token已过期"}, AuthExpiredError, None),
    ({"error_code": 20001, "sub_code": "access_token_invalid"}, AuthExpiredError, None),
    ({"error_code": 52101, "error_msg": "当前接口被限流"}, ThrottledError, 2.0),
    ({"error_code": 70031, "error_msg": "调用过于频繁"}, ThrottledError, 2.0),
    ({"error_code": 52102}, TransientError, 1.0),
    ({"error_code": 52103}, TransientError, 1.0),
    ({"error_code": 10000}, PermanentError, None),
    ({"error_code": 39999}, PermanentError, None),
    ({"error_code": 50000}, PermanentError, None),
    ({"error_code": 52003}, PermanentError, None),
    ({"error_code": 60000}, PermanentError, None),
])
def test_error_envelope_codes_map_onto_the_error_tree(body, kind, retry_after):
    exc = classify_error(body)
    assert type(exc) is kind
    assert getattr(exc, "retry_after_s", None) == retry_after


async def test_every_request_is_a_signed_form_post_with_the_common_parameters(adapter, fake):
    fake.script("pdd.order.information.get", {"order_info_get_response": {"order_info": load("order-240601-100000000000001.json")}})
    adapter.client.clock = lambda: 1717207200.7
    await adapter.fetch_order("240601-100000000000001")
    [params] = fake.calls
    assert params["type"] == "pdd.order.information.get"
    assert params["client_id"] == CLIENT_ID and params["access_token"] == TOKEN
    assert params["timestamp"] == "1717207200"
    assert params["data_type"] == "JSON" and params["version"] == "V1"
    assert params["order_sn"] == "240601-100000000000001"
    assert params["sign"] == sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"}, SECRET)


async def test_wrong_secret_gets_the_gateway_signature_error_as_permanent_without_retry(gateway, fake, sleeps):
    async with httpx.AsyncClient() as http:
        adapter = make_adapter(sleeps, secret="not-the-secret", http=http)
        with pytest.raises(PermanentError) as info:
            await adapter.fetch_order("240601-100000000000001")
    assert "签名错误" in str(info.value)
    assert fake.rejected_signs == 1 and sleeps == []


async def test_throttled_then_recovers_after_the_hinted_wait(adapter, fake, sleeps):
    ok = {"order_info_get_response": {"order_info": load("order-240601-100000000000001.json")}}
    fake.script("pdd.order.information.get", error(52101, "当前接口被限流"), ok)
    order = await adapter.fetch_order("240601-100000000000001")
    assert order is not None and order.external_id == "240601-100000000000001"
    assert fake.types() == ["pdd.order.information.get"] * 2
    assert sleeps == [2.0]


async def test_throttle_that_outlasts_the_in_call_attempts_surfaces_as_throttled(adapter, fake, sleeps):
    fake.script("pdd.order.information.get", error(70031, "调用过于频繁"))
    with pytest.raises(ThrottledError) as info:
        await adapter.fetch_order("240601-100000000000001")
    assert info.value.retry_after_s == 2.0
    assert len(fake.calls) == 3 and sleeps == [2.0, 2.0]


async def test_expired_token_raises_auth_expired_without_retry(adapter, fake, sleeps):
    fake.script("pdd.order.information.get", error(10019, "access_token已过期", "access_token_invalid"))
    with pytest.raises(AuthExpiredError):
        await adapter.fetch_order("240601-100000000000001")
    assert len(fake.calls) == 1 and sleeps == []


async def test_http_502_is_transient_and_retried(adapter, fake, sleeps):
    ok = {"order_info_get_response": {"order_info": load("order-240601-100000000000001.json")}}
    fake.script("pdd.order.information.get", httpx.Response(502, text="<html>bad gateway</html>"), ok)
    assert await adapter.fetch_order("240601-100000000000001") is not None
    assert len(fake.calls) == 2 and len(sleeps) == 1
