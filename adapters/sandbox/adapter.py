"""SandboxAdapter: the built-in adapter for the sandbox market, in process or over HTTP."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import ClassVar, Mapping

import httpx
from pydantic import BaseModel

from adapters.base import AdapterBase, Capability, EmptyCredentials, OrderSnapshot, Page, PushResult, RefundSnapshot
from adapters.base import ShipmentResult, ShipmentUpload, ShippedParcel, ShippingState
from adapters.base import StockLevel, StoreContext, TimeWindow, WebhookDelivery, WebhookIdentity
from adapters.errors import AdapterError, PermanentError
from adapters.sandbox import webhooks
from adapters.sandbox.client import PAGE_SIZE, INPROC_SCHEME, SandboxClient, client_for
from adapters.sandbox.mapping import order_from_sandbox, refund_from_sandbox
from adapters.shipping import judge
from adapters.stock import failed

PLATFORM = "sandbox"
STOCK_BATCH = 100  # listings per set-stock call


class SandboxAdapter(AdapterBase):
    """``settings.base_url`` = ``inproc://<market name>`` (no HTTP) or the URL of ``sandbox.server``;
    without one, the market named by the store's ``external_shop_id`` in this process."""

    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH, Capability.STOCK_READ,
        Capability.WEBHOOKS, Capability.STOCK_COMPARE_AND_SET, Capability.SHIPMENTS,
    })
    max_window: ClassVar[timedelta] = timedelta(days=7)  # the market has no limit; keeps resync jobs granular
    Credentials: ClassVar[type[BaseModel]] = EmptyCredentials

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        base_url = store.base_url or (f"{INPROC_SCHEME}{store.external_shop_id}" if store.external_shop_id else None)
        # A smaller page (settings.page_size) lets tests and benchmarks exercise many pages.
        page_size = int(store.settings.get("page_size", PAGE_SIZE))
        self._client = client_for(base_url, http, page_size) if base_url else None

    @property
    def client(self) -> SandboxClient:
        if self._client is None:
            raise PermanentError("sandbox store needs settings.base_url or external_shop_id", platform=PLATFORM)
        return self._client

    # --- webhooks -------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
        webhooks.verify(headers, body, secrets)

    def webhook_identity(self, headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
        return webhooks.identity(headers)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        return webhooks.parse(headers, body)

    # --- pull -----------------------------------------------------------------------------------

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        raw = await self.client.get_order(external_id)
        return order_from_sandbox(raw) if raw is not None else None

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        rows, next_cursor = await self.client.list_orders(window.start, window.end, cursor)
        return Page(items=[order_from_sandbox(r) for r in rows], next_cursor=next_cursor)

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        raw = await self.client.get_refund(external_id)
        return refund_from_sandbox(raw) if raw is not None else None

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        rows, next_cursor = await self.client.list_refunds(window.start, window.end, cursor)
        return Page(items=[refund_from_sandbox(r) for r in rows], next_cursor=next_cursor)

    # --- stock ----------------------------------------------------------------------------------

    @staticmethod
    def _key(level: StockLevel) -> str:
        return level.listing_ref.get("sku_key") or level.external_sku_key

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        results: list[PushResult] = []
        for start in range(0, len(levels), STOCK_BATCH):
            batch = levels[start:start + STOCK_BATCH]
            try:
                errors = await self.client.set_stock([(self._key(level), level.quantity, level.expected_quantity)
                                                      for level in batch])
            except AdapterError as exc:
                results.extend(failed(level, exc) for level in batch)
                continue
            results.extend(_result(level, error) for level, error in zip(batch, errors))
        return results

    async def fetch_stock(self, keys: list[StockLevel]) -> dict[str, int]:
        found = await self.client.get_stock([self._key(level) for level in keys])
        return {level.external_sku_key: found[self._key(level)] for level in keys if self._key(level) in found}

    # --- shipments ------------------------------------------------------------------------------

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        raw = await self.client.get_order(order_external_id)
        if raw is None:
            raise PermanentError(f"sandbox shows no order {order_external_id}", platform=PLATFORM)
        parcels = tuple(ShippedParcel(s["tracking_number"], s.get("carrier"), tuple(s.get("lines") or ()))
                        for s in raw.get("shipments") or [])
        status = str(raw.get("status"))
        return ShippingState(parcels=parcels, shipped=status in ("shipped", "delivered"),
                             closed="cancelled" if status == "cancelled" else None, status=status)

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        verdict = judge(PLATFORM, upload, await self.fetch_shipping(upload.order_external_id))
        if verdict is not None:
            return verdict
        try:
            await self.client.upload_shipment(upload.order_external_id, upload.tracking_number, upload.company,
                                              {line.external_line_id: line.quantity for line in upload.lines})
        except PermanentError as exc:
            return ShipmentResult("failed", error=f"sandbox refused the shipment: {exc.message}")
        return ShipmentResult("uploaded", platform_ref=upload.tracking_number)


_CONFLICT = re.compile(r"^conflict: stock is (\d+)")


def _result(level: StockLevel, error: str | None) -> PushResult:
    if error is None:
        return PushResult(external_sku_key=level.external_sku_key, ok=True)
    conflict = _CONFLICT.match(error)
    if conflict:
        return PushResult(external_sku_key=level.external_sku_key, ok=False, error=error, error_kind="conflict",
                          current_quantity=int(conflict.group(1)))
    return PushResult(external_sku_key=level.external_sku_key, ok=False, error=error, error_kind="permanent")
