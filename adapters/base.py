"""The adapter protocol, its capabilities and the canonical snapshots every platform maps onto.

An adapter turns whatever a platform sends (a webhook, a page of a list API, a pushed message)
into *snapshots*: the whole current state of one order or one refund, in integer minor units and
aware UTC times, with the platform's ``updated_at``. The core reconciles snapshots; adapters never
touch the database and never import ``app``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, Mapping, NewType, Protocol, TypeVar, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

ExternalOrderId = NewType("ExternalOrderId", str)
ExternalRefundId = NewType("ExternalRefundId", str)
ExternalSkuKey = NewType("ExternalSkuKey", str)


class Capability(StrEnum):
    ORDERS_PULL = "orders_pull"
    REFUNDS_PULL = "refunds_pull"
    STOCK_PUSH = "stock_push"
    STOCK_READ = "stock_read"
    STOCK_COMPARE_AND_SET = "stock_cas"  # push_stock honours StockLevel.expected_quantity
    # push_stock applies StockLevel.delta as an increment (the shop's own sales are kept); with
    # STOCK_DELTA_IDEMPOTENT the platform applies a repeated idempotency_key once.
    STOCK_DELTA = "stock_delta"
    STOCK_DELTA_IDEMPOTENT = "stock_delta_idempotent"
    WEBHOOKS = "webhooks"
    SHIPMENTS = "shipments"  # upload_shipment and fetch_shipping
    CARRIER_LIST = "carrier_list"  # fetch_carriers: the platform's list of courier companies
    REPLACEMENT_SHIPMENTS = "replacement_shipments"  # upload_shipment takes ShipmentUpload.after_sales_id
    # Actual fees arrive for this platform's orders (in their payloads, pulled settlement data or bills):
    # settlement waits ``fee_wait_days`` for them before it uses the store's estimate.
    FEES = "fees"
    BILLS = "bills"  # fetch_bills: the platform's settlement or bill lines, by time window


class OrderStatus(StrEnum):
    """Canonical order statuses, in the order an order normally moves through them."""

    PENDING = "pending"  # created, not paid
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"  # buyer confirmed receipt, or the platform's nearest completion signal
    CANCELLED = "cancelled"


class RefundStatus(StrEnum):
    OPEN = "open"  # requested or in progress: blocks settlement of its order
    SUCCEEDED = "succeeded"  # money went back; stock effects of its lines apply
    CLOSED = "closed"  # refused, withdrawn or expired: no effect


RestockType = Literal["no_restock", "cancel", "return"]
"""``cancel``: the goods never shipped, release their reservation; ``return``: the goods came back
to stock; ``no_restock``: money only, no stock moves."""

AfterSaleKind = Literal["refund_only", "return", "exchange", "reship", "repair", "price_protection"]
"""What an after-sale (售后) is: money back only; goods back and money back; goods back and a
replacement out (换货); a replacement out, nothing back (补寄, e.g. a missing item); goods repaired
and sent back (no stock of ours moves); a price difference paid back (价保)."""

ReturnStatus = Literal["awaiting_goods", "received", "inspected"]
"""Where the goods of a return (or an exchange) are: still with the buyer or on the way; back with
the merchant; inspected by the cooperative's warehouse. Platforms report the first two."""

ReplacementStatus = Literal["due", "shipped", "cancelled"]
"""The replacement of an exchange or a reship: the merchant has to send it; the platform records it
as sent; it will not be sent (refused, failed, turned into a refund)."""

GOODS_COME_BACK: frozenset[str] = frozenset({"return", "exchange"})
REPLACEMENT_GOES_OUT: frozenset[str] = frozenset({"exchange", "reship"})


def restock_for_kind(kind: AfterSaleKind, shipped: bool | None) -> RestockType:
    """What an after-sale of ``kind`` does with the goods of its lines (the core times it: a return
    restocks once the goods are back). ``shipped``: whether the order had shipped, where known; a
    refund only on goods that never left releases them, after shipping (or unknown: the safe side)
    it moves nothing. Repairs come back to the buyer, reships and price protection take nothing back."""
    if kind in GOODS_COME_BACK:
        return "return"
    if kind == "refund_only" and shipped is False:
        return "cancel"
    return "no_restock"


def _require_aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime: every snapshot time must be timezone-aware")
    return value


class _Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderLineSnapshot(_Snapshot):
    external_line_id: str
    external_sku_key: str | None = None  # the platform's id of what was sold (variant, sku id)
    merchant_sku: str | None = None  # the merchant's own sku code on the listing, when set
    title: str | None = None
    quantity: int = Field(ge=0)
    unit_price_minor: int
    discount_minor: int = 0
    total_minor: int  # what this line contributes after its discounts
    shipped_quantity: int | None = None  # for partial fulfilment; None means "follows the order"
    listing_ref: dict[str, str] = Field(default_factory=dict)  # what push_stock needs for this listing


class RefundLineSnapshot(_Snapshot):
    external_line_id: str | None = None  # the order line it refunds
    external_sku_key: str | None = None
    merchant_sku: str | None = None
    quantity: int = Field(ge=0)
    amount_minor: int = 0
    restock: RestockType = "no_restock"
    # An exchange whose replacement is another sku (another size, say): the platform's key and the
    # merchant code of what goes out. None: the same listing as the refunded line.
    replacement_sku_key: str | None = None
    replacement_merchant_sku: str | None = None


class RefundSnapshot(_Snapshot):
    platform: str
    external_id: str
    order_external_id: str
    status: RefundStatus
    currency: str
    amount_minor: int = Field(ge=0)
    lines: list[RefundLineSnapshot] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime
    raw: dict[str, Any] | list[Any] | None = Field(default=None, repr=False)
    # The after-sale's kind. None: the platform's payload does not say (an older adapter); the core
    # reads a line that restocks ``return`` as a return, anything else as a refund only.
    kind: AfterSaleKind | None = None
    # True where the kind needs a detail call (``Adapter.fetch_after_sale``; Pinduoduo's list does
    # not document its numbering): money and lines apply at once, restock and replacement wait.
    kind_pending: bool = False
    # Returns and exchanges: the platform's word on the goods. None: it says nothing, and a refund
    # that succeeded with lines restocking ``return`` counts as goods received.
    return_status: ReturnStatus | None = None
    # Exchanges and reships: the replacement's state. None: not agreed yet (nothing to send).
    replacement_status: ReplacementStatus | None = None

    _aware = field_validator("created_at", "updated_at")(_require_aware)


@dataclass(frozen=True)
class AfterSaleDetail:
    """What a detail call adds to a refund snapshot whose ``kind_pending`` was set: its kind, what its
    lines do with their goods, and where goods and replacement stand (``fetch_after_sale``)."""

    kind: AfterSaleKind
    restock: RestockType
    return_status: ReturnStatus | None = None
    replacement_status: ReplacementStatus | None = None
    replacement_sku_key: str | None = None
    replacement_merchant_sku: str | None = None


class OrderSnapshot(_Snapshot):
    platform: str
    external_id: str
    status: OrderStatus
    currency: str
    total_minor: int
    platform_fee_minor: int | None = None  # None when the platform does not report it
    # What the platform pays the shop on top of the buyer's payment (its own coupons); None: not reported.
    subsidy_minor: int | None = None
    lines: list[OrderLineSnapshot]
    refunds: list[RefundSnapshot] = Field(default_factory=list)  # platforms that embed refunds
    created_at: datetime | None = None
    paid_at: datetime | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    cancelled_at: datetime | None = None
    ship_by: datetime | None = None  # the platform's deadline for shipping it, where it sets one
    updated_at: datetime
    raw: dict[str, Any] | list[Any] | None = Field(default=None, repr=False)

    _aware = field_validator(
        "created_at", "paid_at", "shipped_at", "delivered_at", "cancelled_at", "ship_by", "updated_at"
    )(_require_aware)


@dataclass(frozen=True)
class OrderNotice:
    """A push that only names an order: the worker fetches it with ``fetch_order``."""

    external_id: str
    status_hint: str | None = None


@dataclass(frozen=True)
class RefundNotice:
    """A push that only names a refund: the worker fetches it with ``fetch_refund``."""

    external_id: str
    order_external_id: str | None = None


@dataclass(frozen=True)
class OrderDeleted:
    """The platform removed an order (WooCommerce ``order.deleted``): fetch it again to learn why."""

    external_id: str


@dataclass(frozen=True)
class WebhookIdentity:
    """What intake needs before storing a delivery: a de-duplication key and the topic.

    ``dedupe_key`` is the platform's event or delivery id; None means "use a hash of the body".
    ``is_ping`` marks a handshake (WooCommerce's unsigned ping) that is answered 200 and not stored.
    """

    dedupe_key: str | None
    topic: str | None = None
    is_ping: bool = False


@dataclass(frozen=True)
class WebhookDelivery:
    """A parsed delivery: full snapshots, or notices naming what to fetch, or both."""

    topic: str | None
    orders: list[OrderSnapshot] = field(default_factory=list)
    refunds: list[RefundSnapshot] = field(default_factory=list)
    notices: list[OrderNotice | RefundNotice | OrderDeleted] = field(default_factory=list)
    # Orders the delivery changed without carrying them (Shopify's ``refunds/create`` changes its
    # order's totals): refetched by a separate best-effort job; the delivery never waits for them.
    refresh_orders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TimeWindow:
    """A half-open interval [start, end) of platform update times, aware UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeWindow needs aware datetimes")
        if self.end < self.start:
            raise ValueError("TimeWindow ends before it starts")


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list API. ``next_cursor`` is None on the last page of the window."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class StockLevel:
    """Set the sellable quantity of one listing to ``quantity`` (a full, absolute update).

    ``expected_quantity``: what we believe the platform shows now. An adapter declaring
    ``STOCK_COMPARE_AND_SET`` refuses the update (``error_kind`` "conflict") when the platform's
    figure differs, i.e. when it sold something we have not heard of yet; an absolute set would
    otherwise erase that sale from the platform's count and let it sell the unit twice."""

    external_sku_key: str
    quantity: int
    listing_ref: Mapping[str, str] = field(default_factory=dict)
    expected_quantity: int | None = None
    # Where ``STOCK_DELTA`` is declared and ``delta`` is set: add ``delta`` to the platform's count
    # instead of setting ``quantity`` (which is then only what we expect the result to be), under
    # ``idempotency_key`` where the platform takes one (the same key on every retry of one delta).
    delta: int | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class PushResult:
    external_sku_key: str
    ok: bool
    error: str | None = None
    error_kind: str | None = None  # an AdapterError.kind when not ok, or "conflict"
    retry_after_s: float | None = None
    current_quantity: int | None = None  # the platform's figure, when it refused a compare-and-set


@dataclass(frozen=True)
class ShipmentLine:
    """Units of one order line in a parcel. ``line_quantity``: the whole line, so an adapter can tell
    a part shipment from a whole one."""

    external_line_id: str
    quantity: int
    line_quantity: int
    external_sku_key: str | None = None
    listing_ref: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ShipmentUpload:
    """Tell the platform that one parcel of an order left.

    ``reference``: stable for this parcel across retries (Douyin's ``request_id``). ``company``: the
    platform's own id or code of the carrier (PDD ``logistics_id``, TOP/Douyin ``company_code``, the
    Shopify tracking company). ``whole_order``: the parcel holds every unit of the order and no other
    parcel of ours went before it. ``completes_order``: with it, our parcels hold the whole order.
    ``other_tracking_numbers``: our other parcels of the order, which are not "another number".
    ``after_sales_id``: the parcel is the replacement of an exchange or reship (PDD ships it through
    the after-sale, not the order)."""

    reference: str
    order_external_id: str
    carrier: str
    company: str
    tracking_number: str
    lines: tuple[ShipmentLine, ...]
    shipped_at: datetime
    carrier_name: str | None = None
    tracking_url: str | None = None
    whole_order: bool = False
    completes_order: bool = False
    other_tracking_numbers: tuple[str, ...] = ()
    after_sales_id: str | None = None


@dataclass(frozen=True)
class ShipmentResult:
    """``uploaded``: the platform holds the parcel (``already``: it did before this call, read back).
    ``failed``: the platform refuses it or shows another tracking number; an operator decides."""

    status: Literal["uploaded", "failed"]
    platform_ref: str | None = None
    error: str | None = None
    already: bool = False


@dataclass(frozen=True)
class ShippedParcel:
    """A waybill the platform holds for an order; ``external_line_ids`` empty: it does not say which lines."""

    tracking_number: str
    company: str | None = None
    external_line_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShippingState:
    """What the platform shows of an order's shipping, read back before and after an upload."""

    parcels: tuple[ShippedParcel, ...] = ()
    shipped: bool = False  # the platform counts the order as (at least partly) shipped
    closed: str | None = None  # why nothing can ship any more (cancelled, closed), None while it can
    status: str | None = None  # the platform's own status, for messages


@dataclass(frozen=True)
class PlatformCarrier:
    """One entry of a platform's courier company list."""

    company: str  # the id or code a shipment upload takes
    name: str
    code: str | None = None  # the platform's short code where it has one beside an id (PDD)


BillKind = Literal["sale", "refund", "fee", "subsidy", "adjustment", "other"]


@dataclass(frozen=True)
class BillLine:
    """One line of a platform's settlement data or bill, in minor units (``fetch_bills``, or a bill file).

    ``line_id`` is the platform's own identity of the line (settlement number and sub-order, balance
    transaction id, a row's key columns): stable, so importing the same bill twice adds nothing.
    ``amount_minor`` is what the platform paid the shop for it (negative: took). ``gross_minor`` (buyer
    money), ``refund_minor``, ``fee_minor`` and ``subsidy_minor`` are its parts, as far as the platform
    names them; ``fees`` names the fee items (commission, service fee, ...). ``source``: ``platform`` for
    settlement data an API returns, ``bill`` for a bill file."""

    line_id: str
    order_external_id: str | None
    currency: str
    kind: BillKind
    amount_minor: int
    occurred_at: datetime | None = None
    gross_minor: int = 0
    refund_minor: int = 0
    fee_minor: int = 0
    subsidy_minor: int = 0
    fees: Mapping[str, int] = field(default_factory=dict)
    source: Literal["platform", "bill"] = "platform"
    raw: Mapping[str, Any] | None = field(default=None, repr=False)
    # Whether the line states its order's fee (a settlement row does, even when it is 0; a sale movement of
    # a bill whose fees come on rows of their own does not): an order's actual fee is the sum of such lines.
    fee_known: bool = True


@dataclass(frozen=True)
class StoreContext:
    """One store's settings as an adapter sees them. Built by the core; no secrets are logged."""

    store_id: str
    external_shop_id: str | None
    credentials: BaseModel
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str | None:
        value = self.settings.get("base_url")
        return str(value) if value else None


class CredentialsBase(BaseModel):
    """Base of the adapters' credential models: an unknown field is refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class EmptyCredentials(CredentialsBase):
    pass


@runtime_checkable
class Adapter(Protocol):
    """What every platform adapter offers. Methods a capability does not cover may raise
    ``PermanentError``; the core checks ``capabilities`` before calling them."""

    platform: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    max_window: ClassVar[timedelta]  # the widest window its list APIs accept
    Credentials: ClassVar[type[BaseModel]]

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
        """Raise ``SignatureError`` unless one of ``secrets`` signed ``body`` (constant time)."""

    def webhook_identity(self, headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
        """Cheap: the de-duplication key and topic, without mapping the payload."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """Map a verified delivery; raise ``PayloadError`` when it cannot be read."""

    def webhook_ack(self, status: str) -> dict[str, Any]:
        """The JSON answer the platform expects for an accepted or duplicate delivery."""

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None: ...

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]: ...

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None: ...

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]: ...

    async def fetch_after_sale(self, external_id: str, order_external_id: str) -> AfterSaleDetail | None:
        """Where snapshots set ``kind_pending``: the after-sale's kind from the platform's detail call
        (None: the platform cannot show it yet)."""

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]: ...

    async def fetch_stock(self, keys: list[StockLevel]) -> dict[str, int]:
        """Where ``STOCK_READ`` is declared: the platform's current quantity per sku key."""

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        """Where ``SHIPMENTS`` is declared: tell the platform a parcel left, at most once in effect (its
        own idempotency, else read before write). Raises ``TransientError`` to be retried later and
        ``AuthExpiredError`` when the store must be authorised again."""

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        """Where ``SHIPMENTS`` is declared: the waybills and shipping state the platform shows."""

    async def fetch_carriers(self) -> list[PlatformCarrier]:
        """Where ``CARRIER_LIST`` is declared: the platform's courier companies."""

    async def fetch_bills(self, window: TimeWindow, cursor: str | None) -> Page[BillLine]:
        """Where ``BILLS`` is declared: settlement or bill lines of ``window`` (at most ``bill_window`` wide),
        a page at a time."""


class AdapterBase:
    """Shared defaults for built-in adapters; a plug-in may subclass it or implement the protocol."""

    platform: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    max_window: ClassVar[timedelta] = timedelta(days=1)
    bill_window: ClassVar[timedelta] = timedelta(days=1)  # the widest window of one fetch_bills
    local_timezone: ClassVar[tzinfo] = timezone.utc  # where the platform's days and months begin (bills)
    bill_columns: ClassVar[Any] = None  # its bill file's built-in column mapping (adapters.bills.BillColumns)
    Credentials: ClassVar[type[BaseModel]] = EmptyCredentials

    @classmethod
    def store_capabilities(cls, settings: Mapping[str, Any]) -> frozenset[Capability]:
        """What one store of this platform can do, given its settings (a Tmall shop takes idempotent
        stock deltas that a Taobao shop does not). The class's ``capabilities`` by default."""
        return cls.capabilities

    def __init__(self, store: StoreContext, http: httpx.AsyncClient) -> None:
        self.store = store
        self.http = http

    @property
    def credentials(self) -> Any:
        return self.store.credentials

    @property
    def creds(self) -> Any:
        """The store's credentials as this adapter's ``Credentials`` model; the core may hand another model."""
        creds = self.store.credentials
        if isinstance(creds, self.Credentials):
            return creds
        return self.Credentials.model_validate(creds.model_dump() if isinstance(creds, BaseModel) else creds)

    def webhook_ack(self, status: str) -> dict[str, Any]:
        return {"status": status}

    def _unsupported(self, what: str):
        from adapters.errors import PermanentError

        return PermanentError(f"{self.platform} adapter does not support {what}", platform=self.platform)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
        raise self._unsupported("webhooks")

    def webhook_identity(self, headers: Mapping[str, str], body: bytes) -> WebhookIdentity:
        raise self._unsupported("webhooks")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        raise self._unsupported("webhooks")

    async def fetch_order(self, external_id: str) -> OrderSnapshot | None:
        raise self._unsupported("fetch_order")

    async def fetch_orders(self, window: TimeWindow, cursor: str | None) -> Page[OrderSnapshot]:
        raise self._unsupported("fetch_orders")

    async def fetch_refund(self, external_id: str, order_external_id: str | None) -> RefundSnapshot | None:
        raise self._unsupported("fetch_refund")

    async def fetch_refunds(self, window: TimeWindow, cursor: str | None) -> Page[RefundSnapshot]:
        raise self._unsupported("fetch_refunds")

    async def fetch_after_sale(self, external_id: str, order_external_id: str) -> AfterSaleDetail | None:
        raise self._unsupported("fetch_after_sale")

    async def push_stock(self, levels: list[StockLevel]) -> list[PushResult]:
        raise self._unsupported("push_stock")

    async def fetch_stock(self, keys: list[StockLevel]) -> dict[str, int]:
        raise self._unsupported("fetch_stock")

    async def upload_shipment(self, upload: ShipmentUpload) -> ShipmentResult:
        raise self._unsupported("shipments")

    async def fetch_shipping(self, order_external_id: str) -> ShippingState:
        raise self._unsupported("shipments")

    async def fetch_carriers(self) -> list[PlatformCarrier]:
        raise self._unsupported("carrier lists")

    async def fetch_bills(self, window: TimeWindow, cursor: str | None) -> Page[BillLine]:
        raise self._unsupported("bills")


def header(headers: Mapping[str, str], *names: str) -> str | None:
    """Case-insensitive header lookup over several spellings (``X-Shopify-Topic``, ``shopify-topic``)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None:
            return value
    return None
