"""Signed client for the Taobao/Tmall TOP gateway: one method per remote call, errors classified.

Form POST to ``/router/rest`` with the common parameters and an md5 / hmac / hmac-sha256 sign
(china.md 2.1-2.2); body-level ``error_response`` codes are mapped onto the error tree (2.8).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping

from adapters.errors import AdapterError, PermanentError
from adapters.gateway import ErrorTable, GatewayClient, read_error
from adapters.http import IN_CALL_ATTEMPTS
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

# 27 Invalid Session (expired/revoked token) and 26 Missing Session both need the seller to authorise
# the app again. 25 Invalid Signature, 31 Invalid Timestamp (clock drift > 10 min), 11/12 permissions
# and 50 business errors fail the same way on a retry: the table's permanent default.
ERRORS = ErrorTable(
    PLATFORM, auth=frozenset({26, 27}), throttled=frozenset({7}),
    throttled_retry_after_s=THROTTLED_DEFAULT_RETRY_AFTER_S,
    auth_message="{message}; re-authorise the shop and update its session",
)

TRADE_FIELDS = ",".join([
    "tid", "tid_str", "status", "type", "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee",
    "received_payment", "created", "modified", "pay_time", "consign_time", "end_time",
    "step_trade_status", "step_paid_fee", "commission_fee", "platform_subsidy_fee",
    "orders.oid", "orders.oid_str", "orders.num_iid", "orders.sku_id", "orders.outer_iid", "orders.outer_sku_id",
    "orders.title", "orders.num", "orders.price", "orders.payment", "orders.divide_order_fee", "orders.total_fee",
    "orders.adjust_fee", "orders.discount_fee", "orders.status", "orders.refund_status", "orders.refund_id",
    "orders.consign_time", "orders.end_time",
])
# What a shipment upload reads back: every sub-order's waybill and carrier (operations.md 1.2).
SHIPPING_FIELDS = ",".join([
    "tid", "tid_str", "status", "consign_time", "orders.oid", "orders.oid_str", "orders.status", "orders.num",
    "orders.consign_time", "orders.invoice_no", "orders.logistics_company",
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
    code, sub_code, text = read_error(error, "code", "msg", "sub_code", "sub_msg")
    if code == 7 or sub_code.startswith(_THROTTLE_SUB_CODES):
        match = _BAN_SECONDS.search(f"{error.get('msg') or ''} {error.get('sub_msg') or ''}")
        return ERRORS.error(code, text, kind="throttled", retry_after_s=float(match.group(1)) if match else None)
    if code == 15:
        # "Remote service error": isp.* sub_codes are the platform's own failures and pass
        # (zsea/node-top retries them); isv.* sub_codes and isp.invalid-parameters are our request.
        ours = sub_code.startswith("isv.") or sub_code == "isp.invalid-parameters"
        return ERRORS.error(code, text, kind="permanent" if ours else "transient")
    return ERRORS.error(code, text)


class TopClient(GatewayClient):
    """One shop's view of the TOP gateway; ``access_token`` is the seller's session."""

    platform = PLATFORM
    default_url = DEFAULT_BASE_URL
    default_clock = staticmethod(utcnow)
    classify = staticmethod(classify_error)

    def __init__(self, *args: Any, sign_method: str = "md5", **kwargs: Any) -> None:
        if sign_method not in SIGN_METHODS:
            raise PermanentError(f"sign_method must be one of {SIGN_METHODS}, not {sign_method!r}", platform=PLATFORM)
        super().__init__(*args, **kwargs)
        self.sign_method = sign_method

    def signed_params(self, method: str, business: Mapping[str, Any]) -> dict[str, str]:
        params = prepare_params({
            **business,
            "method": method,
            "app_key": self.app_key,
            "session": self.access_token,
            "timestamp": to_beijing_str(self.clock()),  # GMT+8, within 10 min of TOP's clock
            "format": "json",
            "v": "2.0",
            "sign_method": self.sign_method,
        })
        params["sign"] = top_sign(params, self.app_secret, self.sign_method)
        return params

    async def _increment_get(self, method: str, fields: str, start: str, end: str, page_no: int,
                             page_size: int) -> dict[str, Any]:
        body = await self.call(method, {
            "fields": fields,
            "start_modified": start,
            "end_modified": end,
            "page_no": page_no,
            "page_size": page_size,
            "use_has_next": False,  # keeps total_results, which backward paging needs
        })
        return self.unwrap(body, method.removeprefix("taobao.").replace(".", "_") + "_response")

    async def trades_sold_increment_get(self, start: str, end: str, page_no: int, page_size: int = PAGE_SIZE) -> dict[str, Any]:
        """taobao.trades.sold.increment.get; ref: https://open.taobao.com/api.htm?docId=128&docType=2"""
        return await self._increment_get("taobao.trades.sold.increment.get", TRADE_FIELDS, start, end, page_no, page_size)

    async def trade_fullinfo_get(self, tid: str) -> dict[str, Any]:
        """taobao.trade.fullinfo.get; ref: https://open.taobao.com/api.htm?docId=54&docType=2"""
        body = await self.call("taobao.trade.fullinfo.get", {"fields": TRADE_FIELDS, "tid": tid})
        return self.unwrap(body, "trade_fullinfo_get_response")

    async def refunds_receive_get(self, start: str, end: str, page_no: int, page_size: int = PAGE_SIZE) -> dict[str, Any]:
        """taobao.refunds.receive.get; ref: https://open.taobao.com/api.htm?docId=52&docType=2"""
        return await self._increment_get("taobao.refunds.receive.get", REFUND_FIELDS, start, end, page_no, page_size)

    async def refund_get(self, refund_id: str) -> dict[str, Any]:
        """taobao.refund.get; ref: https://open.taobao.com/api.htm?docId=53&docType=2"""
        body = await self.call("taobao.refund.get", {"fields": REFUND_FIELDS, "refund_id": refund_id})
        return self.unwrap(body, "refund_get_response")

    async def item_quantity_update(self, num_iid: str, sku_id: str | None, quantity: int, *,
                                   incremental: bool = False) -> dict[str, Any]:
        """taobao.item.quantity.update, ``type`` 1 (full: set) or 2 (增量: add; no idempotency key);
        ref: https://open.taobao.com/api.htm?docId=10591&docType=2"""
        body = await self.call("taobao.item.quantity.update", {
            "num_iid": num_iid,
            "sku_id": sku_id,  # omitted when None: the item-level stock of an item without SKUs
            "quantity": quantity,
            "type": 2 if incremental else 1,  # the parameter is ``type``, not ``update_type``
        }, attempts=1 if incremental else IN_CALL_ATTEMPTS)  # an increment is never resent blind
        return self.unwrap(body, "item_quantity_update_response")

    async def tmall_item_quantity_update(self, item_id: str, sku_id: str | None, quantity: int, *,
                                         incremental: bool = False, outer_biz_key: str | None = None) -> dict[str, Any]:
        """tmall.item.quantity.update (Tmall shops): ``options.type`` 1 sets the figure, 2 adds ``quantity``;
        an increment carries ``options.outer_biz_key`` (hex only), under which Tmall applies it once, so
        only an increment without a key is sent once and never repeated blind (operations.md 4.2).
        ref: https://open.taobao.com/api.htm?docId=26178&docType=2"""
        options: dict[str, Any] = {"type": 2 if incremental else 1}
        if incremental and outer_biz_key:
            options["outer_biz_key"] = outer_biz_key
        business: dict[str, Any] = {"item_id": item_id, "options": options}
        if sku_id:
            # One lookup mode per call (the doc warns that mixing sku_id, properties and outer_id is undefined).
            business["sku_quantities"] = [{"sku_id": int(sku_id) if sku_id.isdigit() else sku_id, "quantity": quantity}]
        else:
            business["item_quantity"] = quantity  # an item without SKUs
        keyless_increment = incremental and not outer_biz_key
        body = await self.call("tmall.item.quantity.update", business,
                               attempts=1 if keyless_increment else IN_CALL_ATTEMPTS)
        return self.unwrap(body, "tmall_item_quantity_update_response")

    # --- shipments (operations.md 1.2) -----------------------------------------------------------

    async def trade_shipping_get(self, tid: str) -> dict[str, Any]:
        """taobao.trade.fullinfo.get with the shipping fields only; ref: https://open.taobao.com/api.htm?docId=54&docType=2"""
        body = await self.call("taobao.trade.fullinfo.get", {"fields": SHIPPING_FIELDS, "tid": tid})
        return self.unwrap(body, "trade_fullinfo_get_response")

    async def logistics_offline_send(self, tid: str, out_sid: str, company_code: str) -> dict[str, Any]:
        """taobao.logistics.offline.send (自己联系物流发货), the whole trade; ref: https://open.taobao.com/api.htm?docId=10690&docType=2"""
        body = await self.call("taobao.logistics.offline.send", {"tid": tid, "out_sid": out_sid,
                                                                 "company_code": company_code}, attempts=1)
        return self.unwrap(body, "logistics_offline_send_response")

    async def ascp_logistics_offline_send(self, tid: str, packages: list[dict[str, Any]]) -> dict[str, Any]:
        """alibaba.ascp.logistics.offline.send, new chain (``consign_type`` 1): parcels of chosen sub-orders and
        quantities; ref: https://open.taobao.com/api.htm?docId=54934&docType=2"""
        body = await self.call("alibaba.ascp.logistics.offline.send", {"tid": tid, "consign_type": 1,
                                                                       "consign_pkgs": packages}, attempts=1)
        return self.unwrap(body, "alibaba_ascp_logistics_offline_send_response")

    async def logistics_companies_get(self) -> dict[str, Any]:
        """taobao.logistics.companies.get, the couriers of self-arranged shipping; ref: https://open.taobao.com/api.htm?docId=233&docType=2"""
        body = await self.call("taobao.logistics.companies.get", {"fields": "id,code,name,reg_mail_no",
                                                                  "order_mode": "offline"})
        return self.unwrap(body, "logistics_companies_get_response")
