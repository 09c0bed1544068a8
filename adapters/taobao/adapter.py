"""The Taobao/Tmall adapter: pulls trades and refunds by modified time and pushes stock, full figures or
increments (a Tmall shop's under ``outer_biz_key``, applied once: ``settings.mall`` "tmall").

TOP pushes through TMC (a binary WebSocket or consume/confirm polling, china.md 2.7), not HTTP
webhooks, so this adapter declares no ``webhooks`` capability; polling is the source of truth.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, ClassVar, Mapping, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, SecretStr

from adapters.base import OrderSnapshot, Page, PushResult, RefundSnapshot, StockLevel, TimeWindow, WebhookDelivery
from adapters.errors import PayloadError
from adapters.gateway import BackwardPaging, GatewayAdapter
from adapters.stock import push_each, refused
from adapters.taobao import mapping, tmc
from adapters.taobao.client import PAGE_SIZE, PLATFORM, TopClient
from adapters.base import Capability, PlatformCarrier, ShipmentResult, ShipmentUpload, ShippingState
from adapters.errors import PermanentError, TransientError
from adapters.shipping import judge
from adapters.taobao import shipping
from adapters.tokens import Authorization, Authorizing, RefreshRefused, TokenCredentials, TokenGrant, at_unix, in_seconds
from adapters.units import BEIJING, to_beijing_str

PAGING = BackwardPaging(PLATFORM, PAGE_SIZE, total_key="total_results")
T = TypeVar("T")


class TaobaoCredentials(TokenCredentials):
    """The app's key and secret and the seller's session (access token)."""

    app_key: str
    app_secret: SecretStr
    session: SecretStr | None = None


AUTHORIZE_PAGE = "https://oauth.taobao.com/authorize"


def top_grant(answer: Mapping[str, Any], now: datetime) -> TokenGrant:
    """A ``top_auth_token_*_response``: its ``token_result`` is a JSON string with the fields of
    oauth.taobao.com/token (operations.md 2.2). Only service-market apps get a renewable token: a
    refresh lifetime of 0 (or none at all) means this one cannot be refreshed."""
    raw = answer.get("token_result")
    try:
        result = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise PayloadError("token_result is not JSON", platform=PLATFORM) from exc
    if not isinstance(result, dict) or not result.get("access_token"):
        raise PayloadError("token answer without access_token", platform=PLATFORM)
    credentials = {"session": str(result["access_token"])}
    refresh_expires = in_seconds(result.get("re_expires_in"), now) or at_unix(result.get("refresh_token_valid_time"))
    if result.get("refresh_token") and refresh_expires is not None:
        credentials["refresh_token"] = str(result["refresh_token"])
    return TokenGrant(
        credentials=credentials,
        expires_at=in_seconds(result.get("expires_in"), now) or at_unix(result.get("expire_time")),
        refresh_expires_at=refresh_expires if "refresh_token" in credentials else None,
        shop_id=str(result["taobao_user_id"]) if result.get("taobao_user_id") else None,
        shop_name=result.get("taobao_user_nick"),
        refreshable="refresh_token" in credentials,
    )


def _mapped(result: dict[str, Any], key: str, map_one: Callable[[dict[str, Any]], T]) -> T | None:
    found = result.get(key)
    return map_one(found) if isinstance(found, dict) and found else None


def _sub_code(exc: PermanentError, suffix: str) -> bool:
    """Whether TOP's sub_code (kept in the message) is a logistics ``…-service-error:<suffix>``."""
    return f"-service-error:{suffix}" in exc.message


def _beijing_bounds(window: TimeWindow) -> tuple[str, str]:
    end: datetime = window.end
    if end.microsecond:
        # TOP takes whole seconds; round the end up so its last fraction is not lost.
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return to_beijing_str(window.start), to_beijing_str(end)


def is_tmall(settings: Mapping[str, Any]) -> bool:
    """Whether the store is a Tmall shop (``settings.mall`` "tmall"); Taobao is the default."""
    return settings.get("mall") == "tmall"


def outer_biz_key(key: str) -> str:
    """Tmall's ``outer_biz_key`` for one increment: hex characters only. The core's keys are uuid4 hex and
    pass as they are (dashes dropped); any other key is hashed into hex, the same key always the same."""
    compact = key.replace("-", "").lower()
    if compact and all(c in string.hexdigits for c in compact):
        return compact
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


# What TOP answers to an outer_biz_key it has applied already is not in the facts (UNCONFIRMED): the doc
# calls the key the idempotency key of an increment, so a repeat applies nothing. A success answer is then
# done; so is a refusal that names the repeat (as Douyin's "[idempotent_id]重复，操作已执行" does).
_REPEAT_WORDS = re.compile(r"重复|已存在|已处理|已执行|duplicat|already", re.IGNORECASE)
# The repeat must be the key's or the request's as a whole: 请求 or 操作 alone are in most TOP errors
# ("请求参数sku_id重复", "操作已处理中"), and taking such a refusal as applied moves our belief by the delta.
_KEY_WORDS = re.compile(r"outer_biz_key|幂等|idempoten|重复请求|请求重复", re.IGNORECASE)


def repeated_key(exc: PermanentError) -> bool:
    """Whether TOP refused an increment because its ``outer_biz_key`` was used before (it is applied)."""
    text = f"{exc.code or ''} {exc.message or ''}"
    return bool(_REPEAT_WORDS.search(text) and _KEY_WORDS.search(text))


class TaobaoAdapter(GatewayAdapter, Authorizing):
    platform: ClassVar[str] = PLATFORM
    # FEES: a finished trade carries its commission (taobao.bill.* is for self-developed merchants only).
    capabilities: ClassVar[frozenset[Capability]] = GatewayAdapter.capabilities | {
        Capability.SHIPMENTS, Capability.CARRIER_LIST, Capability.FEES, Capability.STOCK_DELTA}
    local_timezone = BEIJING
    authorization = Authorization(mode="oauth", token_field="session", refresh_margin=timedelta(hours=1))
    max_window: ClassVar[timedelta] = timedelta(days=1)  # the documented limit; 30 min recommended
    Credentials: ClassVar[type[BaseModel]] = TaobaoCredentials
    Client = TopClient
    key_fields = ("app_key", "app_secret", "session")
    client: TopClient

    def client_options(self) -> dict[str, Any]:
        # md5 is the form with a published vector; hmac and hmac-sha256 are per store.
        return {"sign_method": str(self.store.settings.get("sign_method", "md5"))}

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """A TMC message, stored by the channel consumer, as notices (tmc.py)."""
        return tmc.parse_delivery(headers, body)

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

    @classmethod
    def store_capabilities(cls, settings: Mapping[str, Any]) -> frozenset[Capability]:
        """A Tmall shop (``settings.mall`` "tmall") takes increments under ``outer_biz_key``, applied once
        however often they are sent; a Taobao shop's increments have no key (operations.md 4.2)."""
        if is_tmall(settings):
            return cls.capabilities | {Capability.STOCK_DELTA_IDEMPOTENT}
        return cls.capabilities

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        """One stock update per listing, a result each: tmall.item.quantity.update for a Tmall shop,
        taobao.item.quantity.update for a Taobao one.

        taobao.skus.quantity.update could set 20 SKUs of one item per call, but one bad SKU would
        fail its whole batch and the per-listing result would be lost; the co-op's listings are few.
        """
        return await push_each(levels, self._push_tmall if is_tmall(self.store.settings) else self._push_one)

    async def _push_one(self, level: StockLevel) -> PushResult | None:
        num_iid = level.listing_ref.get("num_iid")
        if not num_iid:
            return refused(level, "listing_ref needs num_iid")
        sku_id = level.listing_ref.get("sku_id") or None
        if level.delta is not None:  # type 2: an increment, which keeps the shop's own sales
            answer = await self.client.item_quantity_update(str(num_iid), str(sku_id) if sku_id else None,
                                                            int(level.delta), incremental=True)
        else:
            quantity = max(0, int(level.quantity))  # a full update is an absolute, non-negative figure
            answer = await self.client.item_quantity_update(str(num_iid), str(sku_id) if sku_id else None, quantity)
        if isinstance(answer.get("item"), dict):
            return None
        return refused(level, "taobao.item.quantity.update answered without an item")

    async def _push_tmall(self, level: StockLevel) -> PushResult | None:
        item_id = level.listing_ref.get("num_iid")
        if not item_id:
            return refused(level, "listing_ref needs num_iid (the Tmall item id)")
        sku_id = level.listing_ref.get("sku_id") or None
        sku = str(sku_id) if sku_id else None
        if level.delta is not None:
            key = outer_biz_key(level.idempotency_key) if level.idempotency_key else None
            try:
                answer = await self.client.tmall_item_quantity_update(str(item_id), sku, int(level.delta),
                                                                      incremental=True, outer_biz_key=key)
            except PermanentError as exc:
                if key is None or not repeated_key(exc):
                    raise
                return None  # this increment was applied under its key before: done, not applied again
        else:
            answer = await self.client.tmall_item_quantity_update(str(item_id), sku, max(0, int(level.quantity)))
        if answer.get("quantity_update_result") not in (None, ""):
            return None
        return refused(level, "tmall.item.quantity.update answered without quantity_update_result")

    # --- shipments (operations.md 1.2) ----------------------------------------------------------

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        trade = (await self.client.trade_shipping_get(order_external_id)).get("trade")
        if not isinstance(trade, dict) or not trade:
            raise PermanentError(f"TOP shows no trade {order_external_id}", platform=PLATFORM)
        return shipping.shipping_state(trade)

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        """Read, then send: the whole trade in one parcel through taobao.logistics.offline.send; a part (some
        sub-orders, or part of one) through alibaba.ascp.logistics.offline.send, new chain. TOP has no
        idempotency key; ``B04`` ("already shipped or closed") is judged by reading the trade again."""
        tid = upload.order_external_id
        state = await self.fetch_shipping(tid)
        verdict = judge(PLATFORM, upload, state)
        if verdict is not None:
            return verdict
        try:
            if upload.whole_order and not state.shipped:
                answer = await self.client.logistics_offline_send(tid, upload.tracking_number, upload.company)
                done = (answer.get("shipping") or {}).get("is_success")
            else:
                goods = [{"sub_tid": line.external_line_id, "num": line.quantity} for line in upload.lines]
                answer = await self.client.ascp_logistics_offline_send(tid, [{
                    "company_code": upload.company, "out_sid": upload.tracking_number, "goods": goods}])
                done = (answer.get("result") or {}).get("success")
        except PermanentError as exc:
            if _sub_code(exc, "B150"):
                # "发货异常，请稍等后重试": TOP asks for a retry later.
                raise TransientError(exc.message, platform=PLATFORM, code=exc.code, retry_after_s=60.0) from exc
            refusal = f"TOP refused the shipment: {exc.message}"
            if _sub_code(exc, "B04"):
                refusal = f"TOP says the trade is already shipped or closed (B04) but shows no waybill of ours: {exc.message}"
            return await self._after_refusal(upload, refusal)
        if done is True or str(done).lower() == "true":
            return ShipmentResult("uploaded", platform_ref=upload.tracking_number)
        return await self._after_refusal(upload, f"TOP answered the shipment without success: {answer}")

    async def _after_refusal(self, upload: ShipmentUpload, refusal: str) -> ShipmentResult:
        # B04 also means "closed", so it counts as uploaded only when the trade shows our waybill.
        verdict = judge(PLATFORM, upload, await self.fetch_shipping(upload.order_external_id))
        return verdict or ShipmentResult("failed", error=refusal[:1500])

    async def fetch_carriers(self) -> list[PlatformCarrier]:
        result = await self.client.logistics_companies_get()
        rows = mapping.unwrap_list(result.get("logistics_companies"), "logistics_company")
        return [PlatformCarrier(company=str(row["code"]), name=str(row.get("name") or ""), code=str(row["code"]))
                for row in rows if row.get("code")]

    # --- authorisation (operations.md 2.2) -------------------------------------------------------

    def authorize_url(self, redirect_uri: str, state: str) -> str | None:
        query = {"response_type": "code", "client_id": self.creds.app_key, "redirect_uri": redirect_uri,
                 "state": state, "view": "web"}
        return f"{AUTHORIZE_PAGE}?{urlencode(query)}"

    async def exchange_code(self, code: str, redirect_uri: str, params: Mapping[str, str]) -> TokenGrant:
        body = await self.token_call("taobao.top.auth.token.create", {"code": code})
        return top_grant(self.client.unwrap(body, "top_auth_token_create_response"), datetime.now(timezone.utc))

    async def refresh_tokens(self) -> TokenGrant:
        if self.creds.refresh_token is None:
            raise RefreshRefused("this app's sessions cannot be refreshed (only service-market apps can): "
                                 "authorise the shop again before the session ends", platform=PLATFORM)
        body = await self.token_call("taobao.top.auth.token.refresh",
                                     {"refresh_token": self.creds.refresh_token.get_secret_value()})
        return top_grant(self.client.unwrap(body, "top_auth_token_refresh_response"), datetime.now(timezone.utc))
