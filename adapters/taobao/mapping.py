"""Pure mapping of Taobao/Tmall TOP trades and refunds onto canonical snapshots.

Fields, units (yuan strings) and status tables: shared/platforms/china.md 2.3-2.5. Times are
``yyyy-MM-dd HH:mm:ss`` in Beijing time.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

from adapters.base import GOODS_COME_BACK, AfterSaleKind, OrderLineSnapshot, OrderSnapshot, OrderStatus
from adapters.base import RefundLineSnapshot, RefundSnapshot, RefundStatus, ReplacementStatus, RestockType
from adapters.base import ReturnStatus
from adapters.errors import PayloadError
from adapters.fields import as_int, ext_id, present
from adapters.units import from_beijing, to_minor

PLATFORM = "taobao"
CURRENCY = "CNY"

_id = ext_id
_int = partial(as_int, platform=PLATFORM)
_present = partial(present, platform=PLATFORM)


def _err(message: str) -> PayloadError:
    return PayloadError(message, platform=PLATFORM)


def _money(value: Any) -> int:
    return to_minor(value, CURRENCY)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def unwrap_list(container: Any, key: str) -> list[dict[str, Any]]:
    """TOP wraps lists as ``{"trade": [...]}`` unless ``simplify=true`` was sent; accept both."""
    if container is None:
        return []
    if isinstance(container, list):
        return container
    if isinstance(container, dict):
        inner = container.get(key, [])
        if isinstance(inner, dict):  # a single row may come as an object
            return [inner]
        if isinstance(inner, list):
            return inner
    raise _err(f"cannot read a list of {key!r} from {type(container).__name__}")


TRADE_STATUS: dict[str, OrderStatus] = {
    "TRADE_NO_CREATE_PAY": OrderStatus.PENDING,
    "WAIT_BUYER_PAY": OrderStatus.PENDING,
    # Payment not yet confirmed (international card; pre-authorised contract): not paid yet.
    "PAY_PENDING": OrderStatus.PENDING,
    "WAIT_PRE_AUTH_CONFIRM": OrderStatus.PENDING,
    "WAIT_SELLER_SEND_GOODS": OrderStatus.PAID,
    # Partly shipped: the order stays paid and each line says what shipped (shipped_quantity).
    "SELLER_CONSIGNED_PART": OrderStatus.PAID,
    "PAID_FORBID_CONSIGN": OrderStatus.PAID,  # paid, shipping blocked (group buy, control)
    "WAIT_BUYER_CONFIRM_GOODS": OrderStatus.SHIPPED,
    "TRADE_BUYER_SIGNED": OrderStatus.SHIPPED,  # signed for, cash on delivery only
    "TRADE_FINISHED": OrderStatus.DELIVERED,
    "TRADE_CLOSED": OrderStatus.CANCELLED,  # closed after a full refund
    "TRADE_CLOSED_BY_TAOBAO": OrderStatus.CANCELLED,  # closed before payment
}
# Sub-order statuses that mean "this line left the warehouse".
_LINE_SHIPPED = frozenset({"WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED"})


def trade_status(status: Any) -> OrderStatus:
    try:
        return TRADE_STATUS[str(status)]
    except KeyError:
        raise _err(f"unknown trade status {status!r}") from None


def map_trade(raw: Mapping[str, Any]) -> OrderSnapshot:
    """One trade from taobao.trades.sold.increment.get or taobao.trade.fullinfo.get."""
    # tid_str: int64 safe everywhere
    tid = _present(_id(raw.get("tid_str")) or _id(raw.get("tid")), "trade without tid")
    updated_at = _present(from_beijing(raw.get("modified")), f"trade {tid} has no modified time")
    status = trade_status(raw.get("status"))
    per_line = str(raw.get("status")) == "SELLER_CONSIGNED_PART"

    lines: list[OrderLineSnapshot] = []
    for index, order in enumerate(unwrap_list(raw.get("orders"), "order")):
        oid = _id(order.get("oid_str")) or _id(order.get("oid")) or f"{tid}-{index}"
        num_iid = _id(order.get("num_iid"))
        sku_id = _id(order.get("sku_id"))
        quantity = _int(order.get("num", 0), "num")
        unit_price = _money(order.get("price"))
        # divide_order_fee is the line's paid amount after the trade's discounts are shared out;
        # payment is the fallback (on a one-line trade it may include postage [I]).
        paid = order.get("divide_order_fee")
        total = _money(paid if paid not in (None, "") else order.get("payment"))
        shipped_quantity = None
        if per_line:
            line_shipped = str(order.get("status")) in _LINE_SHIPPED or bool(order.get("consign_time"))
            shipped_quantity = quantity if line_shipped else 0
        ref = {"num_iid": num_iid} if num_iid else {}
        if sku_id:
            ref["sku_id"] = sku_id
        merchant_sku = order.get("outer_sku_id") or order.get("outer_iid") or None
        lines.append(OrderLineSnapshot(
            external_line_id=oid,
            external_sku_key=sku_id or num_iid,
            merchant_sku=str(merchant_sku) if merchant_sku else None,
            title=order.get("title") or None,
            quantity=quantity,
            unit_price_minor=unit_price,
            # Negative when the seller raised the price (adjust_fee > 0): the parts still add up.
            discount_minor=unit_price * quantity - total,
            total_minor=total,
            shipped_quantity=shipped_quantity,
            listing_ref=ref,
        ))

    end_time = from_beijing(raw.get("end_time"))  # when the trade succeeded or was closed
    fee, subsidy = trade_fees(raw, status)
    return OrderSnapshot(
        platform=PLATFORM,
        external_id=tid,
        status=status,
        currency=CURRENCY,
        total_minor=_money(raw.get("payment")),
        platform_fee_minor=fee,
        subsidy_minor=subsidy,
        lines=lines,
        created_at=from_beijing(raw.get("created")),
        paid_at=from_beijing(raw.get("pay_time")),
        shipped_at=from_beijing(raw.get("consign_time")),
        delivered_at=end_time if status is OrderStatus.DELIVERED else None,
        cancelled_at=end_time if status is OrderStatus.CANCELLED else None,
        updated_at=updated_at,
        raw=dict(raw),
    )


def trade_fees(raw: Mapping[str, Any], status: OrderStatus) -> tuple[int | None, int | None]:
    """The trade's own fee and subsidy (operations.md 5.2): ``commission_fee`` (交易佣金) is taken when the
    buyer confirms, so it counts once the trade is finished (before, a "0.00" only means "not yet");
    ``platform_subsidy_fee`` (平台补贴) is what the platform adds to the buyer's payment. Tmall's service
    fees and points are not in the trade: they stay estimates (or come from an imported bill)."""
    fee = None
    if status is OrderStatus.DELIVERED and raw.get("commission_fee") not in (None, ""):
        fee = _money(raw.get("commission_fee"))
    subsidy = _money(raw.get("platform_subsidy_fee")) if raw.get("platform_subsidy_fee") not in (None, "") else None
    return fee, subsidy


_REFUND_STATUS = {
    "SUCCESS": RefundStatus.SUCCEEDED,
    "CLOSED": RefundStatus.CLOSED,
    "SELLER_REFUSE_BUYER": RefundStatus.CLOSED,
}
# The order states of a refund's order in which nothing had been consigned.
_NOT_CONSIGNED = frozenset({"WAIT_SELLER_SEND_GOODS", "PAID_FORBID_CONSIGN", "WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY"})


def refund_status(status: Any) -> RefundStatus:
    """SUCCESS -> succeeded; CLOSED, SELLER_REFUSE_BUYER -> closed; every other state is in progress."""
    return _REFUND_STATUS.get(str(status), RefundStatus.OPEN)


def refund_restock(raw: Mapping[str, Any]) -> RestockType:
    """Whether the refunded goods move stock.

    - ``return``: the buyer sent the goods back (good_status BUYER_RETURNED_GOODS) or the refund
      requires a return (has_good_return): TOP only pays such a refund after the seller confirmed
      the goods, so at SUCCESS they are back;
    - ``cancel``: a refund during the sale (refund_phase onsale) whose order had not been consigned;
    - ``no_restock`` otherwise (refund only after shipping, price differences).

    [I] order_status is the order's state as the refund reports it; after a pre-shipment refund
    succeeds it may already read TRADE_CLOSED, which we cannot tell from a post-shipment close, so it
    maps to no_restock. When that closes the whole trade, the trade maps to cancelled, which releases
    the reservation anyway; only a partial pre-shipment refund is left for an operator to see.
    """
    if str(raw.get("good_status")) == "BUYER_RETURNED_GOODS" or _truthy(raw.get("has_good_return")):
        return "return"
    if str(raw.get("refund_phase")) == "onsale" and str(raw.get("order_status")) in _NOT_CONSIGNED:
        return "cancel"
    return "no_restock"


# dispute_type (operations.md 3.2, TOP-META model/tbrefund/Refund.go). OTHERS, or a payload without
# the field (it is only returned when asked for in ``fields``), is read from the goods: see refund_kind.
_DISPUTE_KINDS: dict[str, AfterSaleKind] = {
    "REFUND": "refund_only", "REFUND_AND_RETURN": "return", "TMALL_EXCHANGE": "exchange",
    "TAOBAO_EXCHANGE": "exchange", "REPAIR": "repair", "RESHIPPING": "reship",
}
# status -> where a return's (or an exchange's) goods are. WAIT_SELLER_CONFIRM_GOODS: the buyer sent
# them, the seller has not confirmed receipt (the warehouse's inspection is the earlier signal).
# WAIT_SELLER_CONSIGN_GOODS / WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS: the seller confirmed the
# exchange's goods and sends (sent) the replacement. SUCCESS: TOP pays a return only after the seller
# confirmed the goods.
_RETURN_STATUS: dict[str, ReturnStatus] = {
    "WAIT_SELLER_AGREE": "awaiting_goods", "WAIT_BUYER_RETURN_GOODS": "awaiting_goods",
    "WAIT_SELLER_CONFIRM_GOODS": "awaiting_goods", "WAIT_SELLER_CONSIGN_GOODS": "received",
    "WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS": "received", "SUCCESS": "received",
}
# status -> an exchange's or a reship's replacement (the list filter's exchange states, operations.md 3.2).
_REPLACEMENT_STATUS: dict[str, ReplacementStatus] = {
    "WAIT_SELLER_CONSIGN_GOODS": "due", "WAIT_BUYER_CONFIRM_EXCHANGE_SELLER_SEND_GOODS": "shipped",
    "SUCCESS": "shipped", "EXCHANGE_TRANSFORM_TO_REFUND": "cancelled", "CLOSED": "cancelled",
    "SELLER_REFUSE_BUYER": "cancelled",
}


def refund_kind(raw: Mapping[str, Any]) -> AfterSaleKind:
    """``dispute_type`` onto the canonical kind; OTHERS or none: a return when goods come back."""
    kind = _DISPUTE_KINDS.get(str(raw.get("dispute_type") or ""))
    if kind is not None:
        return kind
    return "return" if refund_restock(raw) == "return" else "refund_only"


def map_refund(raw: Mapping[str, Any]) -> RefundSnapshot:
    """One refund from taobao.refunds.receive.get or taobao.refund.get."""
    refund_id = _id(raw.get("refund_id"))
    tid = _id(raw.get("tid"))
    if refund_id is None or tid is None:
        raise _err("refund without refund_id or tid")
    updated_at = _present(from_beijing(raw.get("modified")), f"refund {refund_id} has no modified time")
    amount = _money(raw.get("refund_fee"))
    kind = refund_kind(raw)
    # Returns and exchanges bring the goods back (timed by return_status); a refund only releases goods
    # that never left; reships, repairs and price differences move none of the refunded goods.
    restock: RestockType = "no_restock"
    if kind in GOODS_COME_BACK:
        restock = "return"
    elif kind == "refund_only" and refund_restock(raw) == "cancel":
        restock = "cancel"
    num = raw.get("num")
    # A refund names its sub-order (oid) and item, not the sku id: the sku key is the item id only
    # when the item has no SKUs (``sku`` empty); otherwise the order line (oid) identifies it.
    sku_key = _id(raw.get("num_iid")) if not raw.get("sku") else None
    line = RefundLineSnapshot(
        external_line_id=_id(raw.get("oid")),
        external_sku_key=sku_key,
        merchant_sku=str(raw["outer_id"]) if raw.get("outer_id") else None,
        quantity=_int(num, "num") if num not in (None, "") else 0,
        amount_minor=amount,
        restock=restock,
    )
    status = str(raw.get("status"))
    return RefundSnapshot(
        platform=PLATFORM,
        external_id=refund_id,
        order_external_id=tid,
        status=refund_status(raw.get("status")),
        currency=CURRENCY,
        amount_minor=amount,
        lines=[line],
        created_at=from_beijing(raw.get("created")),
        updated_at=updated_at,
        raw=dict(raw),
        kind=kind,
        return_status=_RETURN_STATUS.get(status) if kind in GOODS_COME_BACK else None,
        replacement_status=_REPLACEMENT_STATUS.get(status) if kind in ("exchange", "reship") else None,
    )
