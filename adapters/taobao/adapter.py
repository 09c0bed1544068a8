"""The Taobao/Tmall adapter: pulls trades and refunds by modified time and pushes full stock.

TOP pushes through TMC (a binary WebSocket or consume/confirm polling, china.md 2.7), not HTTP
webhooks, so this adapter declares no ``webhooks`` capability; polling is the source of truth.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, ClassVar, TypeVar

from pydantic import BaseModel, SecretStr

from adapters.base import CredentialsBase, OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel, TimeWindow
from adapters.gateway import BackwardPaging, GatewayAdapter
from adapters.stock import push_each, refused
from adapters.taobao import mapping
from adapters.taobao.client import PAGE_SIZE, PLATFORM, TopClient
from adapters.units import to_beijing_str

PAGING = BackwardPaging(PLATFORM, PAGE_SIZE, total_key="total_results")
T = TypeVar("T")


class TaobaoCredentials(CredentialsBase):
    """The app's key and secret and the seller's session (access token)."""

    app_key: str
    app_secret: SecretStr
    session: SecretStr


def _mapped(result: dict[str, Any], key: str, map_one: Callable[[dict[str, Any]], T]) -> T | None:
    found = result.get(key)
    return map_one(found) if isinstance(found, dict) and found else None


def _beijing_bounds(window: TimeWindow) -> tuple[str, str]:
    end: datetime = window.end
    if end.microsecond:
        # TOP takes whole seconds; round the end up so its last fraction is not lost.
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return to_beijing_str(window.start), to_beijing_str(end)


class TaobaoAdapter(GatewayAdapter):
    platform: ClassVar[str] = PLATFORM
    max_window: ClassVar[timedelta] = timedelta(days=1)  # the documented limit; 30 min recommended
    Credentials: ClassVar[type[BaseModel]] = TaobaoCredentials
    Client = TopClient
    key_fields = ("app_key", "app_secret", "session")
    client: TopClient

    def client_options(self) -> dict[str, Any]:
        # md5 is the form with a published vector; hmac and hmac-sha256 are per store.
        return {"sign_method": str(self.store.settings.get("sign_method", "md5"))}

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        return _mapped(await self.client.trade_fullinfo_get(external_id), "trade", mapping.map_trade)

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        return await self._pull(window, cursor, self.client.trades_sold_increment_get, "trades", mapping.map_trade)

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        return _mapped(await self.client.refund_get(external_id), "refund", mapping.map_refund)

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        return await self._pull(window, cursor, self.client.refunds_receive_get, "refunds", mapping.map_refund)

    async def _pull(self, window: TimeWindow, cursor: str | None, list_call: Callable[..., Awaitable[dict[str, Any]]],
                    key: str, map_row: Callable[[dict[str, Any]], T]) -> Page[T]:
        """One backward page of an increment list whose rows are ``{key: {<key minus s>: [...]}}``."""
        start, end = _beijing_bounds(self.checked(window))
        rows, next_cursor = await PAGING.read(cursor, lambda page, size: list_call(start, end, page, size),
                                              lambda result: mapping.unwrap_list(result.get(key), key[:-1]))
        return Page([map_row(row) for row in rows], next_cursor)

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One taobao.item.quantity.update per listing, a result each.

        taobao.skus.quantity.update could set 20 SKUs of one item per call, but one bad SKU would
        fail its whole batch and the per-listing result would be lost; the co-op's listings are few.
        """
        return await push_each(levels, self._push_one)

    async def _push_one(self, level: StockLevel) -> PushResult | None:
        num_iid = level.listing_ref.get("num_iid")
        if not num_iid:
            return refused(level, "listing_ref needs num_iid")
        sku_id = level.listing_ref.get("sku_id") or None
        quantity = max(0, int(level.quantity))  # a full update is an absolute, non-negative figure
        answer = await self.client.item_quantity_update(str(num_iid), str(sku_id) if sku_id else None, quantity)
        if isinstance(answer.get("item"), dict):
            return None
        return refused(level, "taobao.item.quantity.update answered without an item")
