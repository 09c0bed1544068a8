"""Sandbox market access: directly in process (``inproc://<name>``) or over HTTP to ``server.py``.

Both clients offer the same coroutines, one per remote call, so the adapter does not care which it has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import httpx

from adapters.errors import PayloadError, PermanentError
from adapters.http import error_for_response, send, with_retries
from adapters.sandbox.market import SandboxError, SandboxMarket

PLATFORM = "sandbox"
INPROC_SCHEME = "inproc://"
PAGE_SIZE = 100  # rows per list call


class SandboxClient(Protocol):
    async def list_orders(self, updated_min: datetime, updated_max: datetime,
                          cursor: str | None) -> tuple[list[dict[str, Any]], str | None]: ...

    async def get_order(self, order_id: str) -> dict[str, Any] | None: ...

    async def list_refunds(self, updated_min: datetime, updated_max: datetime,
                           cursor: str | None) -> tuple[list[dict[str, Any]], str | None]: ...

    async def get_refund(self, refund_id: str) -> dict[str, Any] | None: ...

    async def set_stock(self, items: list[tuple[str, int]]) -> list[str | None]: ...

    async def get_stock(self, sku_keys: list[str]) -> dict[str, int]: ...

    async def upload_shipment(self, order_id: str, tracking_number: str, carrier: str,
                              lines: dict[str, int]) -> dict[str, Any]: ...


class InProcessClient:
    """Calls a registered SandboxMarket directly; the market is looked up on each call, so a store may
    be configured before its market is registered."""

    def __init__(self, market_name: str, page_size: int = PAGE_SIZE) -> None:
        self.market_name = market_name
        self.page_size = page_size

    def _market(self) -> SandboxMarket:
        try:
            return SandboxMarket.get(self.market_name)
        except SandboxError as exc:
            raise PermanentError(str(exc), platform=PLATFORM) from exc

    def _page(self, page_of: str, updated_min, updated_max, cursor):
        market = self._market()
        try:
            return getattr(market, page_of)(updated_min, updated_max, cursor, self.page_size)
        except SandboxError as exc:  # an unreadable cursor: retrying it cannot help
            raise PermanentError(str(exc), platform=PLATFORM) from exc

    async def list_orders(self, updated_min, updated_max, cursor):
        """Orders by update time, one page. ref: adapters/sandbox/market.py SandboxMarket.orders_page"""
        return self._page("orders_page", updated_min, updated_max, cursor)

    async def get_order(self, order_id):
        """One order. ref: adapters/sandbox/market.py SandboxMarket.get_order"""
        return self._market().get_order(order_id)

    async def list_refunds(self, updated_min, updated_max, cursor):
        """Refunds by update time, one page. ref: adapters/sandbox/market.py SandboxMarket.refunds_page"""
        return self._page("refunds_page", updated_min, updated_max, cursor)

    async def get_refund(self, refund_id):
        """One refund. ref: adapters/sandbox/market.py SandboxMarket.get_refund"""
        return self._market().get_refund(refund_id)

    async def set_stock(self, items):
        """Absolute stock per listing, one batch. ref: adapters/sandbox/market.py SandboxMarket.set_stock_batch"""
        return self._market().set_stock_batch(items)

    async def get_stock(self, sku_keys):
        """Stock of the named listings. ref: adapters/sandbox/market.py SandboxMarket.stock_levels"""
        levels = self._market().stock_levels()
        return {key: levels[key] for key in sku_keys if key in levels}

    async def upload_shipment(self, order_id, tracking_number, carrier, lines):
        """A parcel of an order left. ref: adapters/sandbox/market.py SandboxMarket.upload_shipment"""
        try:
            return self._market().upload_shipment(order_id, tracking_number, carrier, lines)
        except SandboxError as exc:
            raise PermanentError(str(exc), platform=PLATFORM) from exc


class HttpClient:
    """Talks to ``adapters.sandbox.server`` at ``base_url`` through the shared client."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, page_size: int = PAGE_SIZE) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size

    async def _get(self, path: str, params: Any = None, *, missing_ok: bool = False) -> Any:
        async def once() -> Any:
            request = self.http.build_request("GET", self.base_url + path, params=params)
            response = await send(self.http, request, PLATFORM)
            if missing_ok and response.status_code == 404:
                return None
            error = error_for_response(response, PLATFORM)
            if error is not None:
                raise error
            return self._json(response)
        return await with_retries(once)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise PayloadError(f"sandbox answered non-JSON for {response.request.url.path}",
                               platform=PLATFORM) from exc

    async def _list(self, path: str, updated_min: datetime, updated_max: datetime, cursor: str | None):
        params = {"updated_min": updated_min.isoformat(), "updated_max": updated_max.isoformat(),
                  "limit": str(self.page_size)}
        if cursor:
            params["cursor"] = cursor
        body = await self._get(path, params)
        return list(body.get("items") or []), body.get("next_cursor")

    async def list_orders(self, updated_min, updated_max, cursor):
        """Orders by update time, one page. ref: adapters/sandbox/server.py GET /orders"""
        return await self._list("/orders", updated_min, updated_max, cursor)

    async def get_order(self, order_id):
        """One order, None on 404. ref: adapters/sandbox/server.py GET /orders/{id}"""
        return await self._get(f"/orders/{order_id}", missing_ok=True)

    async def list_refunds(self, updated_min, updated_max, cursor):
        """Refunds by update time, one page. ref: adapters/sandbox/server.py GET /refunds"""
        return await self._list("/refunds", updated_min, updated_max, cursor)

    async def get_refund(self, refund_id):
        """One refund, None on 404. ref: adapters/sandbox/server.py GET /refunds/{id}"""
        return await self._get(f"/refunds/{refund_id}", missing_ok=True)

    async def set_stock(self, items):
        """Absolute stock per listing, one batch. ref: adapters/sandbox/server.py POST /stock"""
        async def once() -> list[str | None]:
            body = [{"sku_key": item[0], "quantity": item[1],
                     **({"expected": item[2]} if len(item) > 2 and item[2] is not None else {})} for item in items]
            request = self.http.build_request("POST", self.base_url + "/stock", json=body)
            response = await send(self.http, request, PLATFORM)
            error = error_for_response(response, PLATFORM)
            if error is not None:
                raise error
            results = self._json(response).get("results") or []
            if len(results) != len(items):
                raise PayloadError("POST /stock answered a different number of results", platform=PLATFORM)
            return [None if r.get("ok") else str(r.get("error") or "refused") for r in results]
        # A full (absolute) update is idempotent, so retrying a batch is safe.
        return await with_retries(once)

    async def get_stock(self, sku_keys):
        """Stock of the named listings. ref: adapters/sandbox/server.py GET /stock"""
        body = await self._get("/stock", [("sku_key", key) for key in sku_keys])
        return {item["sku_key"]: int(item["quantity"]) for item in body.get("items") or []}

    async def upload_shipment(self, order_id, tracking_number, carrier, lines):
        """A parcel of an order left; the same tracking number again changes nothing, so a retry is safe.
        ref: adapters/sandbox/server.py POST /orders/{id}/shipments"""
        async def once() -> dict[str, Any]:
            request = self.http.build_request("POST", f"{self.base_url}/orders/{order_id}/shipments", json={
                "tracking_number": tracking_number, "carrier": carrier, "lines": lines})
            response = await send(self.http, request, PLATFORM)
            error = error_for_response(response, PLATFORM)
            if error is not None:
                raise error
            return self._json(response)
        return await with_retries(once)


def client_for(base_url: str, http: httpx.AsyncClient, page_size: int = PAGE_SIZE) -> SandboxClient:
    if base_url.startswith(INPROC_SCHEME):
        name = base_url[len(INPROC_SCHEME):].strip("/")
        if not name:
            raise PermanentError("inproc:// base_url needs a market name", platform=PLATFORM)
        return InProcessClient(name, page_size)
    if base_url.startswith(("http://", "https://")):
        return HttpClient(http, base_url, page_size)
    raise PermanentError(f"sandbox base_url must be inproc://<name> or http(s)://, not {base_url!r}",
                         platform=PLATFORM)
