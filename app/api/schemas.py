"""Bodies of the /v1 routes: what a client sends (``*Create``, ``*Update``) and what it is answered
(``*Public``, lists as ``Page[...]``), so that the OpenAPI document describes both."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Generic, Iterable, Literal, Self, TypeVar

from pydantic import (AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, StrictBool,
                      StrictInt, StrictStr, WithJsonSchema)

from app.domain.allocation import policy_problems
from app.models import (DeliveryAttempt, InboxItem, Listing, Order, OrderLine, Refund, RefundLine, Resync, Settlement,
                        Sku, StockMovement, Store, StoreSettings)

from pydantic import model_serializer, model_validator

from app.models import Carrier, CarrierCode, Shipment, ShipmentLine

T = TypeVar("T")


def _isoformat(value: datetime) -> str:
    return value.isoformat()


# Written by isoformat() rather than pydantic, which says "Z" where the answers always said "+00:00".
Timestamp = Annotated[datetime, PlainSerializer(_isoformat, return_type=str, when_used="json"),
                      WithJsonSchema({"type": "string", "format": "date-time"})]

SkuCode = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]


class _RequestBody(BaseModel):
    # A misspelt field is refused (422), never silently ignored.
    model_config = ConfigDict(extra="forbid")


class _PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None


# -- stock ---------------------------------------------------------------------------------------


class SkuCreate(_RequestBody):
    sku: SkuCode
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]


class SkuPublic(_PublicModel):
    sku: str
    name: str
    created_at: Timestamp


class ReceiptCreate(_RequestBody):
    sku: SkuCode
    quantity: Annotated[StrictInt, Field(gt=0, le=10_000_000)]
    member_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    lot_ref: Annotated[StrictStr, Field(max_length=128)] | None = None


class AdjustmentCreate(_RequestBody):
    sku: SkuCode
    delta: Annotated[StrictInt, Field(ge=-10_000_000, le=10_000_000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]


MAX_ID = 2**63 - 1  # ids are bigint
MAX_SHARE_WEIGHT = 1_000_000
MAX_CAP = 10_000_000  # as much as one receipt may bring in
MAX_STORES_PER_POLICY = 1000


def _store_key(key: str) -> str:
    if int(key) > MAX_ID:
        raise ValueError(f"no store id is larger than {MAX_ID}")
    return key


# A store id written as JSON object keys are: decimal digits, no sign, no leading zero.
StoreKey = Annotated[StrictStr, Field(pattern=r"^[1-9][0-9]{0,18}$"), AfterValidator(_store_key)]


class StoreAllocationRule(_RequestBody):
    """One store's rule for this sku. Under ``shares`` the store's part is a quota (exclusive: the
    parts never add up to more than is available); under ``shared`` parts overlap."""

    percent: Annotated[StrictInt, Field(ge=0, le=100)] | None = Field(
        None, description="The store's part as a percentage of the available stock (under shares: of what a "
                          "lock leaves; the percentages of all stores may not add up to more than 100). Not "
                          "with fixed.")
    fixed: Annotated[StrictInt, Field(ge=0, le=MAX_CAP)] | None = Field(
        None, description="The store's part as a fixed quantity (at most what is available). Under shares the "
                          "quota is brought back up to it when stock comes in. Not with percent.")
    min: Annotated[StrictInt, Field(ge=0, le=MAX_CAP)] | None = Field(
        None, description="The part is at least this, while the stock allows (under shares: taken before any "
                          "other store's percentage or weight).")
    max: Annotated[StrictInt, Field(ge=0, le=MAX_CAP)] | None = Field(
        None, description="The part is at most this (as ``caps``; the lower of the two wins).")
    buffer: Annotated[StrictInt, Field(ge=0, le=MAX_CAP)] | None = Field(
        None, description="Units held back from this store's part (beside the store's safety stock).")
    delist_below: Annotated[StrictInt, Field(ge=0, le=MAX_CAP)] | None = Field(
        None, description="When the store would be offered fewer units than this, it is offered 0.")


class AllocationLock(_RequestBody):
    """Units set aside for one store (a live stream's shop) until ``until``: the store is offered those
    units and no more, the other stores share the rest. Its own sales use them up. At ``until`` the
    lock ends and every shop of the sku is re-planned."""

    store_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
    units: Annotated[StrictInt, Field(ge=1, le=MAX_CAP)]
    until: AwareDatetime = Field(description="When the lock ends (a time with its offset, in the future).")


class AllocationPolicy(_RequestBody):
    """What each shop of a sku is offered. ``shared`` (the default): every shop is offered the whole
    available quantity, less its safety stock and, with ``sales_speed_buffer``, less what the other
    shops are expected to sell before its new figure lands. ``shares``: the available quantity is split
    into quotas per store (a shop's own sales use its quota up; receipts, adjustments, returns and a
    rebalance move quotas), by weight (``shares``), ``caps``, and per-store rules (``stores``).
    The body of earlier versions, ``{"mode", "shares", "caps"}``, means what it meant."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"mode": "shares", "shares": {"2": 3, "3": 1}, "caps": {"3": 200},
         "stores": {"1": {"percent": 50, "min": 20, "buffer": 5, "delist_below": 3}},
         "lock": {"store_id": 1, "units": 200, "until": "2026-12-01T21:00:00+08:00"},
         "sales_speed_buffer": True},
        {"mode": "shared", "stores": {"4": {"max": 100, "delist_below": 5}}}]})

    mode: Literal["shared", "shares"] = "shared"
    shares: dict[StoreKey, Annotated[StrictInt, Field(ge=0, le=MAX_SHARE_WEIGHT)]] = Field(
        default_factory=dict, max_length=MAX_STORES_PER_POLICY,
        description="Under shares: weight per store id of what percent, fixed and min rules leave (no weights "
                    "at all: every store without a rule weighs 1).")
    caps: dict[StoreKey, Annotated[StrictInt, Field(ge=0, le=MAX_CAP)]] = Field(
        default_factory=dict, max_length=MAX_STORES_PER_POLICY,
        description="At most this many units per store id (the same as the store rule's max).")
    stores: dict[StoreKey, StoreAllocationRule] = Field(
        default_factory=dict, max_length=MAX_STORES_PER_POLICY, description="Rules per store id.")
    lock: AllocationLock | None = Field(None, description="Units reserved for a live stream's shop for its duration.")
    sales_speed_buffer: StrictBool = Field(
        True, description="Under shared: each shop is offered less the units the other shops are expected to sell "
                          "before its new figure lands (their recent sales rate times how late their sales reach "
                          "the service plus the push's time to land). On by default.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = policy_problems(self.model_dump(exclude_none=True))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AllocationPublic(_PublicModel):
    """A sku's stored allocation policy (see ``AllocationPolicy``; rules appear only where set)."""

    # Kept whole even if a later version stores more than these keys.
    model_config = ConfigDict(extra="allow")

    mode: str
    shares: dict[str, int]
    caps: dict[str, int]
    stores: dict[str, dict[str, int]] | None = Field(None, description="Rules per store id, where set.")
    lock: dict[str, Any] | None = Field(None, description="The live-stream lock, where set (ended locks are dropped).")
    sales_speed_buffer: bool | None = Field(None, description="false where the buffer was turned off.")

    @model_serializer(mode="wrap")
    def _as_stored(self, handler):
        # The policy as stored: rules that were not set are left out, not answered as null.
        return {k: v for k, v in handler(self).items() if v is not None or k not in ("stores", "lock",
                                                                                     "sales_speed_buffer")}


class StockListingPublic(_PublicModel):
    """What one shop was last told of a sku."""

    store_id: int
    external_sku_key: str
    pushed_quantity: int | None
    pushed_at: Timestamp | None
    push_error: str | None


class StockPublic(_PublicModel):
    sku: str
    name: str
    on_hand: int
    reserved: int
    available: int = Field(description="on_hand less reserved")
    updated_at: Timestamp
    allocation: AllocationPublic | None = Field(
        description="null: the default, shared (every shop is offered all that is available) with the sales-speed "
                    "buffer on")
    listings: list[StockListingPublic]

    @classmethod
    def of(cls, sku: Sku, listings: Iterable[Listing]) -> StockPublic:
        return cls.model_validate({
            "sku": sku.sku, "name": sku.name, "on_hand": sku.on_hand, "reserved": sku.reserved,
            "available": sku.on_hand - sku.reserved, "updated_at": sku.updated_at, "allocation": sku.allocation,
            "listings": list(listings)})


class MovementPublic(_PublicModel):
    """One ledger entry of a sku."""

    id: int
    sku: str
    kind: str
    on_hand_delta: int
    reserved_delta: int
    on_hand_after: int
    reserved_after: int
    cause_key: str
    member_id: str | None
    lot_id: int | None
    order_line_id: int | None
    reason: str | None
    created_at: Timestamp

    @classmethod
    def of(cls, movement: StockMovement, sku_code: str) -> MovementPublic:
        return cls.model_validate({
            "id": movement.id, "sku": sku_code, "kind": movement.kind, "on_hand_delta": movement.on_hand_delta,
            "reserved_delta": movement.reserved_delta, "on_hand_after": movement.on_hand_after,
            "reserved_after": movement.reserved_after, "cause_key": movement.cause_key,
            "member_id": movement.member_id, "lot_id": movement.lot_id, "order_line_id": movement.order_line_id,
            "reason": movement.reason, "created_at": movement.created_at})


class ReceiptPublic(_PublicModel):
    """A member delivery: its movement and lot, and the sku's balances after it."""

    movement: MovementPublic
    lot_id: int | None
    sku: str
    on_hand: int
    reserved: int
    available: int


class AdjustmentPublic(_PublicModel):
    """A stocktake or correction: its movement and the sku's balances after it."""

    movement: MovementPublic
    sku: str
    on_hand: int
    reserved: int
    available: int


# -- stores and listings -------------------------------------------------------------------------


class StoreCreate(_RequestBody):
    platform: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    external_shop_id: Annotated[StrictStr, Field(max_length=255)] | None = None
    webhook_secret: Annotated[StrictStr, Field(max_length=512)] | None = None
    credentials: dict[str, Any] = Field(default_factory=dict)
    settings: StoreSettings = Field(default_factory=StoreSettings)


class StoreUpdate(_RequestBody):
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    external_shop_id: Annotated[StrictStr, Field(max_length=255)] | None = None
    webhook_secret: Annotated[StrictStr, Field(max_length=512)] | None = None
    credentials: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None  # merged over the stored settings, then checked whole


class StoreAuth(_PublicModel):
    """Whether the store can call its platform: ``expiring``: under 24 hours left and no refresh possible;
    ``expired``/``revoked``: a human must authorise it again, its jobs wait meanwhile."""

    status: Literal["ok", "expiring", "expired", "revoked", "not_required"]
    expires_at: Timestamp | None
    refresh_expires_at: Timestamp | None
    last_refreshed_at: Timestamp | None
    error: str | None


class StorePublic(_PublicModel):
    """A shop; its credentials and webhook secrets are never part of it."""

    id: int
    platform: str
    name: str
    external_shop_id: str | None
    settings: dict[str, Any] = Field(description="the settings as stored: options never set are left out")
    webhook_url: str
    has_webhook_secret: bool
    auth: StoreAuth
    auth_status: str = Field(description="the older flat form of auth.status")
    auth_error: str | None
    last_webhook_at: Timestamp | None
    last_poll_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, store: Store, webhook_url: str, auth: Any) -> StorePublic:
        return cls.model_validate({
            "auth": {"status": auth.status, "expires_at": auth.expires_at,
                     "refresh_expires_at": auth.refresh_expires_at, "last_refreshed_at": auth.last_refreshed_at,
                     "error": auth.error},
            "id": store.id, "platform": store.platform, "name": store.name,
            "external_shop_id": store.external_shop_id, "settings": store.settings, "webhook_url": webhook_url,
            "has_webhook_secret": bool(store.webhook_secret), "auth_status": auth.status,
            "auth_error": auth.error, "last_webhook_at": store.last_webhook_at,
            "last_poll_at": store.last_poll_at, "created_at": store.created_at, "updated_at": store.updated_at})


class ListingBinding(_RequestBody):
    external_sku_key: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    sku: Annotated[StrictStr, Field(max_length=64)] | None  # None unbinds
    listing_ref: dict[str, str] | None = None


class ListingPublic(_PublicModel):
    """A shop's sellable item and the cooperative sku it is bound to (null: not bound)."""

    id: int
    store_id: int
    external_sku_key: str
    merchant_sku: str | None
    sku: str | None
    bound_by: str | None
    listing_ref: dict[str, Any]
    pushed_quantity: int | None
    pushed_at: Timestamp | None
    push_error: str | None
    platform_quantity: int | None

    @classmethod
    def of(cls, listing: Listing, sku_code: str | None, **more: Any) -> Self:
        return cls.model_validate({
            "id": listing.id, "store_id": listing.store_id, "external_sku_key": listing.external_sku_key,
            "merchant_sku": listing.merchant_sku, "sku": sku_code, "bound_by": listing.bound_by,
            "listing_ref": listing.listing_ref, "pushed_quantity": listing.pushed_quantity,
            "pushed_at": listing.pushed_at, "push_error": listing.push_error,
            "platform_quantity": listing.platform_quantity, **more})


class ListingBoundPublic(ListingPublic):
    lines_bound: int = Field(description="order lines that were waiting on this binding and took effect now")


# -- orders, refunds and the inbox ---------------------------------------------------------------


class OrderLinePublic(_PublicModel):
    """One line; ``reserved``, ``shipped``, ``restocked`` and ``oversold`` count the units each stock
    effect has covered so far."""

    id: int
    sku: str | None = Field(description="null: the shop's sku key is not bound to a cooperative sku")
    merchant_sku: str | None
    external_sku_key: str | None
    external_line_id: str
    title: str | None
    quantity: int
    unit_price_minor: int
    discount_minor: int
    total_minor: int
    reserved: int
    shipped: int
    restocked: int
    oversold: int
    kind: Literal["sale", "replacement"] = Field(
        description="replacement: what an exchange or a reship sends out again; no money, no sale")
    replacement_of_refund_id: int | None = Field(description="the refund (after-sale) a replacement line is for")

    @classmethod
    def of(cls, line: OrderLine, sku_code: str | None) -> OrderLinePublic:
        return cls.model_validate({
            "id": line.id, "sku": sku_code, "merchant_sku": line.merchant_sku,
            "external_sku_key": line.external_sku_key, "external_line_id": line.external_line_id,
            "title": line.title, "quantity": line.quantity, "unit_price_minor": line.unit_price_minor,
            "discount_minor": line.discount_minor, "total_minor": line.total_minor, "reserved": line.reserved_qty,
            "shipped": line.shipped_qty, "restocked": line.restocked_qty, "oversold": line.oversold_qty,
            "kind": line.kind, "replacement_of_refund_id": line.replacement_of_refund_id})


# -- shipments and carriers ----------------------------------------------------------------------


def _carrier_code(value: str) -> str:
    return value.upper()


# The cooperative's code of a courier (SF, ZTO, ...); matched without case.
CarrierCodeValue = Annotated[StrictStr, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"),
                             AfterValidator(_carrier_code)]
TrackingNumber = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")]
EARLIEST_SHIPMENT = datetime(2000, 1, 1, tzinfo=timezone.utc)
SHIPMENT_CLOCK_SKEW = timedelta(days=1)  # a warehouse clock may run ahead; a parcel from the future may not


def _shipped_at(value: datetime | None) -> datetime | None:
    if value is not None and not (EARLIEST_SHIPMENT <= value <= datetime.now(timezone.utc) + SHIPMENT_CLOCK_SKEW):
        raise ValueError("shipped_at must lie between 2000-01-01 and now")
    return value


class ShipmentLineCreate(_RequestBody):
    line_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID, description="an id from the order's lines")]
    quantity: Annotated[StrictInt, Field(ge=1, le=10_000_000)]


class ShipmentCreate(_RequestBody):
    """One parcel: ``lines`` omitted ships every unit of the order not in a parcel yet."""

    carrier: CarrierCodeValue
    tracking_number: TrackingNumber
    lines: Annotated[list[ShipmentLineCreate], Field(min_length=1, max_length=500)] | None = None
    shipped_at: Annotated[AwareDatetime | None, AfterValidator(_shipped_at)] = None

    @model_validator(mode="after")
    def _lines_once(self) -> Self:
        if self.lines is not None and len({line.line_id for line in self.lines}) != len(self.lines):
            raise ValueError("lines: each line_id once")
        return self


class ShipmentLinePublic(_PublicModel):
    line_id: int = Field(description="the order line")
    quantity: int


class ShipmentPublic(_PublicModel):
    """``pending``: being uploaded; ``uploaded``: the platform has it; ``failed``: the platform refused it or
    shows another tracking number (``error`` says which), an operator decides; ``dead``: retries used up."""

    id: int
    order_id: int
    store_id: int
    carrier: str
    tracking_number: str
    lines: list[ShipmentLinePublic]
    status: Literal["pending", "uploaded", "failed", "dead"]
    attempts: int
    platform_ref: str | None = Field(description="the platform's id of the parcel, where it gives one")
    error: str | None
    uploaded_at: Timestamp | None
    shipped_at: Timestamp
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, shipment: Shipment, lines: Iterable[ShipmentLine]) -> Self:
        return cls.model_validate({
            "id": shipment.id, "order_id": shipment.order_id, "store_id": shipment.store_id,
            "carrier": shipment.carrier, "tracking_number": shipment.tracking_number,
            "lines": [{"line_id": line.order_line_id, "quantity": line.quantity} for line in lines],
            "status": shipment.status, "attempts": shipment.attempts, "platform_ref": shipment.platform_ref,
            "error": shipment.error, "uploaded_at": shipment.uploaded_at, "shipped_at": shipment.shipped_at,
            "created_at": shipment.created_at, "updated_at": shipment.updated_at})


class ShipmentAttemptPublic(_PublicModel):
    attempt_no: int
    started_at: Timestamp
    duration_ms: int | None
    outcome: str = Field(description="in_flight, uploaded, failed, retry, waiting or dead")
    error_kind: str | None
    detail: str | None


class ShipmentDetail(ShipmentPublic):
    attempt_history: list[ShipmentAttemptPublic]


class CarrierCodePublic(_PublicModel):
    company: str = Field(description="the platform's id or code of the carrier (what an upload names)")
    company_name: str | None = Field(description="the platform's own name for it, where read from its list")
    source: Literal["builtin", "platform", "operator"]
    updated_at: Timestamp


class CarrierPublic(_PublicModel):
    code: str
    name: str
    tracking_url: str | None = Field(description="``{number}`` stands for the tracking number")
    builtin: bool
    platforms: dict[str, CarrierCodePublic]

    @classmethod
    def of(cls, carrier: Carrier, codes: Iterable[CarrierCode]) -> Self:
        return cls.model_validate({
            "code": carrier.code, "name": carrier.name, "tracking_url": carrier.tracking_url,
            "builtin": carrier.builtin, "platforms": {c.platform: {
                "company": c.company, "company_name": c.company_name, "source": c.source,
                "updated_at": c.updated_at} for c in codes}})


PlatformName = Annotated[StrictStr, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_\-]+$")]


class CarrierUpdate(_RequestBody):
    """A carrier by code; a new code needs a ``name``. ``platforms`` maps a platform to its company id or
    code for the carrier (``null`` removes it); what is set here wins over the platforms' own lists."""

    code: CarrierCodeValue
    name: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    tracking_url: Annotated[StrictStr, Field(min_length=1, max_length=512, pattern=r"^https?://")] | None = None
    platforms: dict[PlatformName, Annotated[StrictStr, Field(min_length=1, max_length=128)] | None] = Field(
        default_factory=dict, max_length=50)


class OrderRefundPublic(_PublicModel):
    """A refund of an order, in brief (``GET /v1/refunds`` has it whole)."""

    id: int
    external_id: str
    status: str
    amount_minor: int


def _fee_source(source: str | None) -> str | None:
    return None if source is None else ("bill" if source == "bill" else "platform")


class OrderFeeView(BaseModel):
    """An order's fee as an answer shows it (the orders route works it out with the store's settings)."""

    fee_minor: int | None
    source: str | None
    awaiting: bool = False
    estimate_from: datetime | None = None


class OrderPublic(_PublicModel):
    id: int
    store_id: int
    platform: str
    external_id: str
    status: str
    currency: str
    total_minor: int
    refunded_minor: int
    platform_fee_minor: int | None = Field(
        description="the platform's actual fee, or (fee_source estimate) the store's estimate; null while unknown")
    fee_source: Literal["platform", "bill", "estimate"] | None = Field(
        description="platform: the order's payload or the platform's settlement data; bill: an imported bill")
    subsidy_minor: int = Field(description="what the platform pays on top of the buyer's money (its coupons)")
    awaiting_fee: bool = Field(description="due for settlement, but waiting for the platform's actual fee")
    fee_estimate_from: Timestamp | None = Field(
        description="when settlement uses the estimate if no actual fee came (null: not waiting, or no estimate)")
    lines: list[OrderLinePublic]
    refunds: list[OrderRefundPublic]
    created_at: Timestamp = Field(description="when the buyer placed it (when it reached us, if the shop won't say)")
    paid_at: Timestamp | None
    shipped_at: Timestamp | None
    delivered_at: Timestamp | None
    cancelled_at: Timestamp | None
    updated_at: Timestamp = Field(description="the shop's own last change")
    settlement_id: str | None
    oversold: bool
    unbound: bool
    seen_via: str
    ship_by: Timestamp | None = Field(description="the platform's deadline for shipping it, where it sets one")
    shipments: list[ShipmentPublic] = Field(description="our parcels of it (POST /v1/orders/{id}/shipments)")

    @classmethod
    def of(cls, order: Order, lines: list[OrderLinePublic], refunds: Iterable[Refund],
           shipments: Iterable[ShipmentPublic] = (), fee: OrderFeeView | None = None) -> OrderPublic:
        fee = fee or OrderFeeView(order.platform_fee_minor, _fee_source(order.fee_source))
        return cls.model_validate({
            "id": order.id, "store_id": order.store_id, "platform": order.platform,
            "external_id": order.external_id, "status": order.status, "currency": order.currency,
            "total_minor": order.total_minor, "refunded_minor": order.refunded_minor,
            "platform_fee_minor": fee.fee_minor, "fee_source": fee.source, "subsidy_minor": order.subsidy_minor,
            "awaiting_fee": fee.awaiting, "fee_estimate_from": fee.estimate_from,
            "lines": lines, "refunds": list(refunds),
            "created_at": order.placed_at or order.created_at, "paid_at": order.paid_at,
            "shipped_at": order.shipped_at, "delivered_at": order.delivered_at,
            "cancelled_at": order.cancelled_at, "updated_at": order.platform_updated_at,
            "settlement_id": order.settlement_id, "oversold": order.oversold, "unbound": order.has_unbound,
            "seen_via": order.seen_via, "ship_by": order.ship_by, "shipments": list(shipments)})


class RefundLinePublic(_PublicModel):
    """``returned`` units came back; ``held`` of them wait apart for inspection; ``good`` and
    ``defective`` are the inspection's verdicts (a defective unit is written off)."""

    line_id: int | None = Field(description="the order line refunded (null: not matched yet)")
    sku: str | None
    quantity: int
    restock: bool = Field(description="whether the goods come back to stock")
    restock_type: str = Field(description="cancel, return or no_restock")
    amount_minor: int
    external_line_id: str | None
    returned: int
    held: int
    good: int
    defective: int

    @classmethod
    def of(cls, line: RefundLine, sku_code: str | None) -> RefundLinePublic:
        return cls.model_validate({
            "line_id": line.order_line_id, "sku": sku_code, "quantity": line.quantity,
            "restock": line.restock != "no_restock", "restock_type": line.restock, "amount_minor": line.amount_minor,
            "external_line_id": line.external_line_id, "returned": line.returned_qty, "held": line.held_qty,
            "good": line.good_qty, "defective": line.defective_qty})


class RefundPublic(_PublicModel):
    id: int
    store_id: int
    order_id: int | None = Field(description="null: its order has not arrived yet")
    order_external_id: str
    external_id: str
    status: str
    currency: str
    amount_minor: int
    kind: str | None = Field(description="refund_only, return, exchange, reship, repair or price_protection; "
                                         "null while kind_pending")
    kind_pending: bool = Field(description="the platform's detail call that tells the kind is still due; "
                                           "restock and replacement wait for it")
    return_status: str | None = Field(description="returns and exchanges: awaiting_goods, received or inspected")
    replacement_status: str | None = Field(description="exchanges and reships: due, shipped or cancelled")
    lines: list[RefundLinePublic]
    updated_at: Timestamp
    settlement_id: str | None

    @classmethod
    def of(cls, refund: Refund, lines: list[RefundLinePublic]) -> RefundPublic:
        return cls.model_validate({
            "id": refund.id, "store_id": refund.store_id, "order_id": refund.order_id,
            "order_external_id": refund.order_external_id, "external_id": refund.external_id,
            "status": refund.status, "currency": refund.currency, "amount_minor": refund.amount_minor,
            "kind": refund.kind, "kind_pending": refund.kind_pending, "return_status": refund.return_status,
            "replacement_status": refund.replacement_status,
            "lines": lines, "updated_at": refund.platform_updated_at, "settlement_id": refund.settlement_id})


class InspectedLine(_RequestBody):
    line_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID, description="the order line the goods came from")]
    good: Annotated[StrictInt, Field(ge=0, le=10_000_000, description="units fit to sell again")]
    defective: Annotated[StrictInt, Field(ge=0, le=10_000_000, description="units written off, never sellable")]


class InspectionCreate(_RequestBody):
    """What the warehouse found in a return's goods; each call adds to what was inspected before."""

    lines: Annotated[list[InspectedLine], Field(min_length=1, max_length=1000)]


class InboxItemPublic(_PublicModel):
    """A webhook delivery as stored; its body is not echoed, only its size."""

    id: int
    store_id: int
    platform: str
    topic: str | None
    dedupe_key: str
    status: str
    attempts: int
    error: str | None
    received_at: Timestamp
    processed_at: Timestamp | None
    size: int = Field(description="bytes of the delivery's body")

    @classmethod
    def of(cls, item: InboxItem) -> InboxItemPublic:
        return cls.model_validate({
            "id": item.id, "store_id": item.store_id, "platform": item.platform, "topic": item.topic,
            "dedupe_key": item.dedupe_key, "status": item.status, "attempts": item.attempts, "error": item.error,
            "received_at": item.received_at, "processed_at": item.processed_at, "size": len(item.body or b"")})


# -- resyncs and reconciliation ------------------------------------------------------------------


class ResyncCreate(_RequestBody):
    store_id: Annotated[int, Field(ge=1, le=MAX_ID)]
    resource: Literal["orders", "refunds", "inventory", "bills"]
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


class ResyncProgress(_PublicModel):
    pages: int
    fetched: int
    created: int
    updated: int
    unchanged: int
    failed: int
    windows: int | None = Field(description="time windows the platform's list API needs for the span")
    window: int | None = Field(description="index of the window being fetched")


class PushResultPublic(_PublicModel):
    """What an inventory resync pushed to one listing."""

    # Answered only where the push got as far as the listing; a push refused whole names no listing.
    listing_id: int | None = None
    external_sku_key: str
    quantity: int
    ok: bool
    error: str | None


# Routes answer it with unset fields excluded: a ``results`` entry may have no ``listing_id``.
class ResyncPublic(_PublicModel):
    """A resync job and its progress."""

    id: int
    store_id: int
    resource: str
    since: Timestamp | None
    until: Timestamp | None
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: ResyncProgress
    results: list[PushResultPublic] = Field(description="inventory: one result per listing pushed")
    error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None

    @classmethod
    def of(cls, resync: Resync) -> ResyncPublic:
        position = resync.position or {}
        return cls.model_validate({
            "id": resync.id, "store_id": resync.store_id, "resource": resync.resource, "since": resync.since,
            "until": resync.until, "status": resync.status,
            "progress": {"pages": resync.pages, "fetched": resync.fetched, "created": resync.created,
                         "updated": resync.updated, "unchanged": resync.unchanged, "failed": resync.failed,
                         "windows": position.get("windows"), "window": position.get("window")},
            "results": resync.results or [], "error": resync.error, "created_at": resync.created_at,
            "started_at": resync.started_at, "finished_at": resync.finished_at})


class StatusDifference(_PublicModel):
    external_id: str
    platform_status: str
    status: str = Field(description="the status coopsync holds")


class ListingStockComparison(_PublicModel):
    external_sku_key: str
    pushed_quantity: int | None
    wanted_quantity: int
    platform_quantity: int | None = Field(description="null: the platform did not report this listing")
    matches: bool


class ReconciliationResync(_PublicModel):
    """The body of ``POST /v1/resyncs`` that would take the missing orders in."""

    store_id: int
    resource: str
    since: Timestamp
    until: Timestamp


class ReconciliationReport(_PublicModel):
    """What the platform lists in a window against what coopsync holds, orders and stock."""

    store_id: int
    since: Timestamp
    until: Timestamp
    platform_orders: int = Field(description="orders the platform lists in the window")
    missing_here: list[str] = Field(description="external ids the platform lists and coopsync does not hold")
    status_differs: list[StatusDifference]
    stock: list[ListingStockComparison] = Field(description="empty when the platform cannot report stock")
    truncated: bool = Field(description="the page limit was reached before the end of the window")
    resync: ReconciliationResync
    in_sync: bool


# -- settlements and dividend deliveries ---------------------------------------------------------


class StatementLine(_PublicModel):
    """An order settled in a statement, or a late refund taken off it (negative net)."""

    model_config = ConfigDict(extra="allow")

    order_id: int
    store_id: int
    external_id: str
    kind: str
    gross_minor: int
    refunds_minor: int
    platform_fees_minor: int
    net_minor: int
    # Only a late refund's line has these; an order's line leaves them out (unset, not null).
    refund_id: int | None = None
    refund_external_id: str | None = None
    # Statements since migration 0011: kind is sale, refund or fee_adjustment; gross includes the subsidy.
    subsidy_minor: int | None = None
    fee_source: Literal["platform", "bill", "estimate"] | None = None
    # A fee adjustment: what earlier statements counted, and the actual figures now.
    fees_counted_before_minor: int | None = None
    fee_actual_minor: int | None = None
    subsidy_counted_before_minor: int | None = None
    subsidy_actual_minor: int | None = None


class MemberSharePublic(_PublicModel):
    member_id: str = Field(description='"cooperative" for stock no member supplied')
    net_minor: int


class StatementDelivery(_PublicModel):
    status: str = Field(description="pending, delivered or dead")
    attempts: int
    delivered_at: Timestamp | None


# Routes answer it with unset fields excluded, so that the frozen body comes out exactly as it was sent.
class SettlementPublic(_PublicModel):
    """A statement: its body exactly as sent to the dividend endpoint, then ``run_id`` and the live
    ``delivery`` state (which is not part of what is sent)."""

    # A body frozen by another version may hold keys this one does not name: they are answered as sent.
    model_config = ConfigDict(extra="allow")

    id: str
    currency: str
    gross_minor: int
    refunds_minor: int
    platform_fees_minor: int
    net_minor: int
    # Statements since migration 0011: fees = actual + estimated, and gross includes the subsidies.
    platform_fees_actual_minor: int | None = None
    platform_fees_estimated_minor: int | None = None
    subsidies_minor: int | None = None
    orders: list[StatementLine]
    member_shares: list[MemberSharePublic]
    # The frozen text, not a datetime: re-serialising it could only make it differ from what was sent.
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    run_id: str
    delivery: StatementDelivery

    @classmethod
    def of(cls, statement: Settlement) -> SettlementPublic:
        return cls.model_validate({
            **statement.body, "run_id": statement.run_id,
            "delivery": {"status": statement.delivery_status, "attempts": statement.delivery_attempts,
                         "delivered_at": statement.delivered_at}})


class SettlementRunPublic(_PublicModel):
    """The statements a run wrote (201), or none and a null ``run_id`` (200)."""

    run_id: str | None
    items: list[SettlementPublic]


class DeliveryAttemptPublic(_PublicModel):
    """One POST of a statement to the dividend endpoint."""

    attempt_no: int
    started_at: Timestamp
    duration_ms: int
    status_code: int | None
    outcome: str
    error_kind: str | None
    response_excerpt: str | None


class DividendDeliveryPublic(_PublicModel):
    """A statement's delivery; its ``id``, ``settlement_id`` and ``idempotency_key`` are the statement id."""

    id: str
    settlement_id: str
    idempotency_key: str
    currency: str
    net_minor: int
    status: str = Field(description="pending, delivered or dead")
    attempts: int
    created_at: Timestamp
    delivered_at: Timestamp | None
    last_attempt: DeliveryAttemptPublic | None

    @classmethod
    def of(cls, statement: Settlement, last: DeliveryAttempt | None, **more: Any) -> Self:
        return cls.model_validate({
            "id": statement.id, "settlement_id": statement.id, "idempotency_key": statement.id,
            "currency": statement.currency, "net_minor": statement.net_minor, "status": statement.delivery_status,
            "attempts": statement.delivery_attempts, "created_at": statement.created_at,
            "delivered_at": statement.delivered_at, "last_attempt": last, **more})


class DividendDeliveryDetail(DividendDeliveryPublic):
    attempt_history: list[DeliveryAttemptPublic]


# -- API tokens ----------------------------------------------------------------------------------


class ApiTokenPublic(_PublicModel):
    """An API token as stored: never the token itself, nor its hash."""

    id: int
    name: str
    scopes: list[str]
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(description="to the minute: written at most once a minute")
    revoked_at: Timestamp | None

    @classmethod
    def of(cls, token: Any) -> ApiTokenPublic:
        return cls.model_validate({
            "id": token.id, "name": token.name, "scopes": token.scopes.split(), "created_at": token.created_at,
            "last_used_at": token.last_used_at, "revoked_at": token.revoked_at})


# -- shop authorisation --------------------------------------------------------------------------


class AuthorizePublic(_PublicModel):
    """Where the shop's owner consents; null for a self-use app whose token was created directly."""

    authorize_url: str | None
    state_expires_at: Timestamp | None
    connected: bool = Field(description="true when the token exists already (self-use app)")
    detail: str


class ConnectedPublic(_PublicModel):
    """The answer of the OAuth callback: which shop was connected."""

    status: Literal["connected"]
    store_id: int
    platform: str
    name: str
    shop_id: str | None
    shop_name: str | None
    auth: StoreAuth


# -- bills and payouts ---------------------------------------------------------------------------


class BillLinePublic(_PublicModel):
    """A line of the platform's settlement data or of a bill file; ``order_id`` null: no order matches."""

    id: int
    store_id: int
    line_key: str = Field(description="the platform's identity of the line; the same line is never taken twice")
    order_external_id: str | None
    order_id: int | None
    source: Literal["platform", "bill"]
    kind: str = Field(description="sale, refund, fee, subsidy, adjustment or other")
    currency: str
    amount_minor: int = Field(description="what the platform paid the shop for this line (negative: took)")
    gross_minor: int
    refund_minor: int
    fee_minor: int
    subsidy_minor: int
    fees: dict[str, int] = Field(description="fee items by the platform's names")
    occurred_at: Timestamp | None
    bill_import_id: int | None


class BillImportPublic(_PublicModel):
    """An uploaded bill file."""

    id: int
    store_id: int
    name: str | None
    digest: str = Field(description="sha256 of the file; the same file again is this import")
    lines: int
    new_lines: int = Field(description="lines no earlier import or pull held")
    matched: int = Field(description="new lines whose order coopsync holds")
    created_at: Timestamp


class BillUploadPublic(BillImportPublic):
    """An upload's answer: 201 with what it took in, or 200 when this very file was imported before
    (``duplicate``: nothing changed)."""

    duplicate: bool
    duplicate_lines: int = Field(description="lines of this file held already (from another import or a pull)")
    unmatched: list[BillLinePublic] = Field(description="new lines that match no order (the first 100)")


class PayoutDifferencePublic(_PublicModel):
    kind: Literal["gross", "refund", "fee", "subsidy", "other", "not_settled", "missing_payout", "missing_order"]
    platform_minor: int | None
    statements_minor: int | None
    difference_minor: int = Field(description="platform less statements")


class PayoutOrderPublic(_PublicModel):
    order_id: int
    external_id: str
    currency: str
    paid_minor: int = Field(description="what the platform paid for it, all its lines")
    computed_minor: int = Field(description="its net in the statements: sale, late refunds, fee adjustments")
    difference_minor: int
    differences: list[PayoutDifferencePublic]
    settlement_ids: list[str]


class PayoutTotalPublic(_PublicModel):
    currency: str
    paid_minor: int
    computed_minor: int
    difference_minor: int


class PayoutReportPublic(_PublicModel):
    """``GET /v1/stores/{id}/payouts?period=YYYY-MM``: the platform's payments against the statements,
    order by order (orders with a bill line in the period, or settled by a statement of the period)."""

    store_id: int
    period: str
    timezone: str = Field(description="the platform's time zone, in which the period's days begin")
    orders: list[PayoutOrderPublic]
    unmatched: list[BillLinePublic] = Field(description="lines of the period naming no order coopsync holds "
                                                        "(a missing_order difference each)")
    totals: list[PayoutTotalPublic]
    in_balance: bool
    truncated: bool
