"""DouyinAdapter: Douyin Shop orders, after-sales and stock through the Open API, plus push messages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Awaitable, Callable, ClassVar, Mapping

from pydantic import BaseModel, SecretStr

from adapters.base import Capability, CredentialsBase, OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel
from adapters.base import TimeWindow, WebhookDelivery, WebhookIdentity
from adapters.douyin import webhooks
from adapters.douyin.client import PAGE_SIZE, DouyinClient
from adapters.douyin.mapping import order_from_douyin, refund_from_douyin
from adapters.errors import AuthExpiredError, PayloadError, PermanentError, TransientError
from adapters.gateway import GatewayAdapter, unix_bounds
from adapters.stock import push_each

PLATFORM = "douyin"


class DouyinCredentials(CredentialsBase):
    """An app's key and secret and the shop's access token (self-use or authorised app)."""

    app_key: str
    app_secret: SecretStr
    access_token: SecretStr


def _page_from(cursor: str | None) -> int:
    if cursor is None:
        return 0
    prefix, _, number = cursor.partition(":")
    if prefix != "page" or not number.isdigit():
        raise PermanentError(f"not a Douyin cursor: {cursor!r}", platform=PLATFORM)
    return int(number)


def _next_cursor(page: int, more: bool) -> str | None:
    return f"page:{page + 1}" if more else None


def _as_int_id(value: str | None) -> int | None:
    # sku.syncStock takes int64 ids (official SDK); listing refs hold them as strings.
    return int(value) if value and value.isdigit() else None


class DouyinAdapter(GatewayAdapter):
    """Douyin Shop (抖店). Pushes are notices; state comes from order.orderDetail and afterSale.List."""

    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[frozenset[Capability]] = GatewayAdapter.capabilities | {Capability.WEBHOOKS}
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
        if level.quantity < 0:
            raise PayloadError(f"negative stock {level.quantity}", platform=PLATFORM)
        await self.client.sku_sync_stock(product_id=product_id, sku_id=sku_id, stock_num=level.quantity)
