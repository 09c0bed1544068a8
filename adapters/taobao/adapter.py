"""The Taobao/Tmall adapter: pulls trades and refunds by modified time and pushes full stock.

TOP pushes through TMC (a binary WebSocket or consume/confirm polling, china.md 2.7), not HTTP
webhooks, so this adapter declares no ``webhooks`` capability; polling is the source of truth.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

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
)
from adapters.errors import AdapterError, AuthExpiredError, PermanentError, ThrottledError
from adapters.pinduoduo import paging  # the same backward paging rule; see the report on moving it
from adapters.taobao import mapping
from adapters.taobao.client import PAGE_SIZE, PLATFORM, TopClient
from adapters.units import to_beijing_str


class TaobaoCredentials(BaseModel):
    """The app's key and secret and the seller's session (access token)."""

    model_config = ConfigDict(extra="forbid")

    app_key: str
    app_secret: SecretStr
    session: SecretStr


def _beijing_bounds(window: TimeWindow, max_window: timedelta) -> tuple[str, str]:
    if window.end - window.start > max_window:
        raise PermanentError(f"window {window.start}..{window.end} is wider than {max_window}", platform=PLATFORM)
    end: datetime = window.end
    if end.microsecond:
        # TOP takes whole seconds; round the end up so its last fraction is not lost.
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return to_beijing_str(window.start), to_beijing_str(end)


def _total(result: dict[str, Any]) -> int | None:
    value = result.get("total_results")
    return int(value) if value not in (None, "") else None


class TaobaoAdapter(AdapterBase):
    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH}
    )
    max_window: ClassVar[timedelta] = timedelta(days=1)  # the documented limit; 30 min recommended
    Credentials: ClassVar[type[BaseModel]] = TaobaoCredentials

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        creds = store.credentials
        if not isinstance(creds, TaobaoCredentials):
            creds = TaobaoCredentials.model_validate(creds.model_dump())
        self.client = TopClient(
            http,
            app_key=creds.app_key,
            app_secret=creds.app_secret.get_secret_value(),
            session=creds.session.get_secret_value(),
            # md5 is the form with a published vector; hmac and hmac-sha256 are per store.
            sign_method=str(store.settings.get("sign_method", "md5")),
            base_url=store.base_url,
        )

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        result = await self.client.trade_fullinfo_get(external_id)
        trade = result.get("trade")
        return mapping.map_trade(trade) if isinstance(trade, dict) and trade else None

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        start, end = _beijing_bounds(window, self.max_window)
        page, probe = paging.first_page(cursor, PLATFORM)
        result = await self.client.trades_sold_increment_get(start, end, page, PAGE_SIZE)
        rows = mapping.unwrap_list(result.get("trades"), "trade")
        orders = [mapping.map_trade(row) for row in rows]
        return Page(orders, paging.next_cursor(page, probe, _total(result), PAGE_SIZE, len(rows), PLATFORM))

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        result = await self.client.refund_get(external_id)
        refund = result.get("refund")
        return mapping.map_refund(refund) if isinstance(refund, dict) and refund else None

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        start, end = _beijing_bounds(window, self.max_window)
        page, probe = paging.first_page(cursor, PLATFORM)
        result = await self.client.refunds_receive_get(start, end, page, PAGE_SIZE)
        rows = mapping.unwrap_list(result.get("refunds"), "refund")
        refunds = [mapping.map_refund(row) for row in rows]
        return Page(refunds, paging.next_cursor(page, probe, _total(result), PAGE_SIZE, len(rows), PLATFORM))

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One taobao.item.quantity.update per listing, a result each.

        taobao.skus.quantity.update could set 20 SKUs of one item per call, but one bad SKU would
        fail its whole batch and the per-listing result would be lost; the co-op's listings are few.
        """
        results: list[PushResult] = []
        stop: AdapterError | None = None
        for level in levels:
            if stop is not None:
                # An expired session or an app ban applies to every remaining call: report it per
                # listing rather than spend calls that fail the same way (and lengthen a ban).
                results.append(_failed(level, stop))
                continue
            num_iid = level.listing_ref.get("num_iid")
            if not num_iid:
                results.append(PushResult(level.external_sku_key, ok=False, error_kind=PermanentError.kind,
                                          error="listing_ref needs num_iid"))
                continue
            sku_id = level.listing_ref.get("sku_id") or None
            quantity = max(0, int(level.quantity))  # a full update is an absolute, non-negative figure
            try:
                answer = await self.client.item_quantity_update(str(num_iid), str(sku_id) if sku_id else None, quantity)
            except (AuthExpiredError, ThrottledError) as exc:
                stop = exc
                results.append(_failed(level, exc))
                continue
            except AdapterError as exc:
                results.append(_failed(level, exc))
                continue
            if isinstance(answer.get("item"), dict):
                results.append(PushResult(level.external_sku_key, ok=True))
            else:
                results.append(PushResult(level.external_sku_key, ok=False, error_kind=PermanentError.kind,
                                          error="taobao.item.quantity.update answered without an item"))
        return results


def _failed(level: StockLevel, exc: AdapterError) -> PushResult:
    return PushResult(level.external_sku_key, ok=False, error=str(exc), error_kind=exc.kind,
                      retry_after_s=getattr(exc, "retry_after_s", None))
