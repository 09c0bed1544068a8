"""DouyinAdapter: Douyin Shop orders, after-sales and stock through the Open API, plus push messages."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, ClassVar, Mapping

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from adapters.base import (
    AdapterBase,
    Capability,
    OrderSnapshot,
    Page,
    PushResult,
    RefundSnapshot,
    StockLevel,
    StoreContext,
    TimeWindow,
    WebhookDelivery,
    WebhookIdentity,
)
from adapters.douyin import webhooks
from adapters.douyin.client import PAGE_SIZE, DouyinClient
from adapters.douyin.mapping import order_from_douyin, refund_from_douyin
from adapters.errors import AdapterError, AuthExpiredError, PayloadError, PermanentError, TransientError

PLATFORM = "douyin"


class DouyinCredentials(BaseModel):
    """An app's key and secret and the shop's access token (self-use or authorised app)."""

    model_config = ConfigDict(extra="forbid")

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


def _window_seconds(window: TimeWindow) -> tuple[int, int]:
    """Whole seconds covering [start, end). Douyin does not say whether its end bound is inclusive,
    so the end is rounded up: an order on the edge second may come twice (snapshots are idempotent),
    never not at all."""
    return math.floor(window.start.timestamp()), math.ceil(window.end.timestamp())


def _as_int_id(value: str | None) -> int | None:
    # sku.syncStock takes int64 ids (official SDK); listing refs hold them as strings.
    return int(value) if value and value.isdigit() else None


class DouyinAdapter(AdapterBase):
    """Douyin Shop (抖店). Pushes are notices; state comes from order.orderDetail and afterSale.List."""

    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH, Capability.WEBHOOKS,
    })
    # order.searchList states no window limit (china.md 3.3, [I]); offset paging over a set that keeps
    # changing during a live sale is only trustworthy over few pages, so windows are kept short: one hour
    # of a busy live stream is tens of pages of 100, and the core splits longer ranges.
    max_window: ClassVar[timedelta] = timedelta(hours=1)
    Credentials: ClassVar[type[BaseModel]] = DouyinCredentials

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        creds: DouyinCredentials = store.credentials  # type: ignore[assignment]
        self.client = DouyinClient(
            http,
            app_key=creds.app_key,
            app_secret=creds.app_secret.get_secret_value(),
            access_token=creds.access_token.get_secret_value(),
            base_url=store.base_url,
        )

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
        page = _page_from(cursor)
        start, end = _window_seconds(window)
        data = await self.client.order_search_list(update_time_start=start, update_time_end=end,
                                                   page=page, size=PAGE_SIZE)
        rows = data.get("shop_order_list") or []
        items = [order_from_douyin(row) for row in rows]
        # No has_more in this API: the total says whether another page exists (china.md 3.3).
        total = data.get("total")
        more = (page + 1) * PAGE_SIZE < int(total) if total is not None else len(rows) == PAGE_SIZE
        return Page(items=items, next_cursor=f"page:{page + 1}" if more and rows else None)

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        data = await self.client.after_sale_list(aftersale_id=external_id, page=0, size=1)
        for item in data.get("items") or []:
            refund = refund_from_douyin(item)
            if refund.external_id == external_id:
                return refund
        return None

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        page = _page_from(cursor)
        start, end = _window_seconds(window)
        data = await self.client.after_sale_list(update_start_time=start, update_end_time=end,
                                                 page=page, size=PAGE_SIZE)
        rows = data.get("items") or []
        items = [refund_from_douyin(row) for row in rows]
        more = bool(data.get("has_more")) and bool(rows)
        return Page(items=items, next_cursor=f"page:{page + 1}" if more else None)

    # --- stock ----------------------------------------------------------------------------------

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One sku.syncStock per listing (Douyin has no batch call), full quantities, in order.
        After an auth failure, or a throttle or outage that outlasted the in-call retries, the rest of
        the batch is not sent: each remaining listing gets the same error so the outbox retries it later."""
        results: list[PushResult] = []
        stop: AdapterError | None = None
        for level in levels:
            if stop is not None:
                results.append(self._failed(level, stop))
                continue
            product_id = _as_int_id(level.listing_ref.get("product_id"))
            sku_id = _as_int_id(level.listing_ref.get("sku_id") or level.external_sku_key)
            if product_id is None or sku_id is None:
                results.append(self._failed(level, PayloadError(
                    "listing_ref needs numeric product_id and sku_id for sku.syncStock", platform=PLATFORM)))
                continue
            if level.quantity < 0:
                results.append(self._failed(level, PayloadError(
                    f"negative stock {level.quantity}", platform=PLATFORM)))
                continue
            try:
                await self.client.sku_sync_stock(product_id=product_id, sku_id=sku_id, stock_num=level.quantity)
            except (AuthExpiredError, TransientError) as exc:
                stop = exc
                results.append(self._failed(level, exc))
            except AdapterError as exc:
                results.append(self._failed(level, exc))
            else:
                results.append(PushResult(external_sku_key=level.external_sku_key, ok=True))
        return results

    @staticmethod
    def _failed(level: StockLevel, error: AdapterError) -> PushResult:
        return PushResult(external_sku_key=level.external_sku_key, ok=False, error=str(error),
                          error_kind=error.kind, retry_after_s=getattr(error, "retry_after_s", None))
