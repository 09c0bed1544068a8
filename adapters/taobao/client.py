"""Signed client for the Taobao/Tmall TOP gateway: one method per remote call, errors classified.

Form POST to ``/router/rest`` with the common parameters and an md5 / hmac / hmac-sha256 sign
(china.md 2.1-2.2); body-level ``error_response`` codes are mapped onto the error tree (2.8).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Awaitable, Callable, Literal, Mapping

import httpx

from adapters.errors import (
    AdapterError,
    AuthExpiredError,
    PayloadError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from adapters.http import error_for_response, send, with_retries
from adapters.signing import hmac_hex, prepare_params, sorted_concat, wrapped_md5
from adapters.units import to_beijing_str, utcnow

PLATFORM = "taobao"
DEFAULT_BASE_URL = "https://eco.taobao.com/router/rest"
# The lists allow 100 rows but the doc recommends 40-50 for trades (big payloads per row).
PAGE_SIZE = 50  # rows

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
SIGN_METHODS: tuple[str, ...] = ("md5", "hmac", "hmac-sha256")

THROTTLED_DEFAULT_RETRY_AFTER_S = 1.0  # seconds, when code 7 does not say how long the ban lasts
_BAN_SECONDS = re.compile(r"ban will last for (\d+) more seconds", re.IGNORECASE)
_THROTTLE_SUB_CODES = ("accesscontrol.limited-by-",)  # zsea/node-top retries these

TRADE_FIELDS = ",".join([
    "tid", "tid_str", "status", "type", "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee",
    "received_payment", "created", "modified", "pay_time", "consign_time", "end_time",
    "step_trade_status", "step_paid_fee",
    "orders.oid", "orders.oid_str", "orders.num_iid", "orders.sku_id", "orders.outer_iid", "orders.outer_sku_id",
    "orders.title", "orders.num", "orders.price", "orders.payment", "orders.divide_order_fee", "orders.total_fee",
    "orders.adjust_fee", "orders.discount_fee", "orders.status", "orders.refund_status", "orders.refund_id",
    "orders.consign_time", "orders.end_time",
])
REFUND_FIELDS = ",".join([
    "refund_id", "tid", "oid", "status", "refund_fee", "total_fee", "payment", "num", "num_iid", "outer_id",
    "sku", "title", "good_status", "has_good_return", "refund_phase", "refund_version", "order_status",
    "dispute_type", "created", "modified",
])


def top_sign(params: Mapping[str, Any], secret: str, sign_method: str) -> str:
    """The TOP sign of ``params`` for ``sign_method`` (china.md 2.2), uppercase hex."""
    payload = sorted_concat(params)
    if sign_method == "md5":
        return wrapped_md5(secret, payload)
    if sign_method == "hmac":
        return hmac_hex(secret, payload, "md5")  # HMAC-MD5 over the bare string, no wrapping
    if sign_method == "hmac-sha256":
        return hmac_hex(secret, payload, "sha256")
    raise PermanentError(f"unknown sign_method {sign_method!r}", platform=PLATFORM)


def classify_error(error: Mapping[str, Any]) -> AdapterError:
    """Map a TOP ``error_response`` onto the error tree (china.md 2.8)."""
    try:
        code = int(error.get("code", -1))
    except (TypeError, ValueError):
        code = -1
    sub_code = str(error.get("sub_code") or "")
    text = " / ".join(str(x) for x in (error.get("msg"), error.get("sub_code"), error.get("sub_msg")) if x) or "error"
    if code == 7 or sub_code.startswith(_THROTTLE_SUB_CODES):
        match = _BAN_SECONDS.search(f"{error.get('msg') or ''} {error.get('sub_msg') or ''}")
        wait = float(match.group(1)) if match else THROTTLED_DEFAULT_RETRY_AFTER_S
        return ThrottledError(text, platform=PLATFORM, code=str(code), retry_after_s=wait)
    if code in (26, 27):
        # 27 Invalid Session (expired/revoked token); 26 Missing Session: both need the seller to
        # authorise the app again.
        return AuthExpiredError(f"{text}; re-authorise the shop and update its session",
                                platform=PLATFORM, code=str(code))
    if code == 15:
        # "Remote service error": isp.* sub_codes are the platform's own failures and pass
        # (zsea/node-top retries them); isv.* sub_codes and isp.invalid-parameters are our request.
        if sub_code.startswith("isv.") or sub_code == "isp.invalid-parameters":
            return PermanentError(text, platform=PLATFORM, code=str(code))
        return TransientError(text, platform=PLATFORM, code=str(code))
    # 25 Invalid Signature, 31 Invalid Timestamp (clock drift > 10 min), 11/12 permissions,
    # 50 business errors: the same call fails the same way.
    return PermanentError(text, platform=PLATFORM, code=str(code))


class TopClient:
    """One shop's view of the TOP gateway."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        app_key: str,
        app_secret: str,
        session: str | None,
        sign_method: str = "md5",
        base_url: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if sign_method not in SIGN_METHODS:
            raise PermanentError(f"sign_method must be one of {SIGN_METHODS}, not {sign_method!r}", platform=PLATFORM)
        self.http = http
        self.app_key = app_key
        self._secret = app_secret
        self._session = session
        self.sign_method = sign_method
        self.url = base_url or DEFAULT_BASE_URL
        self.clock = clock
        self.sleep = sleep

    def signed_params(self, method: str, business: Mapping[str, Any]) -> dict[str, str]:
        params = prepare_params({
            **business,
            "method": method,
            "app_key": self.app_key,
            "session": self._session,
            "timestamp": to_beijing_str(self.clock()),  # GMT+8, within 10 min of TOP's clock
            "format": "json",
            "v": "2.0",
            "sign_method": self.sign_method,
        })
        params["sign"] = top_sign(params, self._secret, self.sign_method)
        return params

    async def call(self, method: str, business: Mapping[str, Any]) -> dict[str, Any]:
        """POST one API call (retrying short transient failures) and return the JSON body."""

        async def once() -> dict[str, Any]:
            request = self.http.build_request("POST", self.url, data=self.signed_params(method, business))
            response = await send(self.http, request, PLATFORM)
            return self._parse(response)

        return await with_retries(once, sleep=self.sleep)

    @staticmethod
    def _parse(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error_response"), dict):
            raise classify_error(body["error_response"])
        http_error = error_for_response(response, PLATFORM)
        if http_error is not None:
            raise http_error
        if not isinstance(body, dict):
            raise TransientError(f"non-JSON answer from the gateway: {response.text[:200]!r}", platform=PLATFORM)
        return body

    @staticmethod
    def unwrap(body: Mapping[str, Any], key: str) -> dict[str, Any]:
        inner = body.get(key)
        if isinstance(inner, dict):
            return inner
        raise PayloadError(f"answer has no {key!r}: keys {sorted(body)[:5]}", platform=PLATFORM)

    async def trades_sold_increment_get(self, start: str, end: str, page_no: int, page_size: int = PAGE_SIZE) -> dict[str, Any]:
        """taobao.trades.sold.increment.get; ref: https://open.taobao.com/api.htm?docId=128&docType=2"""
        body = await self.call("taobao.trades.sold.increment.get", {
            "fields": TRADE_FIELDS,
            "start_modified": start,
            "end_modified": end,
            "page_no": page_no,
            "page_size": page_size,
            "use_has_next": False,  # keeps total_results, which backward paging needs
        })
        return self.unwrap(body, "trades_sold_increment_get_response")

    async def trade_fullinfo_get(self, tid: str) -> dict[str, Any]:
        """taobao.trade.fullinfo.get; ref: https://open.taobao.com/api.htm?docId=54&docType=2"""
        body = await self.call("taobao.trade.fullinfo.get", {"fields": TRADE_FIELDS, "tid": tid})
        return self.unwrap(body, "trade_fullinfo_get_response")

    async def refunds_receive_get(self, start: str, end: str, page_no: int, page_size: int = PAGE_SIZE) -> dict[str, Any]:
        """taobao.refunds.receive.get; ref: https://open.taobao.com/api.htm?docId=52&docType=2"""
        body = await self.call("taobao.refunds.receive.get", {
            "fields": REFUND_FIELDS,
            "start_modified": start,
            "end_modified": end,
            "page_no": page_no,
            "page_size": page_size,
            "use_has_next": False,
        })
        return self.unwrap(body, "refunds_receive_get_response")

    async def refund_get(self, refund_id: str) -> dict[str, Any]:
        """taobao.refund.get; ref: https://open.taobao.com/api.htm?docId=53&docType=2"""
        body = await self.call("taobao.refund.get", {"fields": REFUND_FIELDS, "refund_id": refund_id})
        return self.unwrap(body, "refund_get_response")

    async def item_quantity_update(self, num_iid: str, sku_id: str | None, quantity: int) -> dict[str, Any]:
        """taobao.item.quantity.update; ref: https://open.taobao.com/api.htm?docId=10591&docType=2"""
        body = await self.call("taobao.item.quantity.update", {
            "num_iid": num_iid,
            "sku_id": sku_id,  # omitted when None: the item-level stock of an item without SKUs
            "quantity": quantity,
            "type": 1,  # full: set, not add (the parameter is ``type``, not ``update_type``)
        })
        return self.unwrap(body, "item_quantity_update_response")
