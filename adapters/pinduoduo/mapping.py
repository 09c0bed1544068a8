"""Pure mapping of PDD order and after-sale payloads onto canonical snapshots.

Field meanings, units and status codes: shared/platforms/china.md 1.3-1.5. Money is yuan unless a
store setting says otherwise; times are Beijing-time strings or unix seconds.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Mapping

from adapters.base import AfterSaleDetail, AfterSaleKind, OrderLineSnapshot, OrderSnapshot, OrderStatus
from adapters.base import RefundLineSnapshot, RefundSnapshot, RefundStatus, ReplacementStatus, RestockType
from adapters.base import ReturnStatus, restock_for_kind
from adapters.base import ShippedParcel, ShippingState
from adapters.errors import PayloadError
from adapters.fields import as_int, ext_id, present
from adapters.units import from_beijing, from_unix, from_unix_ms, to_minor

PLATFORM = "pinduoduo"
CURRENCY = "CNY"
AmountUnit = Literal["yuan", "fen"]

_id = ext_id
_int = partial(as_int, platform=PLATFORM)
_present = partial(present, platform=PLATFORM)

_MS_THRESHOLD = 10**11  # a unix time above this is in milliseconds (year 5138 in seconds)


def _err(message: str) -> PayloadError:
    return PayloadError(message, platform=PLATFORM)


def pdd_time(value: Any) -> datetime | None:
    """A PDD time to aware UTC: ``yyyy-MM-dd HH:mm:ss`` Beijing time, or unix seconds/ms.

    The order APIs document strings (tourze parses ``Y-m-d H:i:s``) and we read them as Beijing time
    [I]; pdd.refund.information.get types its times as epoch numbers. Both are accepted.
    """
    if value is None or value == "" or value == 0 or value == "0":
        return None
    if isinstance(value, bool):
        raise _err(f"not a time: {value!r}")
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(Decimal(str(value).strip()))
        return from_unix_ms(number) if number > _MS_THRESHOLD else from_unix(number)
    return from_beijing(str(value))


def pdd_money(value: Any, unit: AmountUnit = "yuan") -> int:
    """A PDD amount to integer fen. Yuan may arrive as a JSON number or a string [I: SDKs disagree]."""
    if unit == "yuan":
        return to_minor(value, CURRENCY)
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise _err(f"money amount is a boolean: {value!r}")
    try:
        fen = Decimal(str(value))
    except InvalidOperation as exc:
        raise _err(f"not a money amount: {value!r}") from exc
    if not fen.is_finite() or fen != fen.to_integral_value():
        raise _err(f"amount {value!r} in fen is not a whole number")
    return int(fen)


def _merchant_sku(raw: Mapping[str, Any]) -> str | None:
    # outer_id is the merchant's SKU code; outer_goods_id the goods-level code used when the SKU has none.
    for key in ("outer_id", "outer_goods_id"):
        value = raw.get(key)
        if value not in (None, ""):
            return str(value)
    return None


# order_status: 1 待发货 (awaiting shipment), 2 已发货待签收 (shipped), 3 已签收 (received).
_ORDER_STATUS = {1: OrderStatus.PAID, 2: OrderStatus.SHIPPED, 3: OrderStatus.DELIVERED}
REFUND_SUCCEEDED = 4  # order-level refund_status 4 退款成功


def order_status(order_status: Any, refund_status: Any, confirm_status: Any) -> OrderStatus:
    """order_status x refund_status x confirm_status onto the canonical status (china.md 1.4)."""
    # Both lists always carry confirm_status and refund_status; when a payload omits them we read
    # "concluded" and "no after-sale", so order_status alone decides.
    confirm = _int(confirm_status, "confirm_status") if confirm_status not in (None, "") else 1
    if confirm == 2:  # 已取消
        return OrderStatus.CANCELLED
    if confirm == 0:
        # 未成交: not yet a sale (e.g. a group buy still forming, which PDD refunds itself if it fails).
        return OrderStatus.PENDING
    state = _int(order_status, "order_status")
    refund = _int(refund_status, "refund_status") if refund_status not in (None, "") else 1
    if refund == REFUND_SUCCEEDED and state == 1:
        # PDD has no "cancelled" for a paid order: a buyer who backs out before shipment gets a
        # refund-only after-sale. Once it succeeded while the order still awaits shipment, the goods
        # will never ship, so the order is over and its reservation must be released: cancelled.
        # refund_status is order-level, so 4 means the order's refund succeeded; a partial refund of
        # a multi-piece order reading 4 is not documented either way [I] (PDD orders carry one goods).
        return OrderStatus.CANCELLED
    try:
        return _ORDER_STATUS[state]
    except KeyError:
        raise _err(f"unknown order_status {order_status!r}") from None


def map_order(raw: Mapping[str, Any]) -> OrderSnapshot:
    """One order from pdd.order.number.list.increment.get or pdd.order.information.get."""
    order_sn = _present(_id(raw.get("order_sn")), "order without order_sn")
    updated_at = _present(pdd_time(raw.get("updated_at")), f"order {order_sn} has no updated_at")
    status = order_status(raw.get("order_status"), raw.get("refund_status"), raw.get("confirm_status"))

    items = raw.get("item_list") or []
    if not isinstance(items, list):
        raise _err(f"order {order_sn}: item_list is not a list")
    seen: Counter[str] = Counter()
    lines: list[OrderLineSnapshot] = []
    for index, item in enumerate(items):
        sku_id = _id(item.get("sku_id"))
        goods_id = _id(item.get("goods_id"))
        # PDD has no line id: the sku id is one, with the index added when a sku repeats.
        base = sku_id or f"item-{index}"
        line_id = base if seen[base] == 0 else f"{base}:{index}"
        seen[base] += 1
        quantity = _int(item.get("goods_count", 0), "goods_count")
        unit_price = pdd_money(item.get("goods_price"))
        listing_ref = {k: v for k, v in (("goods_id", goods_id), ("sku_id", sku_id)) if v is not None}
        lines.append(OrderLineSnapshot(
            external_line_id=line_id,
            external_sku_key=sku_id,
            merchant_sku=_merchant_sku(item),
            title=item.get("goods_name") or None,
            quantity=quantity,
            unit_price_minor=unit_price,
            # PDD reports discounts per order only (discount_amount, platform_discount,
            # seller_discount); lines stay at list price and the order total is what was paid.
            discount_minor=0,
            total_minor=unit_price * quantity,
            listing_ref=listing_ref,
        ))

    paid_at = pdd_time(raw.get("pay_time"))
    return OrderSnapshot(
        platform=PLATFORM,
        external_id=order_sn,
        status=status,
        currency=CURRENCY,
        total_minor=pdd_money(raw.get("pay_amount")),
        platform_fee_minor=None,  # not in the order APIs; PDD bills fees in its daily bill
        # 平台优惠: the part of the discount PDD pays for, settled to the shop (operations.md 5.1).
        subsidy_minor=pdd_money(raw.get("platform_discount")) if raw.get("platform_discount") not in (None, "") else None,
        lines=lines,
        created_at=pdd_time(raw.get("created_time")),
        paid_at=paid_at,
        shipped_at=pdd_time(raw.get("shipping_time")),
        delivered_at=pdd_time(raw.get("receive_time")),
        ship_by=ship_by(raw.get("last_ship_time"), paid_at),
        updated_at=updated_at,
        raw=dict(raw),
    )


SHIP_WITHIN = timedelta(hours=48)  # PDD's default promise: shipped within 48 hours of payment


def ship_by(last_ship_time: Any, paid_at: datetime | None) -> datetime | None:
    """``last_ship_time`` (承诺发货时间) where the order carries it, else 48 hours after payment [I: the
    default promise; pre-sale goods and shops with other promises carry their own last_ship_time]."""
    return pdd_time(last_ship_time) or (paid_at + SHIP_WITHIN if paid_at is not None else None)


def shipping_state(raw: Mapping[str, Any]) -> ShippingState:
    """What ``pdd.order.information.get`` shows of an order's shipping: its one main waybill
    (``tracking_number`` with ``logistics_id``; extra parcels are not read back) and whether it can ship."""
    state = _int(raw.get("order_status"), "order_status") if raw.get("order_status") not in (None, "") else 1
    confirm = _int(raw.get("confirm_status"), "confirm_status") if raw.get("confirm_status") not in (None, "") else 1
    refund = _int(raw.get("refund_status"), "refund_status") if raw.get("refund_status") not in (None, "") else 1
    number = str(raw.get("tracking_number") or "").strip()
    company = _id(raw.get("logistics_id"))
    closed = None
    if confirm == 2:
        closed = "cancelled (confirm_status 2)"
    elif refund == REFUND_SUCCEEDED and state == 1:
        closed = "refunded before shipping (refund_status 4)"
    return ShippingState(parcels=(ShippedParcel(number, company),) if number else (),
                         shipped=state in (2, 3), closed=closed, status=f"order_status {state}")


# after_sales_status (china.md 1.4). 10 退款成功 is the only "money went back" state.
_REFUND_SUCCEEDED = frozenset({10})
# 9 platform refused, 11 buyer withdrew, 12/13 buyer let it lapse. Also the terminal states of
# after-sales that move no money (16/17 exchange-resend done/failed, 24/25 repair closed/done):
# leaving them "open" would block their order's settlement forever.
_REFUND_CLOSED = frozenset({9, 11, 12, 13, 16, 17, 24, 25})

# after_sales_type as pdd.refund.information.get documents it (operations.md 3.1): 1 refund only,
# 2 return + refund, 3 exchange, 4 reship (补寄), 5 repair. The list request's filter is shifted by one
# (1 all, 2 refund only, ...) and the list *response* documents the field without an enum, so a list
# row's type is not trusted: its snapshot says ``kind_pending`` and the detail call decides.
DETAIL_KINDS: dict[int, AfterSaleKind] = {1: "refund_only", 2: "return", 3: "exchange", 4: "reship", 5: "repair"}

# after_sales_status -> where a return's goods are. 3 return requested and 7 agreed, the buyer still
# to send them: awaiting. 10 refund succeeded: PDD pays a return out once the goods are back [I: a
# speed refund (speed_refund_flag) may pay first]; 16 exchange/reship done and 18 the buyer to confirm
# the exchange the merchant sent: the merchant had the goods back first.
_RETURN_STATUS: dict[int, ReturnStatus] = {3: "awaiting_goods", 7: "awaiting_goods", 10: "received",
                                           16: "received", 18: "received"}
# after_sales_status -> an exchange's or a reship's replacement. 14 exchange/reship awaiting the
# merchant, 15 awaiting the buyer (e.g. sending the goods back), 32 reship awaiting the merchant's
# parcel: it will go out, so it is reserved now. 16 done and 18 awaiting the buyer's confirmation: it
# went out. 17 failed, and the closed states: it will not.
_REPLACEMENT_STATUS: dict[int, ReplacementStatus] = {
    14: "due", 15: "due", 32: "due", 16: "shipped", 18: "shipped",
    17: "cancelled", 9: "cancelled", 11: "cancelled", 12: "cancelled", 13: "cancelled"}


def refund_status(after_sales_status: Any) -> RefundStatus:
    code = _int(after_sales_status, "after_sales_status")
    if code in _REFUND_SUCCEEDED:
        return RefundStatus.SUCCEEDED
    if code in _REFUND_CLOSED:
        return RefundStatus.CLOSED
    return RefundStatus.OPEN


def return_status(after_sales_status: Any) -> ReturnStatus | None:
    return _RETURN_STATUS.get(_int(after_sales_status, "after_sales_status"))


def replacement_status(after_sales_status: Any) -> ReplacementStatus | None:
    return _REPLACEMENT_STATUS.get(_int(after_sales_status, "after_sales_status"))


def detail_kind(after_sales_type: Any) -> AfterSaleKind:
    """``after_sales_type`` in the numbering of the pdd.refund.information.get answer."""
    code = _int(after_sales_type, "after_sales_type")
    try:
        return DETAIL_KINDS[code]
    except KeyError:
        raise _err(f"unknown after_sales_type {after_sales_type!r} in pdd.refund.information.get") from None


def _shipped(raw: Mapping[str, Any], default: bool | None) -> bool | None:
    """The detail's ``shipping_status`` (0 not shipped, 1 shipped) where the payload has it."""
    if raw.get("shipping_status") not in (None, ""):
        return _int(raw["shipping_status"], "shipping_status") == 1
    return default


def map_after_sale_detail(raw: Mapping[str, Any]) -> AfterSaleDetail:
    """The inner object of pdd.refund.information.get: the kind, and what the lines do with their goods."""
    kind = detail_kind(raw.get("after_sales_type"))
    status_code = raw.get("after_sales_status")
    known_status = status_code not in (None, "")
    exchange = raw.get("exchange_shipping_detail") if isinstance(raw.get("exchange_shipping_detail"), Mapping) else {}
    return AfterSaleDetail(
        kind=kind,
        restock=restock_for_kind(kind, _shipped(raw, None)),
        return_status=return_status(status_code) if known_status else None,
        replacement_status=replacement_status(status_code) if known_status else None,
        replacement_sku_key=_id(exchange.get("sku_id_exchange")),
    )


def map_refund(raw: Mapping[str, Any], *, amount_unit: AmountUnit = "yuan", shipped: bool | None = None,
               from_detail: bool = False) -> RefundSnapshot:
    """One after-sale from pdd.refund.list.increment.get, or (``from_detail``) pdd.refund.information.get.

    ``amount_unit``: the list documents ``refund_amount`` as yuan strings, while the detail API types
    the same field as an integer with no unit [I]; the store setting ``refund_amount_unit`` decides.
    A list row's ``after_sales_type`` has no documented numbering: its snapshot has no kind and says
    ``kind_pending``, and its lines restock nothing until the detail call (``map_after_sale_detail``)
    says what they do. A detail payload carries the documented type; ``shipped`` (whether the order
    had shipped) is its ``shipping_status`` when the payload has one.
    """
    refund_id = _id(raw.get("id"))
    order_sn = _id(raw.get("order_sn"))
    if refund_id is None or order_sn is None:
        raise _err("after-sale without id or order_sn")
    updated_at = _present(pdd_time(raw.get("updated_time")), f"after-sale {refund_id} has no updated_time")
    status = refund_status(raw.get("after_sales_status"))
    amount = pdd_money(raw.get("refund_amount"), amount_unit)
    kind: AfterSaleKind | None = None
    restock: RestockType = "no_restock"
    if from_detail:
        kind = detail_kind(raw.get("after_sales_type"))
        restock = restock_for_kind(kind, _shipped(raw, shipped))
    sku_id = _id(raw.get("sku_id"))
    number = raw.get("goods_number")
    line = RefundLineSnapshot(
        # PDD after-sales name the sku, not a line; the order's line id is its sku id (see map_order).
        external_line_id=sku_id,
        external_sku_key=sku_id,
        merchant_sku=_merchant_sku(raw),
        quantity=_int(number, "goods_number") if number not in (None, "") else 0,
        amount_minor=amount,
        restock=restock,
    )
    return RefundSnapshot(
        platform=PLATFORM,
        external_id=refund_id,
        order_external_id=order_sn,
        status=status,
        currency=CURRENCY,
        amount_minor=amount,
        lines=[line],
        created_at=pdd_time(raw.get("created_time") or raw.get("recreated_at")),
        updated_at=updated_at,
        raw=dict(raw),
        kind=kind,
        kind_pending=kind is None,
        return_status=return_status(raw.get("after_sales_status")),
        replacement_status=replacement_status(raw.get("after_sales_status")),
    )
