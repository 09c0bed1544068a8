"""The shared adapter kit: payload fields, multi-secret webhooks, halting pushes, gateway errors and paging."""

from __future__ import annotations

import ast
import hashlib
import hmac
from pathlib import Path

import httpx
import pytest

from adapters.base import PushResult, StockLevel
from adapters.errors import (
    AuthExpiredError,
    PayloadError,
    PermanentError,
    SignatureError,
    ThrottledError,
    TransientError,
)
from adapters.fields import as_int, ext_id, present, required
from adapters.gateway import BackwardPaging, ErrorTable, GatewayClient, first_page, next_cursor, read_error
from adapters.pinduoduo import mapping as pdd_mapping
from adapters.shopify import mapping as shopify_mapping
from adapters.signing import signed_by_any, verify_text_signature
from adapters.stock import push_each, refused
from adapters.woocommerce import mapping as woo_mapping

# --- ids and integers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_absent_ids_are_none_everywhere(value):
    assert ext_id(value) is None
    assert ext_id(value, allow_zero=True) is None


@pytest.mark.parametrize("value", [0, "0"])
def test_zero_is_an_id_only_where_allowed(value):
    assert ext_id(value) is None
    assert ext_id(value, allow_zero=True) == "0"


def test_each_platform_keeps_its_own_zero_rule():
    # Shopify ids are never 0, so a 0 it sends is passed on; the others write 0 for "no id".
    assert shopify_mapping._id("0") == "0" and shopify_mapping._id(0) == "0"
    assert pdd_mapping._id("0") is None and pdd_mapping._id(0) is None
    assert woo_mapping._id("0") is None
    # WooCommerce: variation_id 0 means a simple product, so the product id is the sku key.
    assert woo_mapping.sku_key({"variation_id": 0, "product_id": 17}) == "17"
    assert ext_id(12345678901234567890) == "12345678901234567890"


def test_as_int_keeps_each_platforms_wording():
    assert as_int("42", "num", platform="taobao") == 42
    with pytest.raises(PayloadError) as default:
        as_int("x", "num", platform="taobao")
    assert default.value.message == "num is not an integer: 'x'" and default.value.platform == "taobao"
    with pytest.raises(PayloadError) as custom:
        as_int(None, "item_num", platform="douyin", message="{field}={value!r} is not an integer")
    assert custom.value.message == "item_num=None is not an integer"


def test_required_refuses_missing_and_empty_but_not_zero():
    assert required({"id": 0}, "id", "order", platform="shopify", name="Shopify") == 0
    for payload in ({}, {"id": None}, {"id": ""}):
        with pytest.raises(PayloadError, match="Shopify order has no 'id'"):
            required(payload, "id", "order", platform="shopify", name="Shopify")


def test_present_refuses_none_only():
    assert present(0, "unused", platform="p") == 0
    with pytest.raises(PayloadError, match="trade without tid"):
        present(None, "trade without tid", platform="taobao")


# --- webhook signatures ----------------------------------------------------------------------------


def _digest(body: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def test_any_of_several_secrets_verifies():
    body = b'{"id": 1}'
    given = _digest(body, "previous")
    assert signed_by_any(given, ["current", "previous"], lambda s: _digest(body, s))
    assert not signed_by_any(given, ["current"], lambda s: _digest(body, s))


def test_empty_secret_is_skipped_unless_the_platform_tries_it():
    body = b"payload"
    given = _digest(body, "")
    assert not signed_by_any(given, [""], lambda s: _digest(body, s))
    assert signed_by_any(given, [""], lambda s: _digest(body, s), skip_empty=False)


def test_text_signature_names_its_header():
    def sig(body: bytes, secret: str) -> str:
        return _digest(body, secret).hex()

    verify_text_signature(sig(b"x", "s") + "\n", b"x", ["", "s"], sig, header="X-Sig", platform="p")
    with pytest.raises(SignatureError, match="missing X-Sig header"):
        verify_text_signature(None, b"x", ["s"], sig, header="X-Sig", platform="p")
    with pytest.raises(SignatureError, match="empty webhook body"):
        verify_text_signature("abc", b"", ["s"], sig, header="X-Sig", platform="p")
    with pytest.raises(SignatureError, match="X-Sig does not match the body"):
        verify_text_signature(sig(b"x", "other"), b"x", ["s"], sig, header="X-Sig", platform="p")


# --- stock pushes ----------------------------------------------------------------------------------

LEVELS = [StockLevel(external_sku_key=f"sku-{i}", quantity=i) for i in range(4)]


async def test_push_each_stops_sending_after_a_throttle():
    sent: list[str] = []

    async def push_one(level: StockLevel) -> PushResult | None:
        sent.append(level.external_sku_key)
        if level.external_sku_key == "sku-0":
            raise PermanentError("no such listing", platform="p")
        if level.external_sku_key == "sku-1":
            raise ThrottledError("slow down", platform="p", retry_after_s=30.0)
        return None

    results = await push_each(LEVELS, push_one)
    assert sent == ["sku-0", "sku-1"]  # one bad listing does not stop the rest; a throttle does
    assert [r.error_kind for r in results] == ["permanent", "throttled", "throttled", "throttled"]
    assert [r.retry_after_s for r in results[1:]] == [30.0, 30.0, 30.0]


async def test_push_each_halts_on_what_the_platform_says_and_passes_refusals_through():
    async def push_one(level: StockLevel) -> PushResult | None:
        if level.external_sku_key == "sku-0":
            return refused(level, "listing_ref needs goods_id")
        if level.external_sku_key == "sku-1":
            raise TransientError("gateway down", platform="p")
        return None

    default = await push_each(LEVELS, push_one)
    assert [r.ok for r in default] == [False, False, True, True]
    assert default[0].error == "listing_ref needs goods_id" and default[0].error_kind == "permanent"
    halting = await push_each(LEVELS, push_one, halt_on=(AuthExpiredError, TransientError))
    assert [r.error_kind for r in halting] == ["permanent", "transient", "transient", "transient"]


# --- gateway errors, answers and paging ------------------------------------------------------------

TABLE = ErrorTable("gw", auth=frozenset({7}), throttled=frozenset({8}), transient=frozenset({9}),
                   throttled_retry_after_s=2.0, auth_message="{message}; re-authorise")


def test_error_table_classifies_by_code_with_overrides():
    auth = TABLE.error(7, "token gone")
    assert isinstance(auth, AuthExpiredError) and auth.message == "token gone; re-authorise" and auth.code == "7"
    assert isinstance(TABLE.error(8, "busy"), ThrottledError) and TABLE.error(8, "busy").retry_after_s == 2.0
    assert TABLE.error(8, "busy", retry_after_s=0.0).retry_after_s == 0.0
    assert type(TABLE.error(9, "down")) is TransientError and TABLE.error(9, "down").retry_after_s is None
    assert type(TABLE.error(123, "bad")) is PermanentError
    assert type(TABLE.error(123, "bad", kind="transient")) is TransientError


def test_read_error_survives_an_unreadable_code():
    assert read_error({"code": "x", "msg": "m", "sub_code": "isv.a"}, "code", "msg", "sub_msg") == (-1, "isv.a", "m")
    assert read_error({}, "code", "msg") == (-1, "", "error")


class _Client(GatewayClient):
    platform = "gw"

    def classify(self, error):
        return TABLE.error(int(error["code"]), "refused")


def _answer(status: int, content: bytes) -> httpx.Response:
    return httpx.Response(status, content=content, request=httpx.Request("POST", "https://gw.test/router"))


def test_gateway_parse_prefers_the_body_verdict_and_distrusts_non_json():
    client = _Client(httpx.AsyncClient(), app_key="k", app_secret="s", access_token="t")
    with pytest.raises(AuthExpiredError):
        client.parse(_answer(500, b'{"error_response": {"code": 7}}'), "m")
    with pytest.raises(TransientError, match="non-JSON"):
        client.parse(_answer(200, b"<html>"), "m")
    body = client.parse(_answer(200, b'{"x_response": {"a": 1}}'), "m")
    assert client.unwrap(body, "x_response") == {"a": 1}
    with pytest.raises(PayloadError):
        client.unwrap(body, "y_response")


def test_backward_paging_reads_page_one_then_from_the_last_page_down():
    assert first_page(None, "gw") == (1, True)
    assert next_cursor(1, True, total=250, page_size=100, rows=100, platform="gw") == '{"page":3}'
    assert next_cursor(3, False, total=250, page_size=100, rows=50, platform="gw") == '{"page":2}'
    assert next_cursor(1, False, total=250, page_size=100, rows=100, platform="gw") is None
    assert next_cursor(1, True, total=None, page_size=100, rows=40, platform="gw") is None
    with pytest.raises(PayloadError):
        next_cursor(1, True, total=None, page_size=100, rows=100, platform="gw")
    with pytest.raises(PermanentError):
        first_page('{"page": 0}', "gw")


async def test_backward_paging_object_asks_for_pages_with_its_size():
    asked: list[tuple[int, int]] = []

    async def fetch(page: int, size: int):
        asked.append((page, size))
        return {"total": "5", "rows": [page] * 2}

    paging = BackwardPaging("gw", page_size=2, total_key="total")
    rows, cursor = await paging.read(None, fetch, lambda result: result["rows"])
    assert rows == [1, 1] and cursor == '{"page":3}'
    rows, cursor = await paging.read(cursor, fetch, lambda result: result["rows"])
    assert asked == [(1, 2), (3, 2)] and cursor == '{"page":2}'


# --- package boundaries ----------------------------------------------------------------------------

ADAPTERS_DIR = Path(__file__).resolve().parents[2] / "adapters"
PLATFORM_PACKAGES = sorted(p.name for p in ADAPTERS_DIR.iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("name", PLATFORM_PACKAGES)
def test_a_platform_package_imports_no_other_platform(name):
    # Shared code lives in the kit modules (adapters.gateway, adapters.rest, ...), never in a sibling platform.
    others = set(PLATFORM_PACKAGES) - {name}
    for path in (ADAPTERS_DIR / name).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for module in modules:
                parts = module.split(".")
                assert not (parts[0] == "adapters" and len(parts) > 1 and parts[1] in others), f"{path} imports {module}"
