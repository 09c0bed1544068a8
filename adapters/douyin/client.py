"""Douyin Shop Open API client: one signed POST per method, body-level codes mapped onto the error tree.

Facts from shared/platforms/china.md section 3 (official Go SDK ``zsmhub/doudian-sdk``): the query carries
``app_key, method, access_token, timestamp, v, sign_method, sign``; the body is ``param_json``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import httpx

from adapters.errors import AdapterError, AuthExpiredError, PayloadError, PermanentError, ThrottledError, TransientError
from adapters.gateway import GatewayClient
from adapters.http import error_for_response
from adapters.signing import hmac_hex
from adapters.tokens import RefreshRefused

PLATFORM = "douyin"
DEFAULT_BASE_URL = "https://openapi-fxg.jinritemai.com"
API_VERSION = "2"
SIGN_METHOD = "hmac-sha256"
PAGE_SIZE = 100  # rows; both list APIs cap `size` at 100
THROTTLE_RETRY_S = 1.0  # seconds; code 60000 carries no delay and no rate is published (china.md 3.8)
SUCCESS_CODE = "10000"
SETTLE_SUCCESS_CODE = "100000"  # /order/getSettleBillDetailV3 answers its own code inside ``data``
REFRESH_CLASH_RETRY_S = 1.0  # seconds, after 31012 (a concurrent refresh of the same shop)


def encode_param_json(params: Mapping[str, Any]) -> str:
    """``param_json`` as the official SDK writes it: keys sorted recursively, compact, raw UTF-8."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign_payload(app_key: str, app_secret: str, method: str, param_json: str, timestamp: str,
                 v: str = API_VERSION) -> str:
    """The string that is signed: secret + app_key..method..param_json..timestamp..v.. + secret."""
    return (f"{app_secret}app_key{app_key}method{method}param_json{param_json}"
            f"timestamp{timestamp}v{v}{app_secret}")


def sign(app_key: str, app_secret: str, method: str, param_json: str, timestamp: str,
         v: str = API_VERSION) -> str:
    """``sign_method=hmac-sha256``: lower-hex HMAC-SHA256 keyed by the app secret (china.md 3.2)."""
    return hmac_hex(app_secret, sign_payload(app_key, app_secret, method, param_json, timestamp, v), upper=False)


def path_for(method: str) -> str:
    """``order.searchList`` -> ``/order/searchList``."""
    return "/" + method.replace(".", "/")


def error_for_body(body: Mapping[str, Any], method: str) -> AdapterError | None:
    """Map the envelope's ``code``/``sub_code`` onto the error tree; None on ``code == 10000``."""
    code = str(body.get("code", ""))
    if code == SUCCESS_CODE:
        return None
    sub_code = str(body.get("sub_code") or "")
    detail = " / ".join(str(x) for x in (body.get("msg"), body.get("sub_msg")) if x)
    message = f"{method} failed: {detail or 'no message'} (log_id {body.get('log_id')})"
    err_code = f"{code}:{sub_code}" if sub_code else code
    if code == "60000":
        return ThrottledError(message, platform=PLATFORM, code=err_code, retry_after_s=THROTTLE_RETRY_S)
    if code in ("20000", "20001"):
        return TransientError(message, platform=PLATFORM, code=err_code)
    if code == "40003" and sub_code.startswith(("isv.access-token-expired", "isv.access-token-no-existed")):
        return AuthExpiredError(message + ". Refresh or re-authorise the shop's access token.",
                                platform=PLATFORM, code=err_code)
    if code == "30001" and ("authorization-no-existed" in sub_code or "authorization-closed" in sub_code):
        # The shop withdrew the authorisation (or closed its switch): no refresh helps, a human re-authorises.
        return RefreshRefused(message + ". The shop must authorise the app again.", revoked=True,
                              platform=PLATFORM, code=err_code)
    if code == "50002" and sub_code.endswith("31012"):
        # "刷新token失败，有并发请求": another refresh of this shop is under way; its result will do.
        return TransientError(message, platform=PLATFORM, code=err_code, retry_after_s=REFRESH_CLASH_RETRY_S)
    return PermanentError(message, platform=PLATFORM, code=err_code)


class DouyinClient(GatewayClient):
    """Signed calls to the Douyin Shop gateway; each method returns the envelope's ``data``.

    Unlike PDD and TOP it signs into the query, sends JSON and answers with a ``code`` envelope."""

    platform = PLATFORM
    default_url = DEFAULT_BASE_URL

    def build_request(self, method: str, params: Mapping[str, Any]) -> httpx.Request:
        body = encode_param_json(params)
        # The sign covers exactly the timestamp string that is sent (china.md 3.1).
        timestamp = str(int(self.clock()))
        query = {
            "app_key": self.app_key,
            "method": method,
            "timestamp": timestamp,
            "v": API_VERSION,
            "sign_method": SIGN_METHOD,
            "sign": sign(self.app_key, self.app_secret, method, body, timestamp),
        }
        if self.access_token:  # the token endpoints are called without one
            query["access_token"] = self.access_token
        headers = {"Content-Type": "application/json", "x-open-no-old-err-code": "1"}
        return self.http.build_request("POST", self.url.rstrip("/") + path_for(method), params=query,
                                       content=body.encode(), headers=headers)

    def parse(self, response: httpx.Response, method: str) -> dict[str, Any]:
        # The gateway answers 200 with a body code; a non-2xx status comes from a proxy or an outage,
        # and its body (if any) is not the envelope, so the status decides.
        status_error = error_for_response(response, PLATFORM)
        if status_error is not None:
            raise status_error
        try:
            body = response.json()
        except ValueError as exc:
            raise PayloadError(f"{method}: answer is not JSON", platform=PLATFORM) from exc
        if not isinstance(body, dict):
            raise PayloadError(f"{method}: answer is not a JSON object", platform=PLATFORM)
        body_error = error_for_body(body, method)
        if body_error is not None:
            raise body_error
        data = body.get("data")
        if isinstance(data, list):  # a bare list (/order/logisticsCompanyList)
            return {"list": data}
        return data if isinstance(data, dict) else {}

    async def order_search_list(self, update_time_start: int, update_time_end: int, *, page: int,
                                size: int = PAGE_SIZE) -> dict[str, Any]:
        """Shop orders by update time, one page (page from 0). ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/order_searchList/request/order_searchList_request.go"""
        return await self.call("order.searchList", {
            "update_time_start": update_time_start, "update_time_end": update_time_end,
            "order_by": "update_time", "order_asc": True, "page": page, "size": size,
        })

    async def order_detail(self, shop_order_id: str) -> dict[str, Any]:
        """One shop order with its sku orders and logistics. ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/order_orderDetail/request/order_orderDetail_request.go"""
        return await self.call("order.orderDetail", {"shop_order_id": shop_order_id})

    async def after_sale_list(self, update_start_time: int | None = None, update_end_time: int | None = None, *,
                              aftersale_id: str | None = None, page: int = 0,
                              size: int = PAGE_SIZE) -> dict[str, Any]:
        """After-sale orders by update time or by id, one page. ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/afterSale_List/request/afterSale_List_request.go"""
        params: dict[str, Any] = {"order_by": ["update_time asc"], "page": page, "size": size}
        if update_start_time is not None:
            params["update_start_time"] = update_start_time
        if update_end_time is not None:
            params["update_end_time"] = update_end_time
        if aftersale_id is not None:
            params["aftersale_id"] = aftersale_id
        return await self.call("afterSale.List", params)

    async def order_logistics_add(self, *, order_id: str, company_code: str, logistics_code: str) -> dict[str, Any]:
        """Ship a whole shop order in one parcel (no idempotency key). ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/order_logisticsAdd/request/order_logisticsAdd_request.go"""
        return await self.call("order.logisticsAdd", {"order_id": order_id, "company_code": company_code,
                                                      "logistics_code": logistics_code}, attempts=1)

    async def order_logistics_add_multi_pack(self, *, order_id: str, packs: list[dict[str, Any]],
                                             request_id: str) -> dict[str, Any]:
        """Ship parcels of chosen sku orders and quantities; the same ``request_id`` again answers the first
        success without shipping twice. ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/order_logisticsAddMultiPack/request/order_logisticsAddMultiPack_request.go"""
        return await self.call("order.logisticsAddMultiPack", {"order_id": order_id, "pack_list": packs,
                                                               "request_id": request_id})

    async def order_logistics_company_list(self) -> list[dict[str, Any]]:
        """Every courier with its ``code`` (what a shipment names). ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/order_logisticsCompanyList/response/order_logisticsCompanyList_response.go"""
        data = await self.call("order.logisticsCompanyList", {})
        rows = data.get("list", data.get("data"))
        return [row for row in rows or [] if isinstance(row, dict)]

    async def sku_sync_stock(self, *, product_id: int, sku_id: int, stock_num: int,
                             idempotent_id: str | None = None) -> dict[str, Any]:
        """One sku's stock: a full update, or with ``idempotent_id`` an increment (``stock_num`` may be negative)
        that Douyin applies once per id. ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/sku_syncStock/request/sku_syncStock_request.go"""
        params: dict[str, Any] = {"product_id": product_id, "sku_id": sku_id, "stock_num": stock_num,
                                  "incremental": idempotent_id is not None}
        if idempotent_id is not None:
            params["idempotent_id"] = idempotent_id
        return await self.call("sku.syncStock", params)

    # --- settlement (operations.md 5.3) -----------------------------------------------------------

    async def settle_bill_detail(self, start_time: str, end_time: str, *, start_index: str | None = None,
                                 size: int = PAGE_SIZE) -> dict[str, Any]:
        """Settled sub-orders by settlement time (``time_type`` 0), one page: ``data[]``, ``is_end``,
        ``next_start_index`` and ``next_start_time`` (the next page's ``start_index`` and ``start_time``).
        Data is ready T+1. ref: https://github.com/zsmhub/doudian-sdk/blob/93c52ff565c8841af997483e456b5f1739cb2c36/api/order_getSettleBillDetailV3/request/order_getSettleBillDetailV3_request.go"""
        params: dict[str, Any] = {"start_time": start_time, "end_time": end_time, "size": size, "time_type": "0"}
        if start_index:
            params["start_index"] = start_index
        data = await self.call("order.getSettleBillDetailV3", params)
        code = str(data.get("code") or SETTLE_SUCCESS_CODE)
        if code != SETTLE_SUCCESS_CODE:
            raise PermanentError(f"order.getSettleBillDetailV3 failed: {data.get('code_msg') or 'no message'} "
                                 f"(code {code})", platform=PLATFORM, code=code)
        return data
