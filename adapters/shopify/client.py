"""Shopify Admin calls, one method per endpoint: REST paced by the leaky-bucket call-limit header, GraphQL
by its cost bucket. Short 429s/5xx/throttles are retried in-call (tier one); longer waits surface as
ThrottledError for the job table.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from adapters.errors import AuthExpiredError, PermanentError, ThrottledError
from adapters.http import IN_CALL_ATTEMPTS
from adapters.rest import RestClient, Sleep
from adapters.shopify import inventory

log = logging.getLogger("coopsync.adapters.shopify")

PLATFORM = "shopify"
PAGE_LIMIT = 250  # orders per page; Shopify's maximum
INVENTORY_IDS_PER_CALL = 50  # inventory_item_ids accepted by one inventory_levels.json call
BUCKET_HEADROOM = 5  # calls; below this many free slots we wait for the bucket to drain
LEAK_RATE_PER_S = 2.0  # calls per second on standard plans (Advanced 4, Plus 20): the safe assumption
GRAPHQL_THROTTLE_WAIT_S = 1.0  # seconds, when a throttled answer does not say its cost; 100+ points refill a second
GRAPHQL_THROTTLE_MIN_WAIT_S = 0.1  # seconds; the bucket refills continuously, so even "enough now" waits a little
INVALID_TOKEN = "Invalid API key or access token"  # also in a 200 GraphQL answer (operations.md 2.4)


def graphql_throttle_wait(data: dict[str, Any]) -> float:
    """Seconds until the cost bucket holds what the throttled query asked for: ``extensions.cost`` carries the
    query's requested cost and the bucket's ``currentlyAvailable`` and ``restoreRate`` (points a second).
    ref: https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits"""
    cost = (data.get("extensions") or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        missing = float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return GRAPHQL_THROTTLE_WAIT_S
    if rate <= 0:
        return GRAPHQL_THROTTLE_WAIT_S
    return round(max(GRAPHQL_THROTTLE_MIN_WAIT_S, missing / rate), 3)


def _page_info(response: httpx.Response) -> str | None:
    """The ``page_info`` of the ``Link: <…>; rel="next"`` header, None on the last page."""
    nxt = response.links.get("next")
    if not nxt or not nxt.get("url"):
        return None
    return httpx.URL(nxt["url"]).params.get("page_info")


class ShopifyClient(RestClient):
    platform = PLATFORM

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_version: str, access_token: str,
                 sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(http, f"{base_url.rstrip('/')}/admin/api/{api_version}/",
                         {"X-Shopify-Access-Token": access_token}, sleep)
        self._bucket: tuple[int, int] | None = None  # (used, size) from the last answer

    def _received(self, response: httpx.Response) -> None:
        """Every answer, an error too, says how full the call bucket is."""
        value = response.headers.get("X-Shopify-Shop-Api-Call-Limit")
        if not value:
            return
        try:
            used, size = (int(part) for part in value.split("/", 1))
        except ValueError:
            return
        self._bucket = (used, size)

    async def _before_send(self) -> None:
        """Wait before a call when the bucket is nearly full, instead of running into 429s."""
        if self._bucket is None:
            return
        used, size = self._bucket
        free = size - used
        if free < BUCKET_HEADROOM:
            wait_s = (BUCKET_HEADROOM - free) / LEAK_RATE_PER_S
            log.info("shopify call bucket %s/%s: pausing %.1fs", used, size, wait_s)
            await self._sleep(wait_s)
            self._bucket = None  # drained by now; the next answer tells us the new level

    def _checked(self, request: httpx.Request, data: Any) -> Any:
        if request.url.path.endswith("/graphql.json") and isinstance(data, dict) and data.get("errors"):
            errors = data["errors"] if isinstance(data["errors"], list) else [data["errors"]]
            codes = {str((e.get("extensions") or {}).get("code")) for e in errors if isinstance(e, dict)}
            if "THROTTLED" in codes:
                # GraphQL spends cost points, not calls: a throttled query answers 200 with THROTTLED.
                raise ThrottledError("GraphQL query throttled", platform=PLATFORM, retry_after_s=graphql_throttle_wait(data))
            if any(INVALID_TOKEN in str(e.get("message") if isinstance(e, dict) else e) for e in errors):
                raise AuthExpiredError(f"GraphQL: {INVALID_TOKEN}: authorise the shop again", platform=PLATFORM)
            raise PermanentError(f"GraphQL errors: {errors}"[:1000], platform=PLATFORM)
        if isinstance(data, dict) and data.get("errors"):
            # Shopify reports validation failures as {"errors": ...}; a 2xx carrying one is still a failure.
            raise PermanentError(f"{request.url.path}: {data['errors']}", platform=PLATFORM)
        return data

    async def list_orders(self, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        """GET orders.json, one page; returns the orders and the next page_info. ref: https://shopify.dev/docs/api/admin-rest/latest/resources/order#get-orders"""
        data, response = await self._call("GET", "orders.json", params=params)
        return list(data.get("orders") or []), _page_info(response)

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        """GET orders/{id}.json; None when the order does not exist. ref: https://shopify.dev/docs/api/admin-rest/latest/resources/order#get-orders-order-id"""
        data, _ = await self._call("GET", f"orders/{order_id}.json", none_on_404=True)
        return None if data is None else data.get("order")

    async def get_refund(self, order_id: str, refund_id: str) -> dict[str, Any] | None:
        """GET orders/{order_id}/refunds/{id}.json; None when absent. ref: https://shopify.dev/docs/api/admin-rest/latest/resources/refund#get-orders-order-id-refunds-refund-id"""
        data, _ = await self._call("GET", f"orders/{order_id}/refunds/{refund_id}.json", none_on_404=True)
        return None if data is None else data.get("refund")

    async def get_variant(self, variant_id: str) -> dict[str, Any] | None:
        """GET variants/{id}.json, for its inventory_item_id. ref: https://shopify.dev/docs/api/admin-rest/latest/resources/product-variant#get-variants-variant-id"""
        data, _ = await self._call("GET", f"variants/{variant_id}.json", none_on_404=True)
        return None if data is None else data.get("variant")

    async def set_available(self, variables: dict[str, Any]) -> list[dict[str, Any]]:
        """inventorySetQuantities, compare-and-set on ``available`` (variables from
        ``inventory.set_available_variables``); its user errors, empty when the write applied. The in-call
        retries repeat the idempotency key, so a retry after a lost answer gets the first attempt's result.
        ref: https://shopify.dev/docs/api/admin-graphql/2026-07/mutations/inventorySetQuantities"""
        return inventory.user_errors(await self.graphql(inventory.SET_AVAILABLE, variables))

    async def read_available(self, item: str, location: str) -> int:
        """The ``available`` figure of one inventory item at one location (GraphQL ``inventoryItem``).
        ref: https://shopify.dev/docs/api/admin-graphql/2026-07/objects/InventoryLevel"""
        data = await self.graphql(inventory.AVAILABLE_QUERY, {"item": inventory.gid("InventoryItem", item),
                                                              "location": inventory.gid("Location", location)})
        return inventory.available_of(data, item, location)

    async def list_inventory_levels(
        self, inventory_item_ids: list[str], location_ids: list[str]
    ) -> list[dict[str, Any]]:
        """GET inventory_levels.json for up to 50 items. ref: https://shopify.dev/docs/api/admin-rest/latest/resources/inventorylevel#get-inventory-levels"""
        params: dict[str, Any] = {"inventory_item_ids": ",".join(inventory_item_ids), "limit": PAGE_LIMIT}
        if location_ids:
            params["location_ids"] = ",".join(location_ids)
        levels: list[dict[str, Any]] = []
        while True:
            data, response = await self._call("GET", "inventory_levels.json", params=params)
            levels.extend(data.get("inventory_levels") or [])
            page_info = _page_info(response)
            if page_info is None:
                return levels
            params = {"page_info": page_info, "limit": PAGE_LIMIT}

    async def graphql(self, query: str, variables: dict[str, Any], *, attempts: int = IN_CALL_ATTEMPTS) -> dict[str, Any]:
        """POST graphql.json; the answer's ``data``. ``attempts`` 1 for a mutation without an idempotency key.
        ref: https://shopify.dev/docs/api/admin-graphql"""
        data, _ = await self._call("POST", "graphql.json", body={"query": query, "variables": variables},
                                   attempts=attempts)
        return (data or {}).get("data") or {}
