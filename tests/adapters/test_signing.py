"""Shared gateway signing: the published and computed vectors of china.md 1.2 and 2.2."""

from __future__ import annotations

import pytest

from adapters.signing import (
    hmac_hex,
    param_value,
    prepare_params,
    sign_wrapped_md5,
    signatures_equal,
    sorted_concat,
    wrapped_md5,
)
from adapters.taobao.client import top_sign

PDD_DOC_PARAMS = {
    "access_token": "asd78172s8ds9a921j9qqwda12312w1w21211", "client_id": "1", "data_type": "XML",
    "order_status": "1", "page": "1", "page_size": "10", "timestamp": "1480411125",
    "type": "pdd.order.number.list.get",
}
TOP_DOC_PARAMS = {
    "app_key": "12345678", "fields": "num_iid,title,nick,price,num", "format": "json",
    "method": "taobao.item.seller.get", "num_iid": "11223344", "session": "test", "sign_method": "md5",
    "timestamp": "2016-01-01 12:00:00", "v": "2.0",
}


def test_pdd_official_doc_vector():
    assert sign_wrapped_md5(PDD_DOC_PARAMS, "testSecret") == "E4DE3ED21002510DED352819E7AE6775"


def test_pdd_whalesky_vector_with_integer_values():
    params = {
        "client_id": "test-client", "data_type": "JSON", "logistics_id": 9, "order_sn": "240101-1",
        "order_state": 1, "timestamp": 1720000000, "type": "pdd.erp.order.sync", "version": "V1",
        "waybill_no": "SF123",
    }
    assert sign_wrapped_md5(params, "test-secret") == "CC0F30530BBAC3FD67608391D61E370C"


def test_sign_ignores_the_sign_parameter_and_empty_values():
    noisy = PDD_DOC_PARAMS | {"sign": "WHATEVER", "order_sn": "", "memo": None}
    assert sign_wrapped_md5(noisy, "testSecret") == "E4DE3ED21002510DED352819E7AE6775"


def test_top_official_md5_vector():
    assert top_sign(TOP_DOC_PARAMS, "helloworld", "md5") == "66987CB115214E59E6EC978214934FB8"


def test_top_hmac_md5_computed_vector():
    params = TOP_DOC_PARAMS | {"sign_method": "hmac"}
    assert top_sign(params, "helloworld", "hmac") == "D56D7858309C31B6251083A874D48273"


def test_top_hmac_sha256_computed_vector():
    params = TOP_DOC_PARAMS | {"sign_method": "hmac-sha256"}
    assert top_sign(params, "helloworld", "hmac-sha256") == (
        "04DB15AD0774D5CFCE2C837DE43E3FCEA9011ED74F3038FB6AB5F3C4CEA119E8"
    )


def test_building_blocks_compose_into_the_gateway_forms():
    s = sorted_concat({"b": "2", "a": "1", "sign": "x"})
    assert s == "a1b2"
    assert wrapped_md5("k", s) == wrapped_md5("k", "a1b2", upper=False).upper()
    assert hmac_hex("k", s, "md5") != hmac_hex("k", s, "sha256")
    assert hmac_hex("k", s, "sha256", upper=False).islower()


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (0, "0"), (12, "12"), ("", None), (None, None),
    ({"b": 1, "a": "茶"}, '{"b":1,"a":"茶"}'), ([1, 2], "[1,2]"),
])
def test_parameter_values_are_sent_as_the_gateways_sign_them(value, text):
    assert param_value(value) == text


def test_prepare_params_drops_empty_values_and_keeps_zero():
    assert prepare_params({"a": "", "b": None, "c": 0, "d": False}) == {"c": "0", "d": "false"}


def test_signature_comparison_is_case_insensitive_and_refuses_missing():
    assert signatures_equal("ABCDEF", "abcdef")
    assert not signatures_equal("ABCDEF", "ABCDEE")
    assert not signatures_equal("ABCDEF", None)
    assert not signatures_equal("ABCDEF", "")
