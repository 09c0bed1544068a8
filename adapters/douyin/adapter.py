"""DouyinAdapter: Douyin Shop orders, after-sales and stock through the Open API, plus push messages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, ClassVar, Literal, Mapping
from urllib.parse import urlencode

from pydantic import BaseModel, SecretStr

from adapters.base import Capability, OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel
from adapters.base import TimeWindow, WebhookDelivery, WebhookIdentity
from adapters.douyin import webhooks
from adapters.douyin.client import PAGE_SIZE, DouyinClient
from adapters.base import PlatformCarrier, ShipmentResult, ShipmentUpload, ShippingState
from adapters.douyin import shipping
from adapters.shipping import judge
from adapters.douyin.mapping import bill_line_from_settlement, order_from_douyin, refund_from_douyin
from adapters.base import BillLine
from adapters.bills import beijing_bounds
from adapters.units import BEIJING
from adapters.errors import AuthExpiredError, PayloadError, PermanentError, TransientError
from adapters.gateway import GatewayAdapter, unix_bounds
from adapters.stock import push_each
from adapters.tokens import Authorization, Authorizing, RefreshRefused, TokenCredentials, TokenGrant, in_seconds

PLATFORM = "douyin"


class DouyinCredentials(TokenCredentials):
    """An app's key and secret and the shop's access token. ``app_type``: a self-use app (自用型) creates
    its token without a consent page; a tool app (工具型) is authorised through its service-market page."""

    app_key: str
    app_secret: SecretStr
    access_token: SecretStr | None = None
    app_type: Literal["self_use", "tool"] = "self_use"
    service_id: str | None = None  # a tool app's service-market id, for its consent page


AUTHORIZE_PAGE = "https://fuwu.jinritemai.com/authorize"  # a tool app's consent page (UNCONFIRMED form)
REFRESH_LIFETIME = timedelta(days=14)  # operations.md 2.3: access 7 days, refresh 14 days


def douyin_grant(data: Mapping[str, Any], now: datetime, previous_refresh: str | None) -> TokenGrant:
    """``/token/create`` and ``/token/refresh`` answer ``data{access_token, expires_in, refresh_token, ...}``.
    A refresh more than an hour before expiry answers the same refresh token: its end does not move."""
    token = data.get("access_token")
    if not token:
        raise PayloadError("token answer without access_token", platform=PLATFORM)
    refresh = str(data.get("refresh_token") or "") or None
    credentials = {"access_token": str(token)}
    if refresh:
        credentials["refresh_token"] = refresh
    return TokenGrant(
        credentials=credentials,
        expires_at=in_seconds(data.get("expires_in"), now),
        refresh_expires_at=now + REFRESH_LIFETIME if refresh and refresh != previous_refresh else None,
        shop_id=str(data["shop_id"]) if data.get("shop_id") not in (None, "") else None,
        shop_name=data.get("shop_name"),
        scope=tuple(str(data.get("scope") or "").split(",")) if data.get("scope") else (),
    )


def _page_from(cursor: str | None) -> int:
    if cursor is None:
        return 0
    prefix, _, number = cursor.partition(":")
    if prefix != "page" or not number.isdigit():
        raise PermanentError(f"not a Douyin cursor: {cursor!r}", platform=PLATFORM)
    return int(number)


def _next_cursor(page: int, more: bool) -> str | None:
    return f"page:{page + 1}" if more else None


def _settle_cursor(cursor: str | None) -> dict[str, str]:
    if cursor is None:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise PermanentError(f"not a Douyin settlement cursor: {cursor!r}", platform=PLATFORM)
    return {str(k): str(v) for k, v in state.items()}


def _as_int_id(value: str | None) -> int | None:
    # sku.syncStock takes int64 ids (official SDK); listing refs hold them as strings.
    return int(value) if value and value.isdigit() else None


class DouyinAdapter(GatewayAdapter, Authorizing):
    """Douyin Shop (抖店). Pushes are notices; state comes from order.orderDetail and afterSale.List."""

    platform: ClassVar[str] = PLATFORM
    # Within the last hour a refresh gives new tokens; earlier it answers the same ones (operations.md 2.3).
    authorization = Authorization(mode="oauth", refresh_margin=timedelta(minutes=50))
    capabilities: ClassVar[frozenset[Capability]] = GatewayAdapter.capabilities | {
        Capability.WEBHOOKS, Capability.SHIPMENTS, Capability.CARRIER_LIST, Capability.FEES, Capability.BILLS,
        Capability.STOCK_DELTA, Capability.STOCK_DELTA_IDEMPOTENT}
    bill_window: ClassVar[timedelta] = timedelta(days=7)  # getSettleBillDetailV3: "建议不超过7天"
    local_timezone = BEIJING
    # order.searchList states no window limit (china.md 3.3, [I]); offset paging over a set that keeps
    # changing during a live sale is only trustworthy over few pages, so windows are kept short: one hour
    # of a busy live stream is tens of pages of 100, and the core splits longer ranges.
    max_window: ClassVar[timedelta] = timedelta(hours=1)
    Credentials: ClassVar[type[BaseModel]] = DouyinCredentials
    Client = DouyinClient
    client: DouyinClient

    # --- push -----------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
        candidates = [s for s in secrets if s] or [self.client.app_secret]
        webhooks.verify(headers, body, self.client.app_key, candidates)

    def webhook_identity(self, headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
        return webhooks.identity(body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        return webhooks.parse(body)

    def webhook_ack(self, status: str) -> dict[str, Any]:
        # Douyin only understands its own answer; a duplicate is a success to it as well.
        return dict(webhooks.ACK)

    # --- pull -----------------------------------------------------------------------------------

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        data = await self.client.order_detail(external_id)
        detail = data.get("shop_order_detail")
        return order_from_douyin(detail) if detail else None

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        page, data, rows = await self._list(window, cursor, self.client.order_search_list, "shop_order_list")
        # No has_more in this API: the total says whether another page exists (china.md 3.3).
        total = data.get("total")
        more = (page + 1) * PAGE_SIZE < int(total) if total is not None else len(rows) == PAGE_SIZE
        return Page([order_from_douyin(row) for row in rows], _next_cursor(page, more and bool(rows)))

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        data = await self.client.after_sale_list(aftersale_id=external_id, page=0, size=1)
        for item in data.get("items") or []:
            refund = refund_from_douyin(item)
            if refund.external_id == external_id:
                return refund
        return None

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        page, data, rows = await self._list(window, cursor, self.client.after_sale_list, "items")
        return Page([refund_from_douyin(row) for row in rows], _next_cursor(page, bool(data.get("has_more") and rows)))

    async def _list(self, window: TimeWindow, cursor: str | None, list_call: Callable[..., Awaitable[dict[str, Any]]],
                    rows_key: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        """One page of a list by update time: the page number, the answer and its rows."""
        page = _page_from(cursor)
        # Douyin does not say whether its end bound is inclusive; unix_bounds rounds the end up.
        start, end = unix_bounds(window)
        data = await list_call(start, end, page=page, size=PAGE_SIZE)
        return page, data, data.get(rows_key) or []

    # --- settlement (operations.md 5.3) ------------------------------------------------------------

    async def fetch_bills(self, window: TimeWindow, cursor: str | None) -> Page[BillLine]:
        """Settled sub-orders whose settlement time lies in the window (T+1: a day's rows appear the next
        afternoon). The platform pages by ``next_start_time`` + ``next_start_index`` until ``is_end``."""
        start, end = beijing_bounds(window)
        state = _settle_cursor(cursor)
        data = await self.client.settle_bill_detail(state.get("start_time") or start, end,
                                                    start_index=state.get("start_index"))
        rows = [row for row in data.get("data") or [] if isinstance(row, dict)]
        lines = [bill_line_from_settlement(row) for row in rows]
        ended = str(data.get("is_end", "1")) == "1" or not rows
        following = {"start_time": str(data.get("next_start_time") or start),
                     "start_index": str(data.get("next_start_index") or "")}
        if ended or following == state:  # a cursor that does not move would page for ever
            return Page(lines, None)
        return Page(lines, json.dumps(following, separators=(",", ":")))

    # --- stock ----------------------------------------------------------------------------------

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One sku.syncStock per listing (Douyin has no batch call), full quantities, in order.
        After an auth failure, or a throttle or outage that outlasted the in-call retries, the rest of
        the batch is not sent: each remaining listing gets the same error so the outbox retries it later."""
        return await push_each(levels, self._push_one, halt_on=(AuthExpiredError, TransientError))

    async def _push_one(self, level: StockLevel) -> None:
        product_id = _as_int_id(level.listing_ref.get("product_id"))
        sku_id = _as_int_id(level.listing_ref.get("sku_id") or level.external_sku_key)
        if product_id is None or sku_id is None:
            raise PayloadError("listing_ref needs numeric product_id and sku_id for sku.syncStock", platform=PLATFORM)
        if level.delta is not None:
            # incremental with idempotent_id: a retry under the same id answers "重复，操作已执行" (operations.md 4.3)
            key = level.idempotency_key or ""
            try:
                await self.client.sku_sync_stock(product_id=product_id, sku_id=sku_id, stock_num=int(level.delta),
                                                 idempotent_id=key)
            except PermanentError as exc:
                if not _already_applied(exc):
                    raise
            return
        if level.quantity < 0:
            raise PayloadError(f"negative stock {level.quantity}", platform=PLATFORM)
        await self.client.sku_sync_stock(product_id=product_id, sku_id=sku_id, stock_num=level.quantity)

    # --- shipments (operations.md 1.3) ----------------------------------------------------------

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        detail = (await self.client.order_detail(order_external_id)).get("shop_order_detail")
        if not detail:
            raise PermanentError(f"Douyin shows no order {order_external_id}", platform=PLATFORM)
        return shipping.shipping_state(detail)

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        """A whole order in one parcel: /order/logisticsAdd, which has no idempotency key, so the order is read
        first. A part (split parcels, part of a sku order): /order/logisticsAddMultiPack with ``request_id`` =
        the parcel's reference, whose repeat answers the first success without shipping twice. "Already
        shipped" (60110, 70023) is judged by reading the order back."""
        order_id = upload.order_external_id
        try:
            if upload.whole_order:
                verdict = judge(PLATFORM, upload, await self.fetch_shipping(order_id))
                if verdict is not None:
                    return verdict
                await self.client.order_logistics_add(order_id=order_id, company_code=upload.company,
                                                      logistics_code=upload.tracking_number)
                return ShipmentResult("uploaded", platform_ref=upload.tracking_number)
            shipped = [{"shipped_order_id": line.external_line_id, "shipped_num": line.quantity}
                       for line in upload.lines]
            data = await self.client.order_logistics_add_multi_pack(order_id=order_id, request_id=upload.reference, packs=[{
                "shipped_order_info": shipped, "logistics_code": upload.tracking_number,
                "company_code": upload.company}])
        except PermanentError as exc:
            code = shipping.business_code(exc.code)
            if code == shipping.UNDER_REVIEW:
                raise TransientError(f"{exc.message}: the order is under risk review", platform=PLATFORM,
                                     code=exc.code, retry_after_s=shipping.UNDER_REVIEW_RETRY_S) from exc
            verdict = judge(PLATFORM, upload, await self.fetch_shipping(order_id))
            if verdict is not None:
                return verdict
            what = "says the order is shipped already but shows no parcel of ours" if code in shipping.ALREADY_SHIPPED \
                else "refused the shipment"
            return ShipmentResult("failed", error=f"Douyin {what}: {exc.message}"[:1500])
        packs = data.get("pack_list") or []
        pack_id = next((str(p["pack_id"]) for p in packs if p.get("pack_id")), None)
        return ShipmentResult("uploaded", platform_ref=pack_id or upload.tracking_number)

    async def fetch_carriers(self) -> list[PlatformCarrier]:
        rows = await self.client.order_logistics_company_list()
        return [PlatformCarrier(company=str(row["code"]), name=str(row.get("name") or ""), code=str(row["code"]))
                for row in rows if row.get("code")]

    # --- authorisation (operations.md 2.3) -------------------------------------------------------

    def authorize_url(self, redirect_uri: str, state: str) -> str | None:
        if self.creds.app_type == "self_use":
            return None  # no consent page: ``create_token``
        if not self.creds.service_id:
            raise PermanentError("a Douyin tool app needs service_id (its service-market id) in its credentials",
                                 platform=PLATFORM)
        return f"{AUTHORIZE_PAGE}?{urlencode({'service_id': self.creds.service_id, 'state': state})}"

    async def exchange_code(self, code: str, redirect_uri: str, params: Mapping[str, str]) -> TokenGrant:
        data = await self.token_call("token.create", {"grant_type": "authorization_code", "code": code})
        return douyin_grant(data, datetime.now(timezone.utc), None)

    async def create_token(self) -> TokenGrant:
        shop_id = _as_int_id(self.store.external_shop_id)
        if shop_id is None:
            raise PermanentError("a self-use Douyin app needs the store's external_shop_id (the shop id)",
                                 platform=PLATFORM)
        data = await self.token_call("token.create", {"grant_type": "authorization_self", "code": "",
                                                      "shop_id": shop_id})
        return douyin_grant(data, datetime.now(timezone.utc), None)

    async def refresh_tokens(self) -> TokenGrant:
        if self.creds.refresh_token is None:
            raise RefreshRefused("no refresh token: authorise the shop again", platform=PLATFORM)
        previous = self.creds.refresh_token.get_secret_value()
        data = await self.token_call("token.refresh", {"grant_type": "refresh_token", "refresh_token": previous})
        return douyin_grant(data, datetime.now(timezone.utc), previous)


def _already_applied(exc: PermanentError) -> bool:
    """Douyin's answer to an idempotent_id it has applied already (operations.md 4.3): a success."""
    text = f"{exc.code or ''} {exc.message or ''}"
    return "40010" in text or "idempotent-id-existed" in text or "操作已执行" in text
