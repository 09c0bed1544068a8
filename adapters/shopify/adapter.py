"""The Shopify adapter: webhooks in, orders and refunds over Admin REST, stock set per inventory level.
Stock is keyed by inventory_item_id at one location; a listing without it is resolved through its variant.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any, Mapping

import httpx
from pydantic import Field, SecretStr

from adapters.base import CredentialsBase, OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel, StoreContext
from adapters.base import TimeWindow, WebhookDelivery, WebhookIdentity
from adapters.errors import PermanentError
from adapters.rest import RestAdapter
from adapters.shopify import webhooks
from adapters.shopify.client import INVENTORY_IDS_PER_CALL, PAGE_LIMIT, ShopifyClient
from adapters.base import Capability, ShipmentResult, ShipmentUpload, ShippingState
from adapters.shipping import closed, foreign_parcels, numbers, uploaded_already
from adapters.shopify import shipping
from adapters.shopify.mapping import PLATFORM, map_order, map_refund
from adapters.stock import push_each

DEFAULT_API_VERSION = "2026-07"


class ShopifyCredentials(CredentialsBase):
    """An Admin API access token (custom app or OAuth) and the API version to speak."""

    access_token: SecretStr = Field(min_length=1)
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^(\d{4}-(01|04|07|10)|unstable)$")


def _iso(moment) -> str:
    # Whole seconds, as Shopify writes its times; flooring both ends still overlaps (the max is inclusive).
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


class ShopifyAdapter(RestAdapter):
    platform = PLATFORM
    capabilities = RestAdapter.capabilities | {Capability.SHIPMENTS}
    Credentials = ShopifyCredentials
    client: ShopifyClient

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        self._inventory_items: dict[str, str] = {}  # variant_id -> inventory_item_id

    # -- configuration ---------------------------------------------------------------------------

    def _base_url(self) -> str:
        if self.store.base_url:
            return self.store.base_url
        shop = (self.store.external_shop_id or "").strip()
        if not shop:
            raise PermanentError(
                "Shopify store has neither settings.base_url nor external_shop_id: set external_shop_id to the "
                "shop's myshopify.com domain", platform=PLATFORM,
            )
        if "." not in shop:
            shop += ".myshopify.com"  # a bare handle ("qinba-tea") names the same shop
        return f"https://{shop}"

    def make_client(self) -> ShopifyClient:
        creds = self.creds
        return ShopifyClient(self.http, base_url=self._base_url(), api_version=creds.api_version,
                             access_token=creds.access_token.get_secret_value(), sleep=self.sleep)

    # -- webhooks -----------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
        webhooks.verify(headers, body, secrets)

    def webhook_identity(self, headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
        return webhooks.identity(headers, body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        return webhooks.parse(headers, body)

    # -- orders and refunds -------------------------------------------------------------------------

    def _window_params(self, window: TimeWindow, cursor: str | None, fields: str | None = None) -> dict[str, Any]:
        if cursor:
            # With page_info Shopify rejects every filter except limit and fields: the cursor carries them.
            params: dict[str, Any] = {"page_info": cursor, "limit": PAGE_LIMIT}
        else:
            # updated_at_max is inclusive, so an order updated exactly at window.end shows up in two windows;
            # snapshots are idempotent, missing it would not be.
            params = {
                "status": "any",  # the default "open" hides closed and cancelled orders
                "updated_at_min": _iso(window.start),
                "updated_at_max": _iso(window.end),
                "limit": PAGE_LIMIT,
            }
        if fields:
            params["fields"] = fields
        return params

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        order = await self.client.get_order(external_id)
        return None if order is None else map_order(order)

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        orders, next_page = await self.client.list_orders(self._window_params(window, cursor))
        return Page(items=[map_order(o) for o in orders], next_cursor=next_page)

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        if not order_external_id:
            raise PermanentError("Shopify refunds can only be fetched through their order id", platform=PLATFORM)
        refund = await self.client.get_refund(order_external_id, external_id)
        return None if refund is None else map_refund(refund)

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        # Shopify has no shop-wide refund list: refunds live under their order (orders/{id}/refunds.json), and
        # every order in orders.json embeds its refunds[]. Creating a refund updates its order's updated_at,
        # so paging the orders updated in the window finds every refund made in it, with no call per order.
        # Older refunds of those orders come along too; snapshots are idempotent, so that is harmless.
        params = self._window_params(window, cursor, fields="id,currency,updated_at,refunds")
        orders, next_page = await self.client.list_orders(params)
        refunds = [map_refund(r, o.get("currency")) for o in orders for r in o.get("refunds") or []]
        return Page(items=refunds, next_cursor=next_page)

    # -- stock --------------------------------------------------------------------------------------

    async def _inventory_item(self, level: StockLevel) -> str:
        ref = level.listing_ref
        if ref.get("inventory_item_id"):
            return str(ref["inventory_item_id"])
        variant_id = str(ref.get("variant_id") or level.external_sku_key)
        if variant_id not in self._inventory_items:
            variant = await self.client.get_variant(variant_id)
            if variant is None or not variant.get("inventory_item_id"):
                raise PermanentError(f"variant {variant_id} not found or has no inventory item", platform=PLATFORM)
            self._inventory_items[variant_id] = str(variant["inventory_item_id"])
        return self._inventory_items[variant_id]

    def _location(self, level: StockLevel) -> str:
        location = level.listing_ref.get("location_id") or self.store.settings.get("location_id")
        if not location:
            raise PermanentError(
                f"no Shopify location for {level.external_sku_key}: set the store's settings.location_id "
                "(or listing_ref.location_id)", platform=PLATFORM,
            )
        return str(location)

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        return await push_each(levels, self._push_one)

    async def _push_one(self, level: StockLevel) -> None:
        item = await self._inventory_item(level)
        # A negative "sellable quantity" means nothing to a buyer; Shopify would show it as oversold.
        await self.client.set_inventory_level(self._location(level), item, max(0, level.quantity))

    # -- shipments (operations.md 1.4) --------------------------------------------------------------

    async def _shipping_order(self, order_id: str) -> dict[str, Any]:
        order = (await self.client.graphql(shipping.SHIPPING_QUERY, {"id": shipping.order_gid(order_id)})).get("order")
        if not isinstance(order, dict):
            raise PermanentError(f"Shopify shows no order {order_id}", platform=PLATFORM)
        return order

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        return shipping.shipping_state(await self._shipping_order(order_external_id))

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        """Read the order, then ``fulfillmentCreate`` what our tracking number does not cover yet, over the open
        fulfillment orders, one call per location; a line with too little left to fulfil fails the parcel
        with the tracking numbers Shopify shows for it."""
        order = await self._shipping_order(upload.order_external_id)
        state = shipping.shipping_state(order)
        if state.closed:
            return closed(PLATFORM, upload, state)
        plan = shipping.plan(upload, order)
        if not plan.by_location and not plan.short:
            return uploaded_already(",".join(plan.ours) or None)
        if plan.short:
            foreign = foreign_parcels(upload, state)
            missing = ", ".join(f"{units} of line {line}" for line, units in sorted(plan.short.items()))
            shown = f"; its fulfillments carry tracking number {numbers(foreign)}" if foreign else ""
            return ShipmentResult("failed", error=(
                f"Shopify has nothing left to fulfil for {missing}{shown}; ours is {upload.tracking_number} "
                f"({upload.carrier}). Check the order in Shopify, then retry the shipment"))
        created = list(plan.ours)
        for location, orders in plan.by_location.items():
            # Sent once: a repeat after a lost answer could fulfil the units twice (no idempotency key).
            answer = await self.client.graphql(shipping.FULFILLMENT_CREATE,
                                               {"fulfillment": shipping.fulfillment_input(upload, orders)}, attempts=1)
            payload = answer.get("fulfillmentCreate") or {}
            errors = payload.get("userErrors") or []
            fulfillment = payload.get("fulfillment") or {}
            if errors or not fulfillment.get("id"):
                # An in-call repeat of a create whose answer was lost is refused (nothing left to fulfil):
                # the order read again says whether our tracking number covers the parcel now.
                again = shipping.plan(upload, await self._shipping_order(upload.order_external_id))
                if not again.by_location and not again.short:
                    return uploaded_already(",".join(again.ours) or None)
                done = f" (fulfillments {', '.join(created)} were created before it)" if created else ""
                return ShipmentResult("failed", error=f"fulfillmentCreate refused: {errors or 'no fulfillment'}{done}"[:1500])
            created.append(str(fulfillment["id"]))
        return ShipmentResult("uploaded", platform_ref=",".join(created))

    async def fetch_stock(self, keys: list[StockLevel]) -> dict[str, int]:
        wanted: dict[tuple[str, str], list[str]] = {}  # (location, item) -> sku keys
        for level in keys:
            try:
                item = await self._inventory_item(level)
            except PermanentError:
                continue  # a listing that no longer exists has no stock to report
            wanted.setdefault((self._location(level), item), []).append(level.external_sku_key)
        by_location: dict[str, list[str]] = {}
        for location, item in wanted:
            by_location.setdefault(location, []).append(item)
        found: dict[str, int] = {}
        for location, items in by_location.items():
            for start in range(0, len(items), INVENTORY_IDS_PER_CALL):
                chunk = items[start:start + INVENTORY_IDS_PER_CALL]
                for lvl in await self.client.list_inventory_levels(chunk, [location]):
                    key = (str(lvl.get("location_id")), str(lvl.get("inventory_item_id")))
                    if key in wanted and lvl.get("available") is not None:  # None: not tracked there
                        for sku_key in wanted[key]:
                            found[sku_key] = int(lvl["available"])
        return found

