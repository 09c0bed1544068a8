"""The Shopify adapter: webhooks in, orders and refunds over Admin REST, stock compare-and-set over GraphQL.
Stock is keyed by inventory_item_id at one location; a listing without it is resolved through its variant.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode
from typing import Any, Mapping

import httpx
from pydantic import Field, SecretStr, field_validator

from adapters.base import OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel, StoreContext
from adapters.base import TimeWindow, WebhookDelivery, WebhookIdentity
from adapters.errors import PayloadError, PermanentError, SignatureError, TransientError
from adapters.rest import RestAdapter
from adapters.shopify import webhooks
from adapters.shopify.client import INVENTORY_IDS_PER_CALL, PAGE_LIMIT, ShopifyClient
from adapters.base import Capability, ShipmentResult, ShipmentUpload, ShippingState
from adapters.shipping import closed, foreign_parcels, numbers, uploaded_already
from adapters.shopify import inventory, payments, shipping
from adapters.base import BillLine
from adapters.shopify.mapping import PLATFORM, map_order, map_refund
from adapters.http import error_for_response, send, with_retries
from adapters.signing import hmac_hex, signed_by_any
from adapters.stock import push_each, refused
from adapters.tokens import Authorization, Authorizing, RefreshRefused, TokenCredentials, TokenGrant, in_seconds

DEFAULT_API_VERSION = "2026-07"
# Stock writes need changeFromQuantity and @idempotent on inventorySetQuantities, both mandatory from 2026-04
# (operations.md 4.4); an older version would refuse them, so it is refused here, where an operator sees it.
OLDEST_API_VERSION = "2026-04"


class ShopifyCredentials(TokenCredentials):
    """An Admin API access token (custom app or OAuth) and the API version to speak; the app's client id
    and secret when the shop is authorised through OAuth (else they come from the service's app settings)."""

    access_token: SecretStr | None = Field(default=None, min_length=1)
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^(\d{4}-(01|04|07|10)|unstable)$")
    client_id: str | None = None
    client_secret: SecretStr | None = None

    @field_validator("api_version")
    @classmethod
    def _recent_enough(cls, version: str) -> str:
        if version != "unstable" and version < OLDEST_API_VERSION:
            raise ValueError(f"api_version {version} is older than {OLDEST_API_VERSION}, the oldest that takes "
                             f"coopsync's compare-and-set stock writes; use {DEFAULT_API_VERSION} or later")
        return version


# What the features need: orders and refunds, fulfilment upload, stock, payouts (DESIGN, authorisation).
SCOPES = ("read_orders", "write_orders", "read_products", "read_inventory", "write_inventory",
          "read_merchant_managed_fulfillment_orders", "write_merchant_managed_fulfillment_orders",
          "read_shopify_payments_payouts")


def shopify_grant(answer: Any, now: datetime) -> TokenGrant:
    """``/admin/oauth/access_token``: expiring offline tokens carry ``expires_in`` (3600) and a refresh token
    that is replaced on every use (operations.md 2.4)."""
    if not isinstance(answer, dict) or not answer.get("access_token"):
        raise PayloadError("token answer without access_token", platform=PLATFORM)
    credentials = {"access_token": str(answer["access_token"])}
    if answer.get("refresh_token"):
        credentials["refresh_token"] = str(answer["refresh_token"])
    return TokenGrant(
        credentials=credentials,
        expires_at=in_seconds(answer.get("expires_in"), now),
        refresh_expires_at=in_seconds(answer.get("refresh_token_expires_in"), now),
        scope=tuple(s for s in str(answer.get("scope") or "").split(",") if s),
        refreshable="refresh_token" in credentials,
    )


def _iso(moment) -> str:
    # Whole seconds, as Shopify writes its times; flooring both ends still overlaps (the max is inclusive).
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


class ShopifyAdapter(RestAdapter, Authorizing):
    platform = PLATFORM
    # FEES and BILLS: Shopify Payments balance transactions carry the fee of each charge and refund.
    # STOCK_COMPARE_AND_SET: every stock write names the figure Shopify must still show (changeFromQuantity).
    capabilities = RestAdapter.capabilities | {Capability.SHIPMENTS, Capability.FEES, Capability.BILLS,
                                               Capability.STOCK_COMPARE_AND_SET}
    authorization = Authorization(mode="oauth", refresh_margin=timedelta(minutes=5), scopes=SCOPES)
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
                             access_token=creds.access_token.get_secret_value() if creds.access_token else "",
                             sleep=self.sleep)

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

    # -- Shopify Payments (operations.md 5.4) --------------------------------------------------------

    async def fetch_bills(self, window: TimeWindow, cursor: str | None) -> Page[BillLine]:
        """Balance transactions processed in the window: each charge's and refund's fee, per order."""
        data = await self.client.graphql(payments.BALANCE_TRANSACTIONS_QUERY, {
            "first": payments.PAGE_SIZE, "after": cursor, "query": payments.window_query(window)})
        lines, after = payments.balance_page(data)
        return Page(items=lines, next_cursor=after)

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
        """Compare-and-set per listing (``inventorySetQuantities`` with ``changeFromQuantity``): never a
        blind write, so a sale Shopify made that coopsync has not heard of is never written over."""
        return await push_each(levels, self._push_one)

    async def _push_one(self, level: StockLevel) -> PushResult | None:
        item = await self._inventory_item(level)
        location = self._location(level)
        # A negative "sellable quantity" means nothing to a buyer; Shopify would show it as oversold.
        wanted = max(0, level.quantity)
        if level.expected_quantity is not None:
            # The core's own belief of the shop's figure. A mismatch means sales it has not heard of:
            # only the core can recompute what the shop should show, so the conflict goes back to it.
            errors = await self._set_available(item, location, wanted, level.expected_quantity)
            if inventory.STALE not in inventory.codes(errors):
                return self._outcome(level, errors)
            return self._conflict(level, await self.client.read_available(item, location))
        # No belief given: compare against the figure read just before, so that only the moment between the
        # read and the write is at stake, and a sale in that moment is refused rather than written over.
        before = await self.client.read_available(item, location)
        if before == wanted:
            return None  # already showing it: a write would only add a line to the shop's history
        errors = await self._set_available(item, location, wanted, before)
        if inventory.STALE not in inventory.codes(errors):
            return self._outcome(level, errors)
        # Stale: the shop sold (or took back) units between our read and our write. The figure wanted was
        # planned before our read, so it cannot count units sold after it: they stay taken, once retried.
        now = await self.client.read_available(item, location)
        sold_meanwhile = max(0, before - now)
        target = max(0, wanted - sold_meanwhile)
        if target == now:
            return None
        errors = await self._set_available(item, location, target, now)
        if inventory.STALE not in inventory.codes(errors):
            return self._outcome(level, errors)
        # Sales keep landing faster than we write: the core plans again once it hears of them.
        return self._conflict(level, await self.client.read_available(item, location))

    async def _set_available(self, item: str, location: str, quantity: int, change_from: int) -> list[dict[str, Any]]:
        # A fresh key for every distinct write (a repeat after STALE changes changeFromQuantity, and Shopify
        # refuses one key with other parameters); the in-call retries of this write share it.
        return await self.client.set_available(
            inventory.set_available_variables(item, location, quantity, change_from, str(uuid.uuid4())))

    @staticmethod
    def _outcome(level: StockLevel, errors: list[dict[str, Any]]) -> PushResult | None:
        if not errors:
            return None
        if inventory.codes(errors) & inventory.RETRY_CODES:
            raise TransientError(inventory.refusal(errors), platform=PLATFORM, retry_after_s=1.0)
        return refused(level, inventory.refusal(errors))

    @staticmethod
    def _conflict(level: StockLevel, current: int) -> PushResult:
        return PushResult(external_sku_key=level.external_sku_key, ok=False, error_kind="conflict",
                          error=f"Shopify shows {current}, not the figure compared against "
                                f"(CHANGE_FROM_QUANTITY_STALE)", current_quantity=current)

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

    # --- authorisation (operations.md 2.4) -------------------------------------------------------

    def _app(self) -> tuple[str, str]:
        creds = self.creds
        if not creds.client_id or creds.client_secret is None:
            raise PermanentError("Shopify OAuth needs the app's client_id and client_secret (store credentials "
                                 "or COOPSYNC_APPS__SHOPIFY__CLIENT_ID / __CLIENT_SECRET)", platform=PLATFORM)
        return creds.client_id, creds.client_secret.get_secret_value()

    def authorize_url(self, redirect_uri: str, state: str) -> str | None:
        client_id, _ = self._app()
        query = {"client_id": client_id, "scope": ",".join(self.authorization.scopes),
                 "redirect_uri": redirect_uri, "state": state}
        return f"{self._base_url()}/admin/oauth/authorize?{urlencode(query)}"

    def verify_callback(self, params: Mapping[str, str]) -> None:
        """The redirect carries ``hmac``: hex HMAC-SHA256 over the other parameters, sorted, ``k=v`` joined
        by ``&``, keyed by the client secret; and ``shop`` must be this store's shop."""
        _, secret = self._app()
        given = params.get("hmac") or ""
        message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature"))
        if not signed_by_any(given.lower().encode(), [secret],
                             lambda key: hmac_hex(key, message, "sha256", upper=False).encode()):
            raise SignatureError("the OAuth redirect's hmac does not verify", platform=PLATFORM)
        shop = params.get("shop")
        if shop and f"https://{shop}" != self._base_url().rstrip("/"):
            raise SignatureError(f"the redirect names another shop ({shop})", platform=PLATFORM)

    async def _token_request(self, body: dict[str, Any]) -> TokenGrant:
        url = f"{self._base_url()}/admin/oauth/access_token"

        async def once() -> httpx.Response:
            request = self.http.build_request("POST", url, json=body, headers={"Accept": "application/json"})
            response = await send(self.http, request, PLATFORM)
            error = error_for_response(response, PLATFORM)
            if error is not None and error.kind in ("transient", "throttled"):
                raise error
            return response

        response = await with_retries(once, sleep=self.sleep)
        error = error_for_response(response, PLATFORM)
        if error is not None:  # 400 invalid_grant, 401: the platform refused
            raise RefreshRefused(f"token endpoint refused: HTTP {response.status_code}", platform=PLATFORM,
                                 code=str(response.status_code))
        try:
            answer = response.json()
        except json.JSONDecodeError as exc:
            raise PayloadError("token answer is not JSON", platform=PLATFORM) from exc
        return shopify_grant(answer, datetime.now(timezone.utc))

    async def exchange_code(self, code: str, redirect_uri: str, params: Mapping[str, str]) -> TokenGrant:
        client_id, secret = self._app()
        return await self._token_request({"client_id": client_id, "client_secret": secret, "code": code,
                                          "expiring": 1})

    async def refresh_tokens(self) -> TokenGrant:
        if self.creds.refresh_token is None:
            raise RefreshRefused("no refresh token: authorise the shop again", platform=PLATFORM)
        client_id, secret = self._app()
        return await self._token_request({"client_id": client_id, "client_secret": secret,
                                          "grant_type": "refresh_token",
                                          "refresh_token": self.creds.refresh_token.get_secret_value()})
