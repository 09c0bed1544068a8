"""The Pinduoduo adapter: pulls orders and after-sales in 30-minute windows and pushes full stock.

PDD pushes events over a WebSocket message service (china.md 1.7), not HTTP webhooks, so this
adapter declares no ``webhooks`` capability; polling is the source of truth.
"""

from __future__ import annotations

import math
from datetime import timedelta
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
    RefundStatus,
    StockLevel,
    StoreContext,
    TimeWindow,
)
from adapters.errors import AdapterError, AuthExpiredError, PermanentError, ThrottledError
from adapters.pinduoduo import mapping, paging
from adapters.pinduoduo.client import PAGE_SIZE, PLATFORM, PddClient

AMOUNT_UNITS = ("yuan", "fen")


class PddCredentials(BaseModel):
    """What the shop's authorisation gives us; the token lasts 24 h (china.md 1.1)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str
    client_secret: SecretStr
    access_token: SecretStr


def _unix_bounds(window: TimeWindow, max_window: timedelta) -> tuple[int, int]:
    if window.end - window.start > max_window:
        raise PermanentError(f"window {window.start}..{window.end} is wider than {max_window}", platform=PLATFORM)
    # Seconds; the end is rounded up so a fractional end second is not lost (overlap is harmless).
    return math.floor(window.start.timestamp()), math.ceil(window.end.timestamp())


class PinduoduoAdapter(AdapterBase):
    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH}
    )
    max_window: ClassVar[timedelta] = timedelta(minutes=30)  # both increment lists refuse more
    Credentials: ClassVar[type[BaseModel]] = PddCredentials

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        creds = store.credentials
        if not isinstance(creds, PddCredentials):
            creds = PddCredentials.model_validate(creds.model_dump())
        unit = str(store.settings.get("refund_amount_unit", "yuan"))
        if unit not in AMOUNT_UNITS:
            raise PermanentError(f"refund_amount_unit must be one of {AMOUNT_UNITS}, not {unit!r}", platform=PLATFORM)
        # pdd.refund.list.increment.get documents refund_amount as yuan strings ("退款金额（元）"),
        # but pdd.refund.information.get types it as an integer with no unit and the refund push
        # carries refund_fee 1990, which reads like fen [I]. Until a live answer settles it, the
        # store says which; we read amounts from the list only, so one setting covers both pulls.
        self.refund_amount_unit: mapping.AmountUnit = unit  # type: ignore[assignment]
        self.client = PddClient(
            http,
            client_id=creds.client_id,
            client_secret=creds.client_secret.get_secret_value(),
            access_token=creds.access_token.get_secret_value(),
            base_url=store.base_url,
        )

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        info = await self.client.order_information(external_id)
        order = info.get("order_info")
        return mapping.map_order(order) if isinstance(order, dict) and order else None

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        start, end = _unix_bounds(window, self.max_window)
        page, probe = paging.first_page(cursor, PLATFORM)
        result = await self.client.order_number_list_increment(start, end, page, PAGE_SIZE)
        # niltor and lywzx (generated from the docs) say order_sn_list; tourze reads order_list.
        rows = result.get("order_sn_list")
        if rows is None:
            rows = result.get("order_list") or []
        orders = [mapping.map_order(row) for row in rows]
        return Page(orders, paging.next_cursor(page, probe, _total(result), PAGE_SIZE, len(rows), PLATFORM))

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        start, end = _unix_bounds(window, self.max_window)
        page, probe = paging.first_page(cursor, PLATFORM)
        result = await self.client.refund_list_increment(start, end, page, PAGE_SIZE)
        rows = result.get("refund_list") or []
        refunds = [await self._map_refund(row) for row in rows]
        return Page(refunds, paging.next_cursor(page, probe, _total(result), PAGE_SIZE, len(rows), PLATFORM))

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        """Via the refund list filtered by order_sn (every after-sale of the order, window ignored).

        The list, not pdd.refund.information.get, so that amounts always come from the surface whose
        unit is documented (yuan) and ``refund_amount_unit`` means one thing.
        """
        if not order_external_id:
            raise PermanentError("PDD needs the order_sn to look up an after-sale", platform=PLATFORM)
        now = math.floor(self.client.clock())
        # start/end stay required with order_sn but are ignored; any valid 30-minute span will do.
        start = now - int(self.max_window.total_seconds())
        page = 1
        while True:
            result = await self.client.refund_list_increment(start, now, page, PAGE_SIZE, order_sn=order_external_id)
            rows = result.get("refund_list") or []
            for row in rows:
                if str(row.get("id")) == str(external_id):
                    return await self._map_refund(row)
            if len(rows) < PAGE_SIZE:
                return None
            page += 1

    async def _map_refund(self, row: dict[str, Any]) -> RefundSnapshot:
        shipped: bool | None = None
        status = mapping.refund_status(row.get("after_sales_status"))
        kind = row.get("after_sales_type")
        if status is RefundStatus.SUCCEEDED and str(kind) == str(mapping.TYPE_REFUND_ONLY):
            # The list does not say whether the order had shipped, and that decides cancel vs
            # no_restock for a refund-only after-sale. The detail API's shipping_status does;
            # we ask only where the answer moves stock (succeeded refund-only).
            detail = await self.client.refund_information(str(row.get("id")), str(row.get("order_sn")))
            if detail.get("shipping_status") not in (None, ""):
                shipped = int(detail["shipping_status"]) == 1
        return mapping.map_refund(row, amount_unit=self.refund_amount_unit, shipped=shipped)

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One pdd.goods.quantity.update per listing (PDD has no batch call), a result each."""
        results: list[PushResult] = []
        stop: AdapterError | None = None
        for level in levels:
            if stop is not None:
                # An expired token or a throttle applies to every remaining call: report it for
                # each listing instead of spending calls that will fail the same way.
                results.append(_failed(level, stop))
                continue
            goods_id = level.listing_ref.get("goods_id")
            sku_id = level.listing_ref.get("sku_id") or level.external_sku_key
            if not goods_id or not sku_id:
                results.append(PushResult(level.external_sku_key, ok=False, error_kind=PermanentError.kind,
                                          error="listing_ref needs goods_id and sku_id"))
                continue
            # A full update must be >= 0 (china.md 1.6); an oversold figure means "sell none".
            quantity = max(0, int(level.quantity))
            try:
                answer = await self.client.goods_quantity_update(str(goods_id), str(sku_id), quantity)
            except (AuthExpiredError, ThrottledError) as exc:
                stop = exc
                results.append(_failed(level, exc))
                continue
            except AdapterError as exc:
                results.append(_failed(level, exc))
                continue
            if answer.get("is_success") in (True, "true", 1):
                results.append(PushResult(level.external_sku_key, ok=True))
            else:
                results.append(PushResult(level.external_sku_key, ok=False, error_kind=PermanentError.kind,
                                          error=f"pdd.goods.quantity.update answered is_success={answer.get('is_success')!r}"))
        return results


def _total(result: dict[str, Any]) -> int | None:
    value = result.get("total_count")
    return int(value) if value not in (None, "") else None


def _failed(level: StockLevel, exc: AdapterError) -> PushResult:
    return PushResult(level.external_sku_key, ok=False, error=str(exc), error_kind=exc.kind,
                      retry_after_s=getattr(exc, "retry_after_s", None))
