"""Douyin request signing and push signing against the vectors in shared/platforms/china.md 3.2 and 3.7."""

from __future__ import annotations

import hashlib
import hmac

import httpx

from adapters.douyin.client import DouyinClient, encode_param_json, sign, sign_payload
from adapters.douyin.webhooks import event_sign
from douyin_fakes import FIXTURES

VECTOR_PARAMS = {"update_time_start": 1700000000, "update_time_end": 1700001800, "page": 0, "size": 10,
                 "order_by": "update_time"}
VECTOR_PARAM_JSON = ('{"order_by":"update_time","page":0,"size":10,'
                     '"update_time_end":1700001800,"update_time_start":1700000000}')


def test_param_json_sorts_keys_recursively_compact_and_unescaped():
    assert encode_param_json(VECTOR_PARAMS) == VECTOR_PARAM_JSON
    assert encode_param_json({"b": {"z": 1, "a": "茶"}, "a": [2, 1]}) == '{"a":[2,1],"b":{"a":"茶","z":1}}'


def test_hmac_sha256_sign_matches_china_md_vector():
    # [C] regression vector, computed from the documented algorithm (china.md 3.2).
    assert sign("1234567890123456789", "testsecret", "order.searchList", VECTOR_PARAM_JSON, "1700001900") == (
        "52304bff35435f7b05f17d2180966306585fd0a61369308147b71006d356cab2")


def test_signed_string_order_matches_the_md5_vector_of_the_same_doc():
    # The md5 variant hashes the same string, so its vector pins the concatenation order independently.
    payload = sign_payload("1234567890123456789", "testsecret", "order.searchList", VECTOR_PARAM_JSON, "1700001900")
    assert payload.startswith("testsecretapp_key1234567890123456789methodorder.searchListparam_json{")
    assert payload.endswith("timestamp1700001900v2testsecret")
    assert hashlib.md5(payload.encode()).hexdigest() == "ed31e01b78edd4cc2fe764d58befcec8"


def test_request_puts_signed_params_in_query_and_param_json_in_body():
    client = DouyinClient(httpx.AsyncClient(), app_key="1234567890123456789", app_secret="testsecret",
                          access_token="tok", base_url="https://gw.test/", clock=lambda: 1700001900.7)
    request = client.build_request("order.searchList", VECTOR_PARAMS)
    assert request.method == "POST"
    assert request.url.path == "/order/searchList"
    query = dict(request.url.params)
    assert query == {
        "app_key": "1234567890123456789", "method": "order.searchList", "access_token": "tok",
        "timestamp": "1700001900", "v": "2", "sign_method": "hmac-sha256",
        "sign": "52304bff35435f7b05f17d2180966306585fd0a61369308147b71006d356cab2",
    }
    assert request.content.decode() == VECTOR_PARAM_JSON
    assert request.headers["content-type"] == "application/json"


def test_default_gateway_is_the_production_host():
    client = DouyinClient(httpx.AsyncClient(), app_key="k", app_secret="s", access_token="t")
    request = client.build_request("sku.syncStock", {})
    assert str(request.url).startswith("https://openapi-fxg.jinritemai.com/sku/syncStock?")


def test_push_event_sign_matches_china_md_vector():
    body = (FIXTURES / "push-101-vector.json").read_bytes()
    assert event_sign("1234567890123456789", body, "testsecret") == "5356a0b17fb28b6fe4b98afffba63051"


def test_sign_is_keyed_by_the_secret():
    assert sign("k", "secret-a", "m", "{}", "1") != sign("k", "secret-b", "m", "{}", "1")
    expected = hmac.new(b"secret-a", b"secret-aapp_keykmethodmparam_json{}timestamp1v2secret-a",
                        hashlib.sha256).hexdigest()
    assert sign("k", "secret-a", "m", "{}", "1") == expected
