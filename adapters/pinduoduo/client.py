"""Signed client for the PDD open-platform gateway: one method per remote call, errors classified.

Every call is a form POST to ``/api/router`` carrying the common parameters and an MD5 sign
(china.md 1.1-1.2); body-level ``error_response`` codes are mapped onto the adapter error tree (1.8).
"""

from __future__ import annotations

from typing import Any, Mapping

from adapters.errors import AdapterError, PayloadError
from adapters.gateway import ErrorTable, GatewayClient, read_error
from adapters.http import IN_CALL_ATTEMPTS
from adapters.signing import prepare_params, sign_wrapped_md5

PLATFORM = "pinduoduo"
DEFAULT_BASE_URL = "https://gw-api.pinduoduo.com/api/router"
PAGE_SIZE = 100  # rows; the documented maximum of both increment lists

# PDD's throttle codes carry no delay. Its shop limits are counted per 10 s or 60 s windows
# (china.md 1.8), so a short pause and the in-call retries cover a blip; a longer ban ends up in
# the job table once the in-call attempts are spent.
THROTTLED_RETRY_AFTER_S = 2.0  # seconds, for 52101 and 70031
UNAVAILABLE_RETRY_AFTER_S = 1.0  # seconds, for 52102 and 52103

THROTTLE_CODES = frozenset({52101, 70031})
UNAVAILABLE_CODES = frozenset({52102, 52103})
TOKEN_EXPIRED_CODE = 10019
TOKEN_SUB_CODES = frozenset({"access_token_invalid"})  # whalesky's test pairs it with 10019

# lywzx retries only the four throttle/unavailable codes; 10000-39999 (parameters, signature,
# permissions) and 50000-52003 (business) are explicitly not retryable, as the table's default says.
ERRORS = ErrorTable(
    PLATFORM, auth=frozenset({TOKEN_EXPIRED_CODE}), throttled=THROTTLE_CODES, transient=UNAVAILABLE_CODES,
    throttled_retry_after_s=THROTTLED_RETRY_AFTER_S, transient_retry_after_s=UNAVAILABLE_RETRY_AFTER_S,
    auth_message="access_token expired or invalid: {message}; re-authorise the shop or refresh its token",
)


def classify_error(error: Mapping[str, Any]) -> AdapterError:
    """Map a PDD ``error_response`` object onto the error tree (china.md 1.8, lywzx's rules)."""
    code, sub_code, text = read_error(error, "error_code", "error_msg", "sub_msg")
    message = f"{text} (request_id {error.get('request_id')})" if error.get("request_id") else text
    return ERRORS.error(code, message, kind="auth" if sub_code in TOKEN_SUB_CODES else None)


class PddClient(GatewayClient):
    """One shop's view of the PDD gateway; ``app_key`` is PDD's client_id."""

    platform = PLATFORM
    default_url = DEFAULT_BASE_URL
    classify = staticmethod(classify_error)

    def signed_params(self, api_type: str, business: Mapping[str, Any]) -> dict[str, str]:
        """Common + business parameters as strings, with ``sign`` (china.md 1.2)."""
        params = prepare_params({
            **business,
            "type": api_type,
            "client_id": self.app_key,
            "access_token": self.access_token,
            "timestamp": int(self.clock()),  # unix seconds; must be within 10 min of PDD's clock
            "data_type": "JSON",
            "version": "V1",
        })
        params["sign"] = sign_wrapped_md5(params, self.app_secret)
        return params

    async def order_number_list_increment(self, start: int, end: int, page: int, page_size: int = PAGE_SIZE) -> dict[str, Any]:
        """pdd.order.number.list.increment.get; ref: https://open.pinduoduo.com/application/document/api?id=pdd.order.number.list.increment.get"""
        body = await self.call("pdd.order.number.list.increment.get", {
            "start_updated_at": start,
            "end_updated_at": end,
            "order_status": 5,  # all
            "refund_status": 5,  # all
            "is_lucky_flag": 0,  # all
            "page": page,
            "page_size": page_size,
            "use_has_next": False,  # keeps total_count, which backward paging needs
        })
        return self.unwrap(body, "order_sn_increment_get_response")

    async def order_information(self, order_sn: str) -> dict[str, Any]:
        """pdd.order.information.get; ref: https://open.pinduoduo.com/application/document/api?id=pdd.order.information.get"""
        body = await self.call("pdd.order.information.get", {"order_sn": order_sn})
        return self.unwrap(body, "order_info_get_response")

    async def refund_list_increment(
        self, start: int, end: int, page: int, page_size: int = PAGE_SIZE, order_sn: str | None = None
    ) -> dict[str, Any]:
        """pdd.refund.list.increment.get; ref: https://open.pinduoduo.com/application/document/api?id=pdd.refund.list.increment.get"""
        body = await self.call("pdd.refund.list.increment.get", {
            "start_updated_at": start,
            "end_updated_at": end,
            # Request filters: after_sales_status 1 = all and after_sales_type 1 = all. The type filter
            # is numbered one above the response's after_sales_type (filter 2 = response 1 refund only).
            "after_sales_status": 1,
            "after_sales_type": 1,
            "page": page,
            "page_size": page_size,
            # With order_sn every other filter except page/page_size is ignored (niltor's model).
            "order_sn": order_sn,
        })
        return self.unwrap(body, "refund_increment_get_response")

    async def refund_information(self, after_sales_id: str, order_sn: str) -> dict[str, Any]:
        """pdd.refund.information.get; ref: https://open.pinduoduo.com/application/document/api?id=pdd.refund.information.get"""
        body = await self.call("pdd.refund.information.get", {"after_sales_id": after_sales_id, "order_sn": order_sn})
        # The SDK models show the fields but not the envelope name [I]: accept the usual
        # ``refund_information_get_response`` wrapper or, failing that, the only *_response key.
        if isinstance(body.get("refund_information_get_response"), dict):
            return body["refund_information_get_response"]
        wrappers = [v for k, v in body.items() if k.endswith("_response") and isinstance(v, dict)]
        if len(wrappers) == 1:
            return wrappers[0]
        raise PayloadError(f"unexpected pdd.refund.information.get answer: keys {sorted(body)[:5]}", platform=PLATFORM)

    async def finance_balance_daily_bill_url(self, bill_date: str) -> str | None:
        """pdd.finance.balance.daily.bill.url.get: the download URL of one day's funds bill (``yyyy-MM-dd``), None
        when the answer has none; ref: https://open.pinduoduo.com/application/document/api?id=pdd.finance.balance.daily.bill.url.get"""
        body = await self.call("pdd.finance.balance.daily.bill.url.get", {"bill_date": bill_date})
        url = self.unwrap(body, "finance_balance_daily_bill_url_get_response").get("download_url")
        return str(url) if url else None

    async def goods_quantity_update(self, goods_id: str, sku_id: str, quantity: int, *,
                                    incremental: bool = False) -> dict[str, Any]:
        """pdd.goods.quantity.update, ``update_type`` 1 (full: set) or 2 (增量: add ``quantity``, which may be
        negative; PDD has no idempotency key, so a lost answer is never resent blind);
        ref: https://open.pinduoduo.com/application/document/api?id=pdd.goods.quantity.update"""
        body = await self.call("pdd.goods.quantity.update", {
            "goods_id": goods_id,
            "sku_id": sku_id,
            "quantity": quantity,
            "update_type": 2 if incremental else 1,
        }, attempts=1 if incremental else IN_CALL_ATTEMPTS)  # an increment is never resent blind
        return self.unwrap(body, "goods_quantity_update_response")

    # --- shipments (operations.md 1.1) -----------------------------------------------------------

    async def logistics_online_send(self, order_sn: str, logistics_id: int | str, tracking_number: str) -> dict[str, Any]:
        """pdd.logistics.online.send, a first shipment (``redelivery_type`` left at 1: only while 待发货); ref: https://open.pinduoduo.com/application/document/api?id=pdd.logistics.online.send"""
        body = await self.call("pdd.logistics.online.send", {
            "order_sn": order_sn, "logistics_id": logistics_id, "tracking_number": tracking_number}, attempts=1)
        return self.unwrap(body, "logistics_online_send_response")

    async def order_upload_extra_logistics(self, order_sn: str, tracks: list[tuple[int | str, str]],
                                           track_type: int = 1) -> dict[str, Any]:
        """pdd.order.upload.extra.logistics: further parcels of an order already shipped, shown to the buyer only
        (``extra_track_type`` 1 分包发货, 2 补发商品); ref: https://open.pinduoduo.com/application/document/api?id=pdd.order.upload.extra.logistics"""
        body = await self.call("pdd.order.upload.extra.logistics", {
            "order_sn": order_sn, "extra_track_type": track_type,
            "extra_track_list": [{"shipping_id": shipping_id, "tracking_number": number} for shipping_id, number in tracks]},
            attempts=1)
        return self.unwrap(body, "upload_extra_logistics_response")

    async def logistics_companies(self) -> dict[str, Any]:
        """pdd.logistics.companies.get: every courier with its id (what a shipment names); ref: https://open.pinduoduo.com/application/document/api?id=pdd.logistics.companies.get"""
        body = await self.call("pdd.logistics.companies.get", {})
        return self.unwrap(body, "logistics_companies_get_response")

    async def refund_exchange_shipping(self, after_sales_id: str, order_sn: str, shipping_id: int | str,
                                       shipping_name: str, tracking_number: str) -> dict[str, Any]:
        """pdd.refund.exchange.shipping: the replacement parcel of an exchange; ref: https://open.pinduoduo.com/application/document/api?id=pdd.refund.exchange.shipping"""
        body = await self.call("pdd.refund.exchange.shipping", {"request": {
            "after_sales_id": after_sales_id, "order_sn": order_sn, "shipping_id": shipping_id,
            "shipping_name": shipping_name, "tracking_number": tracking_number}}, attempts=1)
        # lywzx names the envelope ``response`` with ``result{succ, message}`` [I]; accept the usual
        # ``*_response`` wrapper as well.
        for key, value in body.items():
            if (key == "response" or key.endswith("_response")) and isinstance(value, dict):
                return value.get("result") if isinstance(value.get("result"), dict) else value
        raise PayloadError(f"unexpected pdd.refund.exchange.shipping answer: keys {sorted(body)[:5]}", platform=PLATFORM)
