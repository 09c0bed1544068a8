"""WooCommerce REST v3 calls (``/wp-json/wc/v3``), one method per endpoint, HTTP Basic auth over HTTPS.
Woo documents no rate limit, but hosts throttle: 429/503 are retried in-call like anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx

from adapters.errors import AdapterError, PayloadError, PermanentError
from adapters.rest import RestClient, Sleep

PLATFORM = "woocommerce"
PER_PAGE = 100  # Woo's maximum page size
BATCH_LIMIT = 100  # objects per products/batch call (Woo's default cap)


def _woo_code(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data.get("code") if isinstance(data, dict) else None


class WooClient(RestClient):
    platform = PLATFORM

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, consumer_key: str, consumer_secret: str,
                 sleep: Sleep = asyncio.sleep) -> None:
        token = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode("ascii")
        super().__init__(http, f"{base_url.rstrip('/')}/wp-json/wc/v3/", {"Authorization": f"Basic {token}"}, sleep)
        # The official Shipment Tracking extension's own namespace (operations.md 1.5).
        self.tracking_root = f"{base_url.rstrip('/')}/wp-json/wc-shipment-tracking/v3/"

    def _missing(self, request: httpx.Request, response: httpx.Response, none_on_404: bool) -> bool:
        if response.status_code != 404:
            return False
        code = _woo_code(response) or ""
        # Only "woocommerce_rest_*_invalid_id" means "no such order/refund". rest_no_route means the
        # base URL is wrong or WooCommerce is off, and must not read as a deleted order.
        if none_on_404 and code.endswith("invalid_id"):
            return True
        if code == "rest_no_route" or not code:
            raise PermanentError(
                f"no WooCommerce REST route at {request.url}: check settings.base_url (the WordPress "
                "site root) and that WooCommerce is active with pretty permalinks", platform=PLATFORM,
                code="rest_no_route")
        return False

    def _refused(self, error: AdapterError, response: httpx.Response) -> AdapterError:
        if response.status_code == 403:
            error.message += " (the REST key needs read/write permission)"
        return error

    async def list_orders(self, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
        """GET orders, one page; returns the orders and X-WP-TotalPages. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-orders"""
        data, response = await self._call("GET", "orders", params=params)
        if not isinstance(data, list):
            raise PayloadError("orders answer is not a list", platform=PLATFORM)
        pages = response.headers.get("X-WP-TotalPages")
        return data, int(pages) if pages and pages.isdigit() else None

    async def get_order(self, order_id: str, fields: str | None = None) -> dict[str, Any] | None:
        """GET orders/{id}; None when the id is unknown. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#retrieve-an-order"""
        params = {"_fields": fields} if fields else None
        data, _ = await self._call("GET", f"orders/{order_id}", params=params, none_on_404=True)
        return data

    async def list_refunds(self, order_id: str) -> list[dict[str, Any]]:
        """GET orders/{id}/refunds (all of them, with lines). ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-refunds"""
        refunds: list[dict[str, Any]] = []
        page = 1
        while True:
            data, response = await self._call(
                "GET", f"orders/{order_id}/refunds", params={"per_page": PER_PAGE, "page": page})
            refunds.extend(data or [])
            pages = response.headers.get("X-WP-TotalPages")
            if not pages or not pages.isdigit() or page >= int(pages):
                return refunds
            page += 1

    async def get_refund(self, order_id: str, refund_id: str) -> dict[str, Any] | None:
        """GET orders/{id}/refunds/{refund_id}; None when unknown. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#retrieve-a-refund"""
        data, _ = await self._call("GET", f"orders/{order_id}/refunds/{refund_id}", none_on_404=True)
        return data

    async def update_product(self, product_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PUT products/{id}. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#update-a-product"""
        data, _ = await self._call("PUT", f"products/{product_id}", body=changes)
        return data

    async def update_variation(self, product_id: str, variation_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PUT products/{pid}/variations/{vid}. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#update-a-product-variation"""
        data, _ = await self._call("PUT", f"products/{product_id}/variations/{variation_id}", body=changes)
        return data

    async def batch_products(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST products/batch {"update": [...]}, at most 100. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#batch-update-products"""
        data, _ = await self._call("POST", "products/batch", body={"update": updates})
        return list((data or {}).get("update") or [])

    async def batch_variations(self, product_id: str, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST products/{pid}/variations/batch, at most 100. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#batch-update-product-variations"""
        data, _ = await self._call("POST", f"products/{product_id}/variations/batch", body={"update": updates})
        return list((data or {}).get("update") or [])

    async def list_products(self, product_ids: list[str]) -> list[dict[str, Any]]:
        """GET products?include=..., up to 100 ids. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-products"""
        params = {"include": ",".join(product_ids), "per_page": PER_PAGE, "_fields": "id,manage_stock,stock_quantity"}
        data, _ = await self._call("GET", "products", params=params)
        return list(data or [])

    async def list_variations(self, product_id: str, variation_ids: list[str]) -> list[dict[str, Any]]:
        """GET products/{pid}/variations?include=..., up to 100 ids. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-product-variations"""
        params = {"include": ",".join(variation_ids), "per_page": PER_PAGE, "_fields": "id,manage_stock,stock_quantity"}
        data, _ = await self._call("GET", f"products/{product_id}/variations", params=params)
        return list(data or [])

    # --- shipments (operations.md 1.5) -----------------------------------------------------------

    async def list_trackings(self, order_id: str) -> list[dict[str, Any]]:
        """GET the Shipment Tracking extension's items of an order; raises PermanentError ``rest_no_route`` where
        the extension is not installed. ref: https://woocommerce.com/document/shipment-tracking/shipment-tracking-rest-api-create-tracking-item/"""
        data, _ = await self._call("GET", f"orders/{order_id}/shipment-trackings", root=self.tracking_root)
        return list(data or []) if isinstance(data, list) else []

    async def create_tracking(self, order_id: str, item: dict[str, Any]) -> dict[str, Any]:
        """POST a tracking item (``tracking_number``, ``custom_tracking_provider``, ``custom_tracking_link``,
        ``date_shipped``). ref: https://woocommerce.com/document/shipment-tracking/shipment-tracking-rest-api-create-tracking-item/"""
        data, _ = await self._call("POST", f"orders/{order_id}/shipment-trackings", body=item, root=self.tracking_root,
                                   attempts=1)
        return data or {}

    async def update_order(self, order_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PUT orders/{id} (status, meta_data). ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#update-an-order"""
        data, _ = await self._call("PUT", f"orders/{order_id}", body=changes)
        return data or {}

    async def list_notes(self, order_id: str) -> list[dict[str, Any]]:
        """GET orders/{id}/notes. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#list-all-order-notes"""
        data, _ = await self._call("GET", f"orders/{order_id}/notes", params={"type": "customer"})
        return list(data or []) if isinstance(data, list) else []

    async def create_note(self, order_id: str, note: str, *, customer_note: bool = True) -> dict[str, Any]:
        """POST orders/{id}/notes. ref: https://woocommerce.github.io/woocommerce-rest-api-docs/#create-an-order-note"""
        data, _ = await self._call("POST", f"orders/{order_id}/notes", body={"note": note, "customer_note": customer_note},
                                   attempts=1)
        return data or {}
