"""The Pinduoduo adapter: pulls orders and after-sales in 30-minute windows and pushes full stock.

PDD pushes events over a WebSocket message service (china.md 1.7), not HTTP webhooks, so this
adapter declares no ``webhooks`` capability; polling is the source of truth.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Mapping
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, SecretStr

from adapters.base import AfterSaleDetail, OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel
from adapters.base import StoreContext, TimeWindow, WebhookDelivery
from adapters.errors import PayloadError, PermanentError
from adapters.gateway import BackwardPaging, GatewayAdapter, unix_bounds
from adapters.pinduoduo import mapping, messages
from adapters.pinduoduo import bills as pdd_bills
from adapters.base import BillLine
from adapters.bills import BillColumns, parse_bill_csv
from adapters.errors import TransientError
from adapters.http import send
from adapters.units import BEIJING
from adapters.pinduoduo.client import PAGE_SIZE, PLATFORM, PddClient
from adapters.base import Capability, PlatformCarrier, ShipmentResult, ShipmentUpload, ShippingState
from adapters.shipping import judge
from adapters.stock import push_each, refused
from adapters.tokens import Authorization, Authorizing, RefreshRefused, TokenCredentials, TokenGrant, at_unix, in_seconds

AMOUNT_UNITS = ("yuan", "fen")
BILL_NOT_READY_RETRY_S = 3600.0  # seconds; a day's bill is ready some time the next day
BILL_DOWNLOAD_RETRY_S = 60.0  # seconds, before asking for a fresh download URL
PAGING = BackwardPaging(PLATFORM, PAGE_SIZE, total_key="total_count")


class PddCredentials(TokenCredentials):
    """The app's client id and secret, and what the shop's authorisation gives us (operations.md 2.1)."""

    client_id: str
    client_secret: SecretStr
    access_token: SecretStr | None = None


AUTHORIZE_PAGE = "https://fuwu.pinduoduo.com/service-market/auth"


def pdd_grant(result: Mapping[str, Any], now: datetime) -> TokenGrant:
    """A ``pop_auth_token_*_response``: ``*_expires_at`` are unix seconds, ``*_expires_in`` seconds left."""
    token = result.get("access_token")
    if not token:
        raise PayloadError("token answer without access_token", platform=PLATFORM)
    credentials = {"access_token": str(token)}
    if result.get("refresh_token"):
        credentials["refresh_token"] = str(result["refresh_token"])
    return TokenGrant(
        credentials=credentials,
        expires_at=at_unix(result.get("expires_at")) or in_seconds(result.get("expires_in"), now),
        refresh_expires_at=(at_unix(result.get("refresh_token_expires_at"))
                            or in_seconds(result.get("refresh_token_expires_in"), now)),
        shop_id=str(result["owner_id"]) if result.get("owner_id") not in (None, "") else None,
        shop_name=result.get("owner_name"),
        scope=tuple(str(s) for s in result.get("scope") or ()),
    )


def _order_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    # niltor and lywzx (generated from the docs) say order_sn_list; tourze reads order_list.
    rows = result.get("order_sn_list")
    if rows is None:
        rows = result.get("order_list") or []
    return rows


def _company_id(company: str) -> int | str:
    # logistics_id / shipping_id are numbers in the SDK models; the carrier table keeps them as text.
    return int(company) if company.isdigit() else company


def _true(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


class PinduoduoAdapter(GatewayAdapter, Authorizing):
    platform: ClassVar[str] = PLATFORM
    capabilities: ClassVar[frozenset[Capability]] = GatewayAdapter.capabilities | {
        Capability.SHIPMENTS, Capability.CARRIER_LIST, Capability.REPLACEMENT_SHIPMENTS, Capability.FEES,
        Capability.BILLS, Capability.STOCK_DELTA}
    bill_columns: ClassVar[BillColumns] = pdd_bills.BILL_COLUMNS  # the daily bill's file (hand-made mapping)
    local_timezone = BEIJING
    authorization = Authorization(mode="oauth")
    max_window: ClassVar[timedelta] = timedelta(minutes=30)  # both increment lists refuse more
    Credentials: ClassVar[type[BaseModel]] = PddCredentials
    Client = PddClient
    key_fields = ("client_id", "client_secret", "access_token")
    client: PddClient

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        super().__init__(store, http)
        unit = str(store.settings.get("refund_amount_unit", "yuan"))
        if unit not in AMOUNT_UNITS:
            raise PermanentError(f"refund_amount_unit must be one of {AMOUNT_UNITS}, not {unit!r}", platform=PLATFORM)
        # pdd.refund.list.increment.get documents refund_amount as yuan strings ("退款金额（元）"),
        # but pdd.refund.information.get types it as an integer with no unit and the refund push
        # carries refund_fee 1990, which reads like fen [I]. Until a live answer settles it, the
        # store says which; we read amounts from the list only, so one setting covers both pulls.
        self.refund_amount_unit: mapping.AmountUnit = unit  # type: ignore[assignment]

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """A message of the message service, stored by the channel consumer, as notices (messages.py)."""
        return messages.parse_delivery(headers, body)

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        info = await self.client.order_information(external_id)
        order = info.get("order_info")
        return mapping.map_order(order) if isinstance(order, dict) and order else None

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        start, end = unix_bounds(self.checked(window))
        rows, next_cursor = await PAGING.read(
            cursor, lambda page, size: self.client.order_number_list_increment(start, end, page, size), _order_rows)
        return Page([mapping.map_order(row) for row in rows], next_cursor)

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        start, end = unix_bounds(self.checked(window))
        rows, next_cursor = await PAGING.read(
            cursor, lambda page, size: self.client.refund_list_increment(start, end, page, size),
            lambda result: result.get("refund_list") or [])
        return Page([await self._map_refund(row) for row in rows], next_cursor)

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
        # The list row's after_sales_type has no documented numbering (operations.md 3.1): the snapshot
        # leaves the kind pending and the core asks fetch_after_sale in a job of its own, so a page of
        # the list never waits on (or fails with) one detail call per after-sale.
        return mapping.map_refund(row, amount_unit=self.refund_amount_unit)

    async def fetch_after_sale(self, external_id: str, order_external_id: str) -> AfterSaleDetail | None:
        """pdd.refund.information.get: the documented after_sales_type, shipping_status, exchange sku."""
        detail = await self.client.refund_information(str(external_id), str(order_external_id))
        if not detail or detail.get("after_sales_type") in (None, ""):
            return None
        return mapping.map_after_sale_detail(detail)

    async def fetch_bills(self, window: TimeWindow, cursor: str | None) -> Page[BillLine]:
        """One day's funds bill per page: the days whose midnight (Beijing) lies in the window. The URL is
        fetched, then its file, which is read with the store's mapping (``settings.bill_columns``) or the
        built-in one. A day whose bill is not ready yet is retried later."""
        days = pdd_bills.bill_dates(window)
        index = int(cursor) if cursor and cursor.isdigit() else 0
        if index >= len(days):
            return Page([], None)
        day = days[index].isoformat()
        url = await self.client.finance_balance_daily_bill_url(day)
        if url is None:
            raise TransientError(f"the funds bill of {day} is not ready", platform=PLATFORM,
                                 retry_after_s=BILL_NOT_READY_RETRY_S)
        response = await send(self.http, self.http.build_request("GET", url), PLATFORM)
        if response.is_error:
            # The file host, not the gateway: a refusal means the URL went stale (a new one is asked for on the
            # next try), never that the shop's token expired.
            raise TransientError(f"the funds bill of {day} could not be downloaded (HTTP {response.status_code})",
                                 platform=PLATFORM, retry_after_s=BILL_DOWNLOAD_RETRY_S)
        columns = BillColumns.model_validate(self.store.settings["bill_columns"]) \
            if self.store.settings.get("bill_columns") else pdd_bills.BILL_COLUMNS
        lines = parse_bill_csv(response.content, columns, source="bill")
        return Page(lines, str(index + 1) if index + 1 < len(days) else None)

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One pdd.goods.quantity.update per listing (PDD has no batch call), a result each."""
        return await push_each(levels, self._push_one)

    async def _push_one(self, level: StockLevel) -> PushResult | None:
        goods_id = level.listing_ref.get("goods_id")
        sku_id = level.listing_ref.get("sku_id") or level.external_sku_key
        if not goods_id or not sku_id:
            return refused(level, "listing_ref needs goods_id and sku_id")
        if level.delta is not None:  # update_type 2: the shop's own sales since are kept
            answer = await self.client.goods_quantity_update(str(goods_id), str(sku_id), int(level.delta),
                                                             incremental=True)
        else:  # a full update must be >= 0 (china.md 1.6); an oversold figure means "sell none"
            answer = await self.client.goods_quantity_update(str(goods_id), str(sku_id), max(0, int(level.quantity)))
        if answer.get("is_success") in (True, "true", 1):
            return None
        return refused(level, f"pdd.goods.quantity.update answered is_success={answer.get('is_success')!r}")

    # --- shipments (operations.md 1.1) ----------------------------------------------------------

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        info = await self.client.order_information(order_external_id)
        order = info.get("order_info")
        if not isinstance(order, dict) or not order:
            raise PermanentError(f"PDD shows no order {order_external_id}", platform=PLATFORM)
        return mapping.shipping_state(order)

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        """Read, then send. PDD ships an order under one main waybill (pdd.logistics.online.send, only while
        it awaits shipment); our later parcels go on as extra waybills, which the buyer sees but which
        change nothing. No error code for "already shipped" is documented (operations.md 1.1, 7), so after
        any refusal the order is read again and our waybill there counts as uploaded."""
        if upload.after_sales_id:
            return await self._ship_replacement(upload)
        state = await self.fetch_shipping(upload.order_external_id)
        verdict = judge(PLATFORM, upload, state)
        if verdict is not None:
            return verdict
        company = _company_id(upload.company)
        if state.shipped:
            if not state.parcels:
                return ShipmentResult("failed", error=(
                    f"PDD shows order {upload.order_external_id} shipped without a waybill ({state.status}): "
                    f"parcel {upload.tracking_number} cannot be added to it"))
            # The main waybill is one of ours: this parcel is an extra one. No read-back exists for extra
            # waybills, so a retry after a lost answer may list it twice (UNCONFIRMED whether PDD dedupes).
            answer = await self.client.order_upload_extra_logistics(
                upload.order_external_id, [(company, upload.tracking_number)])
            if _true(answer.get("success")):
                return ShipmentResult("uploaded", platform_ref=f"extra:{upload.tracking_number}")
            return ShipmentResult("failed", error=f"pdd.order.upload.extra.logistics answered success={answer.get('success')!r}")
        try:
            answer = await self.client.logistics_online_send(upload.order_external_id, company, upload.tracking_number)
        except PermanentError as exc:
            return await self._after_refusal(upload, f"pdd.logistics.online.send refused: {exc.message} (code {exc.code})")
        if _true(answer.get("is_success")):
            return ShipmentResult("uploaded", platform_ref=upload.tracking_number)
        return await self._after_refusal(upload, f"pdd.logistics.online.send answered is_success={answer.get('is_success')!r}")

    async def _after_refusal(self, upload: ShipmentUpload, refusal: str) -> ShipmentResult:
        """A refused send may be our own earlier one whose answer was lost: the order says."""
        verdict = judge(PLATFORM, upload, await self.fetch_shipping(upload.order_external_id))
        return verdict or ShipmentResult("failed", error=refusal)

    async def _ship_replacement(self, upload: ShipmentUpload) -> ShipmentResult:
        """An exchange's replacement goes out through the after-sale (pdd.refund.exchange.shipping), since the
        order itself shipped long ago; the after-sale's detail names the merchant's exchange waybill."""
        order_sn, after_sales_id = upload.order_external_id, str(upload.after_sales_id)

        async def shown() -> bool:
            detail = await self.client.refund_information(after_sales_id, order_sn)
            exchange = detail.get("exchange_shipping_detail") or {}
            number = str(exchange.get("merchant_exchange_trunk_number") or "").strip()
            return bool(number) and number.upper() == upload.tracking_number.strip().upper()

        if await shown():
            return ShipmentResult("uploaded", already=True)
        try:
            answer = await self.client.refund_exchange_shipping(
                after_sales_id, order_sn, _company_id(upload.company), upload.carrier_name or upload.carrier,
                upload.tracking_number)
        except PermanentError as exc:
            if await shown():
                return ShipmentResult("uploaded", already=True)
            return ShipmentResult("failed", error=f"pdd.refund.exchange.shipping refused: {exc.message} (code {exc.code})")
        if _true(answer.get("succ")):
            return ShipmentResult("uploaded", platform_ref=f"after-sale:{after_sales_id}")
        if await shown():
            return ShipmentResult("uploaded", already=True)
        return ShipmentResult("failed", error=f"pdd.refund.exchange.shipping: {answer.get('message') or 'not done'}")

    async def fetch_carriers(self) -> list[PlatformCarrier]:
        """pdd.logistics.companies.get; companies PDD marks unavailable (``available`` 0) cannot ship."""
        result = await self.client.logistics_companies()
        rows = result.get("logistics_companies") or []
        return [PlatformCarrier(company=str(row["id"]), name=str(row.get("logistics_company") or ""),
                                code=str(row["code"]) if row.get("code") else None)
                for row in rows if row.get("id") not in (None, "") and str(row.get("available", 1)) != "0"]

    # --- authorisation (operations.md 2.1) -------------------------------------------------------

    def authorize_url(self, redirect_uri: str, state: str) -> str | None:
        query = {"response_type": "code", "client_id": self.creds.client_id, "redirect_uri": redirect_uri,
                 "state": state}
        return f"{AUTHORIZE_PAGE}?{urlencode(query)}"

    async def exchange_code(self, code: str, redirect_uri: str, params: Mapping[str, str]) -> TokenGrant:
        body = await self.token_call("pdd.pop.auth.token.create", {"code": code})
        return pdd_grant(self.client.unwrap(body, "pop_auth_token_create_response"), datetime.now(timezone.utc))

    async def refresh_tokens(self) -> TokenGrant:
        if self.creds.refresh_token is None:
            raise RefreshRefused("no refresh token: authorise the shop again", platform=PLATFORM)
        body = await self.token_call("pdd.pop.auth.token.refresh",
                                     {"refresh_token": self.creds.refresh_token.get_secret_value()})
        return pdd_grant(self.client.unwrap(body, "pop_auth_token_refresh_response"), datetime.now(timezone.utc))
