"""The WooCommerce adapter: webhooks in, orders and refunds over REST v3, stock set per product/variation.
The site URL is a store setting (settings.base_url, required); credentials are a REST key pair (HTTP Basic).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta, timezone
from typing import Any, Mapping

from pydantic import Field, SecretStr

from adapters.base import CredentialsBase, OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel, TimeWindow
from adapters.base import WebhookDelivery, WebhookIdentity
from adapters.errors import AdapterError, PermanentError, TransientError
from adapters.rest import RestAdapter
from adapters.stock import Halt, failed, push_result
from adapters.woocommerce import webhooks
from adapters.woocommerce.client import BATCH_LIMIT, PER_PAGE, WooClient
from adapters.woocommerce.mapping import PLATFORM, map_order, map_refund
from adapters.base import Capability, ShipmentResult, ShipmentUpload, ShippingState
from adapters.shipping import judge
from adapters.woocommerce import shipping

# What fetch_refunds and fetch_refund need of an order: enough for the currency and the restock decision.
REFUND_ORDER_FIELDS = "id,currency,status,date_completed_gmt,refunds"
# Woo's modified_after is a strict ">" at one-second resolution: start one second early, or an order
# modified exactly on a window boundary falls between two windows.
BOUNDARY_OVERLAP = timedelta(seconds=1)


class WooCommerceCredentials(CredentialsBase):
    """A WooCommerce REST API key pair (WooCommerce > Settings > Advanced > REST API), read/write."""

    consumer_key: SecretStr = Field(min_length=1)
    consumer_secret: SecretStr = Field(min_length=1)


def _gmt(moment) -> str:
    # With dates_are_gmt=true Woo reads these as UTC; it wants them without an offset.
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def _page_from_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 1
    kind, _, number = cursor.partition(":")
    if kind != "page" or not number.isdigit() or int(number) < 1:
        raise PermanentError(f"not a WooCommerce cursor: {cursor!r}", platform=PLATFORM)
    return int(number)


class WooCommerceAdapter(RestAdapter):
    platform = PLATFORM
    capabilities = RestAdapter.capabilities | {Capability.SHIPMENTS}
    Credentials = WooCommerceCredentials
    client: WooClient

    # -- configuration ---------------------------------------------------------------------------

    def _base_url(self) -> str:
        base = self.store.base_url
        if not base:
            # Credentials cannot carry it (a key pair says nothing about the site), so it is a store setting.
            raise PermanentError(
                "WooCommerce store has no settings.base_url: set it to the shop's site root, "
                "e.g. https://shop.example.com", platform=PLATFORM)
        if not base.lower().startswith("https://"):
            # Woo accepts Basic auth only over HTTPS; plain HTTP needs OAuth 1.0a, which we do not speak.
            raise PermanentError(
                f"WooCommerce base_url {base!r} is not https: the REST key pair only works over HTTPS",
                platform=PLATFORM)
        return base

    def make_client(self) -> WooClient:
        creds = self.creds
        return WooClient(self.http, base_url=self._base_url(), consumer_key=creds.consumer_key.get_secret_value(),
                         consumer_secret=creds.consumer_secret.get_secret_value(), sleep=self.sleep)

    @property
    def _status_overrides(self) -> Mapping[str, str] | None:
        return self.store.settings.get("status_map") or None

    # -- webhooks -----------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
        webhooks.verify(headers, body, secrets)

    def webhook_identity(self, headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
        return webhooks.identity(headers, body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        return webhooks.parse(headers, body, self._status_overrides)

    # -- orders and refunds -------------------------------------------------------------------------

    async def _orders_page(self, window: TimeWindow, cursor: str | None,
                           fields: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        page = _page_from_cursor(cursor)
        params: dict[str, Any] = {
            "modified_after": _gmt(window.start - BOUNDARY_OVERLAP),
            "modified_before": _gmt(window.end),
            "dates_are_gmt": "true",
            "per_page": PER_PAGE,
            "page": page,
            # orderby accepts only date, id, include, title, slug (not modified). id is stable while we
            # page; an order modified meanwhile leaves this window and is found by the window it moved to.
            "orderby": "id",
            "order": "asc",
        }
        if fields:
            params["_fields"] = fields
        orders, total_pages = await self.client.list_orders(params)
        if total_pages is not None:
            more = page < total_pages
        else:
            more = len(orders) >= PER_PAGE  # header stripped by a proxy: a full page may have a successor
        return orders, f"page:{page + 1}" if more else None

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        order = await self.client.get_order(external_id)
        return None if order is None else map_order(order, self._status_overrides)

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        orders, next_cursor = await self._orders_page(window, cursor)
        return Page(items=[map_order(o, self._status_overrides) for o in orders], next_cursor=next_cursor)

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        if not order_external_id:
            raise PermanentError("WooCommerce refunds can only be fetched through their order id", platform=PLATFORM)
        refund = await self.client.get_refund(order_external_id, external_id)
        if refund is None:
            return None
        order = await self.client.get_order(order_external_id, fields=REFUND_ORDER_FIELDS)
        if order is None:
            return None  # the order went away between the two calls; its deletion notice covers it
        return map_refund(refund, order)

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        # Woo has no shop-wide refund list. Refunding touches the order (date_modified moves), so the
        # orders modified in the window hold every refund made in it; their refunds[] only give ids and
        # totals, so each such order costs one GET orders/{id}/refunds for the lines.
        orders, next_cursor = await self._orders_page(window, cursor, fields=REFUND_ORDER_FIELDS)
        refunds: list[RefundSnapshot] = []
        for order in orders:
            if order.get("refunds"):
                refunds.extend(map_refund(r, order) for r in await self.client.list_refunds(str(order["id"])))
        return Page(items=refunds, next_cursor=next_cursor)

    # -- stock --------------------------------------------------------------------------------------

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        results: dict[int, PushResult] = {}
        simple: list[tuple[int, str]] = []  # (index, product id)
        variations: dict[str, list[tuple[int, str]]] = defaultdict(list)  # parent -> (index, variation id)
        for index, level in enumerate(levels):
            product_id, variation_id = _ids(level)
            if variation_id and not product_id:
                results[index] = failed(level, PermanentError(
                    f"variation {variation_id} needs its parent product_id in listing_ref", platform=PLATFORM))
            elif variation_id:
                variations[product_id].append((index, variation_id))
            else:
                simple.append((index, product_id))

        groups: list[tuple[str | None, list[tuple[int, str]]]] = [
            (None, simple[i:i + BATCH_LIMIT]) for i in range(0, len(simple), BATCH_LIMIT)]
        for parent, members in variations.items():
            groups += [(parent, members[i:i + BATCH_LIMIT]) for i in range(0, len(members), BATCH_LIMIT)]

        halt: Halt[list[AdapterError | None]] = Halt()
        for parent, members in groups:
            # One failed call fails its whole group; the other groups still go out unless it halted.
            outcome = await halt.attempt(lambda: self._push_group(parent, members, levels))
            outcomes = [outcome] * len(members) if isinstance(outcome, AdapterError) else outcome
            for (index, _), result in zip(members, outcomes):
                results[index] = push_result(levels[index], result)
        return [results[i] for i in range(len(levels))]

    async def _push_group(self, parent: str | None, members: list[tuple[int, str]],
                          levels: list[StockLevel]) -> list[AdapterError | None]:
        """One call for the group: a PUT for a single listing, a batch otherwise; an outcome per member."""
        def changes(index: int) -> dict[str, Any]:
            # A negative sellable quantity means nothing to a buyer; Woo would show it as a backorder.
            return {"manage_stock": True, "stock_quantity": max(0, levels[index].quantity)}

        if len(members) == 1:
            index, obj_id = members[0]
            if parent is None:
                await self.client.update_product(obj_id, changes(index))
            else:
                await self.client.update_variation(parent, obj_id, changes(index))
            return [None]
        updates = [{"id": int(obj_id), **changes(index)} for index, obj_id in members]
        if parent is None:
            answered = await self.client.batch_products(updates)
        else:
            answered = await self.client.batch_variations(parent, updates)
        outcomes: list[AdapterError | None] = []
        for position in range(len(members)):
            # Woo answers the batch in request order, one object or {"id", "error": {...}} per update.
            item = answered[position] if position < len(answered) else None
            outcomes.append(_batch_error(item))
        return outcomes

    async def fetch_stock(self, keys: list[StockLevel]) -> dict[str, int]:
        simple: dict[str, list[str]] = defaultdict(list)  # product id -> sku keys
        variations: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for level in keys:
            product_id, variation_id = _ids(level)
            if variation_id and product_id:
                variations[product_id][variation_id].append(level.external_sku_key)
            elif not variation_id:
                simple[product_id].append(level.external_sku_key)
        found: dict[str, int] = {}

        def record(objects: list[dict[str, Any]], wanted: Mapping[str, list[str]]) -> None:
            for obj in objects:
                # stock_quantity is null when Woo does not manage the stock: no figure to report.
                if obj.get("stock_quantity") is not None and str(obj.get("id")) in wanted:
                    for sku_key in wanted[str(obj["id"])]:
                        found[sku_key] = int(obj["stock_quantity"])

        product_ids = list(simple)
        for i in range(0, len(product_ids), PER_PAGE):
            record(await self.client.list_products(product_ids[i:i + PER_PAGE]), simple)
        for parent, wanted in variations.items():
            ids = list(wanted)
            for i in range(0, len(ids), PER_PAGE):
                record(await self.client.list_variations(parent, ids[i:i + PER_PAGE]), wanted)
        return found

    # -- shipments (operations.md 1.5) --------------------------------------------------------------

    async def _trackings(self, order_id: str) -> list[dict[str, Any]] | None:
        """The Shipment Tracking extension's items of an order; None where the shop does not have it."""
        try:
            return await self.client.list_trackings(order_id)
        except PermanentError as exc:
            if exc.code == "rest_no_route":
                return None
            raise

    async def _order(self, order_id: str) -> dict[str, Any]:
        order = await self.client.get_order(order_id)
        if order is None:
            raise PermanentError(f"WooCommerce shows no order {order_id}", platform=PLATFORM)
        return order

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        order = await self._order(order_external_id)
        return shipping.shipping_state(order, await self._trackings(order_external_id))

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        """Read, then write each part that is missing, so a retry after a lost answer adds nothing twice: the
        tracking item (the extension's REST where the shop has it, else the order meta and a customer note),
        then, once our parcels hold the whole order, status ``completed`` (which mails the buyer)."""
        order_id = upload.order_external_id
        order = await self._order(order_id)
        trackings = await self._trackings(order_id)
        verdict = judge(PLATFORM, upload, shipping.shipping_state(order, trackings))
        if verdict is not None and verdict.status == "failed":
            return verdict
        complete = upload.completes_order and order.get("status") != "completed"
        ref = "tracking"
        if trackings is not None:
            if verdict is None:
                created = await self.client.create_tracking(order_id, shipping.tracking_item(upload))
                ref = f"tracking:{created.get('tracking_id') or upload.tracking_number}"
            if complete:
                await self.client.update_order(order_id, {"status": "completed"})
        else:
            ref = "meta"
            changes: dict[str, Any] = {}
            if verdict is None:
                items = shipping.meta_items(order) + [shipping.meta_item(upload)]
                changes["meta_data"] = [{"key": shipping.TRACKING_META_KEY, "value": items}]
            if complete:
                changes["status"] = "completed"
            if changes:
                await self.client.update_order(order_id, changes)
            if not shipping.has_note(await self.client.list_notes(order_id), upload):
                await self.client.create_note(order_id, shipping.note_text(upload))
        return ShipmentResult("uploaded", platform_ref=ref, already=verdict is not None)


def _ids(level: StockLevel) -> tuple[str, str | None]:
    """(product id, variation id) of a listing; without a listing_ref the sku key is a simple product."""
    ref = level.listing_ref
    variation_id = str(ref["variation_id"]) if ref.get("variation_id") not in (None, "", "0", 0) else None
    product_id = str(ref.get("product_id") or (level.external_sku_key if not variation_id else ""))
    return product_id, variation_id


def _batch_error(item: dict[str, Any] | None) -> AdapterError | None:
    if item is None:
        return TransientError("batch answer has no entry for this update", platform=PLATFORM)
    error = item.get("error")
    if not error:
        return None
    status = (error.get("data") or {}).get("status") or 400
    cls = TransientError if int(status) >= 500 else PermanentError
    return cls(f"{error.get('message') or 'update failed'}", platform=PLATFORM, code=error.get("code"))

