"""Douyin gateway calls through a fake that checks every sign: error codes, retries, throttling, auth."""

from __future__ import annotations

import httpx
import pytest
import respx

from adapters.douyin.client import DouyinClient, error_for_body
from adapters.tokens import RefreshRefused
from adapters.errors import AuthExpiredError, PermanentError, ThrottledError, TransientError
from douyin_fakes import ACCESS_TOKEN, APP_KEY, BASE_URL, FakeGateway, fail, ok


def mock(gateway: FakeGateway, *methods: str) -> respx.MockRouter:
    router = respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL)
    for method in methods:
        router.post(path="/" + method.replace(".", "/")).mock(side_effect=gateway)
    return router


async def test_fake_gateway_answers_signature_invalid_to_a_wrong_secret(http):
    gateway = FakeGateway()
    gateway.on("order.orderDetail", lambda p: ok({"shop_order_detail": {}}))
    client = DouyinClient(http, app_key=APP_KEY, app_secret="not-the-secret", access_token=ACCESS_TOKEN,
                          base_url=BASE_URL)
    with mock(gateway, "order.orderDetail"):
        with pytest.raises(PermanentError) as info:
            await client.order_detail("1")
    assert info.value.code == "40003:isv.signature-invalid"
    assert gateway.rejected == 1 and gateway.calls == []


async def test_fake_gateway_rejects_a_body_changed_after_signing(http):
    gateway = FakeGateway()
    gateway.on("order.orderDetail", lambda p: ok({}))
    client = DouyinClient(http, app_key=APP_KEY, app_secret="testsecret", access_token=ACCESS_TOKEN,
                          base_url=BASE_URL)
    request = client.build_request("order.orderDetail", {"shop_order_id": "1"})
    tampered = http.build_request("POST", request.url, content=b'{"shop_order_id":"2"}',
                                  headers={"Content-Type": "application/json"})
    with mock(gateway, "order.orderDetail"):
        response = await http.send(tampered)
    assert response.json()["sub_code"] == "isv.signature-invalid"


async def test_throttle_60000_is_retried_then_recovers(adapter, gateway, sleeps):
    gateway.on("order.orderDetail", lambda p: fail(60000, msg="触发限流"),
               lambda p: ok({"shop_order_detail": None}))
    with mock(gateway, "order.orderDetail"):
        assert await adapter.fetch_order("6920000000000000001") is None
    assert gateway.methods() == ["order.orderDetail", "order.orderDetail"]
    assert sleeps == [1.0]  # our default wait (Douyin names none); recorded, never slept in tests


async def test_throttle_that_persists_raises_throttled_error_with_a_delay(adapter, gateway, sleeps):
    gateway.on("order.orderDetail", lambda p: fail(60000, msg="触发限流"))
    with mock(gateway, "order.orderDetail"):
        with pytest.raises(ThrottledError) as info:
            await adapter.fetch_order("1")
    assert info.value.retry_after_s == 1.0
    assert len(gateway.calls) == 3 and len(sleeps) == 2


async def test_expired_access_token_raises_auth_expired_without_retry(adapter, gateway, sleeps):
    gateway.on("order.orderDetail", lambda p: fail(40003, "isv.access-token-expired", "access_token已过期"))
    with mock(gateway, "order.orderDetail"):
        with pytest.raises(AuthExpiredError) as info:
            await adapter.fetch_order("1")
    assert info.value.code == "40003:isv.access-token-expired"
    assert len(gateway.calls) == 1 and sleeps == []


async def test_http_5xx_is_transient_after_retries(adapter, sleeps):
    with respx.mock(assert_all_called=True, assert_all_mocked=True, base_url=BASE_URL) as router:
        route = router.post(path="/order/orderDetail").mock(return_value=httpx.Response(502, text="bad gateway"))
        with pytest.raises(TransientError):
            await adapter.fetch_order("1")
    assert route.call_count == 3


@pytest.mark.parametrize(("body", "kind"), [
    ({"code": 60000}, ThrottledError),
    ({"code": 20000}, TransientError),
    ({"code": 20001}, TransientError),
    ({"code": 40003, "sub_code": "isv.access-token-expired"}, AuthExpiredError),
    ({"code": 40003, "sub_code": "isv.access-token-no-existed"}, AuthExpiredError),
    ({"code": 30001, "sub_code": "dop.authorization-no-existed"}, RefreshRefused),
    ({"code": 30001, "sub_code": "dop.authorization-closed"}, RefreshRefused),
    ({"code": 50002, "sub_code": "isv.business-failed:31012"}, TransientError),
    ({"code": 40003, "sub_code": "isv.signature-invalid"}, PermanentError),
    ({"code": 40004, "sub_code": "isv.business-failed"}, PermanentError),
    ({"code": 50002}, PermanentError),
])
def test_body_codes_map_onto_the_error_tree(body, kind):
    error = error_for_body(body, "order.searchList")
    assert type(error) is kind


def test_code_10000_is_success():
    assert error_for_body({"code": 10000, "data": {}}, "order.searchList") is None
