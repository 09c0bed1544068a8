"""Pure mapping of Douyin Shop payloads onto canonical snapshots.

Douyin already reports money in fen (integers) and times in Unix seconds (china.md 3.3), so money is
only checked to be integral and times go through ``from_unix``.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any, Mapping

from adapters.base import GOODS_COME_BACK, REPLACEMENT_GOES_OUT, AfterSaleKind, OrderLineSnapshot, OrderSnapshot
from adapters.base import BillKind, BillLine
from adapters.base import OrderStatus, RefundLineSnapshot, RefundSnapshot, RefundStatus, ReplacementStatus
from adapters.base import RestockType, ReturnStatus, restock_for_kind
from adapters.errors import PayloadError
from adapters.fields import as_int, ext_id, present
from adapters.units import from_beijing, from_unix

PLATFORM = "douyin"
CURRENCY = "CNY"

_id = ext_id
_int = partial(as_int, platform=PLATFORM, message="{field}={value!r} is not an integer")
_present = partial(present, platform=PLATFORM)

# order_status (china.md 3.4). 101 "partly shipped" stays paid at order level; lines carry what shipped.
ORDER_STATUS: dict[int, OrderStatus] = {
    1: OrderStatus.PENDING,
    105: OrderStatus.PAID,
    2: OrderStatus.PAID,
    101: OrderStatus.PAID,
    3: OrderStatus.SHIPPED,
    4: OrderStatus.CANCELLED,
    5: OrderStatus.DELIVERED,
}
PARTLY_SHIPPED = 101
SKU_SHIPPED_STATUSES = frozenset({3, 5})  # a sku order's own order_status once its goods left

# afterSale.List aftersale_status / refund_status (china.md 3.4).
AFTERSALE_SUCCEEDED = frozenset({12})
AFTERSALE_CLOSED = frozenset({27, 28, 29, 51})
# 14 = exchange / resend / repair completed: finished with no money back. Kept open it would block
# its order's settlement for ever, so it counts as closed (no effect on money or stock).
AFTERSALE_FINISHED_WITHOUT_REFUND = frozenset({14})
REFUND_SUCCEEDED = 3
REFUND_FAILED = 4

# aftersale_type (china.md 3.4, operations.md 3.3): 0 return and refund, 1 refund only after shipping,
# 2 refund only before shipping, 3 exchange, 6 price protection, 7 reship (补寄), 8 repair; the detail
# adds 4 system and 5 buyer cancellation (of an order not shipped: a refund only that releases).
TYPE_RETURN_AND_REFUND = 0
TYPE_REFUND_NOT_SHIPPED = 2
_KINDS: dict[int, tuple[AfterSaleKind, bool | None]] = {  # type -> (kind, whether the goods had shipped)
    0: ("return", True), 1: ("refund_only", True), 2: ("refund_only", False), 3: ("exchange", True),
    4: ("refund_only", False), 5: ("refund_only", False), 6: ("price_protection", None), 7: ("reship", True),
    8: ("repair", True),
}
# aftersale_status -> where a return's or an exchange's goods are: 6 awaiting the merchant's consent,
# 7 awaiting the buyer's parcel, 11 the parcel sent back and the merchant's second consent pending:
# awaiting (the warehouse's inspection is the earlier signal). 8 the merchant to send the exchange,
# 12 succeeded, 13 replacement on its way, 14 exchange done: the goods were back first.
_RETURN_STATUS: dict[int, ReturnStatus] = {6: "awaiting_goods", 7: "awaiting_goods", 11: "awaiting_goods",
                                           8: "received", 12: "received", 13: "received", 14: "received"}
# aftersale_status -> an exchange's or a reship's replacement: 8 the merchant to send it; 13 sent, the
# buyer to receive it; 12 / 14 done; 27 / 29 refused, 28 failed, 51 order cancelled: it will not go.
_REPLACEMENT_STATUS: dict[int, ReplacementStatus] = {8: "due", 12: "shipped", 13: "shipped", 14: "shipped",
                                                     27: "cancelled", 28: "cancelled", 29: "cancelled",
                                                     51: "cancelled"}


def fen(value: Any, field: str) -> int:
    """A fen amount as Douyin sends it (int, or a digit string); anything fractional is refused."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise PayloadError(f"{field} is a boolean", platform=PLATFORM)
    if isinstance(value, float) and not value.is_integer():
        raise PayloadError(f"{field}={value!r} is not a whole number of fen", platform=PLATFORM)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{field}={value!r} is not a fen amount", platform=PLATFORM) from exc


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _merchant_sku(raw: Mapping[str, Any]) -> str | None:
    return _text(raw.get("code")) or (_text(raw.get("out_sku_id")) if _id(raw.get("out_sku_id")) else None)


def _shipped_by_line(order: Mapping[str, Any]) -> dict[str, int] | None:
    """Quantities per sku order id from ``logistics_info[].product_info[]``; None when not reported."""
    packages = order.get("logistics_info") or []
    if not packages:
        return None
    shipped: dict[str, int] = defaultdict(int)
    for package in packages:
        for product in package.get("product_info") or []:
            line_id = _id(product.get("sku_order_id"))
            if line_id:
                shipped[line_id] += _int(product.get("product_count", 0), "product_count")
    return dict(shipped)


def order_line(raw: Mapping[str, Any], shipped_quantity: int | None) -> OrderLineSnapshot:
    # The sku order id is `order_id` in the official SDK models; some payloads call it `sku_order_id`.
    line_id = _present(_id(raw.get("sku_order_id")) or _id(raw.get("order_id")), "sku order without an id")
    sku_id = _id(raw.get("sku_id"))
    product_id = _id(raw.get("product_id_str")) or _id(raw.get("product_id"))
    listing_ref = {k: v for k, v in (("product_id", product_id), ("sku_id", sku_id)) if v}
    return OrderLineSnapshot(
        external_line_id=line_id,
        external_sku_key=sku_id,
        merchant_sku=_merchant_sku(raw),
        title=_text(raw.get("product_name")),
        quantity=_int(raw.get("item_num", 0), "item_num"),
        unit_price_minor=fen(raw.get("origin_amount"), "origin_amount"),
        discount_minor=fen(raw.get("promotion_amount"), "promotion_amount"),
        total_minor=fen(raw.get("pay_amount"), "pay_amount"),
        shipped_quantity=shipped_quantity,
        listing_ref=listing_ref,
    )


def order_from_douyin(raw: Mapping[str, Any]) -> OrderSnapshot:
    """A shop (parent) order from ``order.searchList`` or ``order.orderDetail`` -> OrderSnapshot."""
    order_id = _present(_id(raw.get("order_id")), "shop order without order_id")
    code = _int(raw.get("order_status"), "order_status")
    status = _present(ORDER_STATUS.get(code), f"order {order_id}: unknown order_status {code}")
    updated_at = _present(from_unix(raw.get("update_time")), f"order {order_id} has no update_time")

    sku_orders = raw.get("sku_order_list") or []
    shipped = _shipped_by_line(raw) if code == PARTLY_SHIPPED else None
    lines = []
    for sku_order in sku_orders:
        shipped_quantity = None
        if code == PARTLY_SHIPPED:
            line_id = _id(sku_order.get("sku_order_id")) or _id(sku_order.get("order_id"))
            if shipped is not None:
                shipped_quantity = shipped.get(line_id or "", 0)
            else:
                line_status = sku_order.get("order_status")
                if line_status is not None:
                    done = _int(line_status, "sku order_status") in SKU_SHIPPED_STATUSES
                    shipped_quantity = _int(sku_order.get("item_num", 0), "item_num") if done else 0
        lines.append(order_line(sku_order, shipped_quantity))

    receipts = [t for t in (from_unix(s.get("confirm_receipt_time")) for s in sku_orders) if t]
    delivered_at = max(receipts) if receipts else None
    if delivered_at is None and status is OrderStatus.DELIVERED:
        delivered_at = from_unix(raw.get("finish_time"))
    return OrderSnapshot(
        platform=PLATFORM,
        external_id=order_id,
        status=status,
        currency=CURRENCY,
        total_minor=fen(raw.get("pay_amount"), "pay_amount"),
        platform_fee_minor=None,  # fees only appear in the settlement bill (china.md 3.9)
        # 平台承担的优惠 (platform's and influencer's coupons, operations.md 5.3): paid to the shop at settlement.
        subsidy_minor=fen(raw.get("platform_cost_amount"), "platform_cost_amount")
        if raw.get("platform_cost_amount") not in (None, "") else None,
        lines=lines,
        created_at=from_unix(raw.get("create_time")),
        paid_at=from_unix(raw.get("pay_time")),
        shipped_at=from_unix(raw.get("ship_time")),
        # 预计发货时间: the shop order's, else the earliest of its sku orders (china.md 3.3).
        ship_by=from_unix(raw.get("exp_ship_time")) or min(
            (t for t in (from_unix(s.get("exp_ship_time")) for s in sku_orders) if t), default=None),
        delivered_at=delivered_at,
        updated_at=updated_at,
        raw=dict(raw),
    )


def refund_status(aftersale_status: int | None, refund_status_code: int | None) -> RefundStatus:
    if aftersale_status in AFTERSALE_SUCCEEDED or refund_status_code == REFUND_SUCCEEDED:
        return RefundStatus.SUCCEEDED
    if (aftersale_status in AFTERSALE_CLOSED or aftersale_status in AFTERSALE_FINISHED_WITHOUT_REFUND
            or refund_status_code == REFUND_FAILED):
        return RefundStatus.CLOSED
    return RefundStatus.OPEN


def kind_for(aftersale_type: int | None) -> AfterSaleKind:
    """``aftersale_type`` onto the canonical kind; an after-sale without one is a refund only."""
    if aftersale_type is None:
        return "refund_only"
    try:
        return _KINDS[aftersale_type][0]
    except KeyError:
        raise PayloadError(f"unknown aftersale_type {aftersale_type!r}", platform=PLATFORM) from None


def restock_for(aftersale_type: int | None) -> RestockType:
    """Refund before shipping releases the reservation; returns and exchanges bring the goods back (when
    they arrive: see return_status); refund-only after shipping, reship, repair and price protection move
    none of the refunded goods."""
    if aftersale_type is None:
        return "no_restock"
    kind_for(aftersale_type)  # refuses an unknown type
    kind, shipped = _KINDS[aftersale_type]
    return restock_for_kind(kind, shipped)


def _opt_int(value: Any, field: str) -> int | None:
    return None if value in (None, "") else _int(value, field)


def refund_from_douyin(item: Mapping[str, Any]) -> RefundSnapshot:
    """One ``afterSale.List`` item (``aftersale_info`` + ``order_info``) -> RefundSnapshot."""
    info = item.get("aftersale_info")
    if not isinstance(info, Mapping):
        raise PayloadError("after-sale item without aftersale_info", platform=PLATFORM)
    aftersale_id = _present(_id(info.get("aftersale_id")), "after-sale without aftersale_id")
    order_info = item.get("order_info") or {}
    order_id = _present(_id(order_info.get("shop_order_id")) or _id(info.get("related_id")),
                        f"after-sale {aftersale_id} names no order")
    updated_at = _present(from_unix(info.get("update_time")), f"after-sale {aftersale_id} has no update_time")

    aftersale_type = _opt_int(info.get("aftersale_type"), "aftersale_type")
    status = refund_status(_opt_int(info.get("aftersale_status"), "aftersale_status"),
                           _opt_int(info.get("refund_status"), "refund_status"))
    kind = kind_for(aftersale_type)
    restock = restock_for(aftersale_type)
    refund_amount = fen(info.get("refund_amount"), "refund_amount")
    aftersale_status = _opt_int(info.get("aftersale_status"), "aftersale_status")
    # An exchange for another sku (size, weight): what goes out instead of the refunded line's sku.
    exchange = info.get("exchange_sku_info") if isinstance(info.get("exchange_sku_info"), Mapping) else {}

    # The SDK nests the sku orders in order_info.related_order_info[]; china.md 3.5 shows them flat.
    related = order_info.get("related_order_info")
    sku_orders = related if isinstance(related, list) else ([order_info] if order_info.get("sku_order_id") else [])
    lines = []
    for sku_order in sku_orders:
        single = len(sku_orders) == 1
        quantity = sku_order.get("aftersale_item_num")
        if quantity in (None, "") and single:
            quantity = info.get("aftersale_num")
        if quantity in (None, ""):
            quantity = sku_order.get("item_num", 0)
        amount = sku_order.get("aftersale_pay_amount")
        lines.append(RefundLineSnapshot(
            external_line_id=_id(sku_order.get("sku_order_id")),
            external_sku_key=_id(sku_order.get("sku_id")),
            merchant_sku=_text(sku_order.get("shop_sku_code")),
            quantity=_int(quantity, "aftersale_num"),
            amount_minor=fen(amount, "aftersale_pay_amount") if amount not in (None, "") else
            (refund_amount if single else 0),
            restock=restock,
            replacement_sku_key=_id(exchange.get("sku_id")) if kind == "exchange" else None,
            replacement_merchant_sku=(_text(exchange.get("code")) or _text(exchange.get("out_sku_id"))
                                      if kind == "exchange" else None),
        ))
    return RefundSnapshot(
        platform=PLATFORM,
        external_id=aftersale_id,
        order_external_id=order_id,
        status=status,
        currency=CURRENCY,
        # Goods money and returned postage are separate fields; both went back to the buyer.
        amount_minor=refund_amount + fen(info.get("refund_post_amount"), "refund_post_amount"),
        lines=lines,
        created_at=from_unix(info.get("apply_time") or info.get("create_time")),
        updated_at=updated_at,
        raw=dict(item),
        kind=kind,
        return_status=_RETURN_STATUS.get(aftersale_status) if kind in GOODS_COME_BACK else None,
        replacement_status=_REPLACEMENT_STATUS.get(aftersale_status) if kind in REPLACEMENT_GOES_OUT else None,
    )


# --- settlement rows (/order/getSettleBillDetailV3, operations.md 5.3; fen) -------------------------

# 合计支出 is their sum as the platform adds it: 平台服务费, 佣金, 渠道分成, 团长服务费, 直播间站外推广, 其他分成.
SETTLE_FEE_FIELDS = ("platform_service_fee", "commission", "good_learn_channel_fee", "colonel_service_fee",
                     "channel_promotion_fee", "other_sharing_amount")
# Money the shop receives on top of what the buyer paid: 平台补贴, 达人补贴, 抖音支付补贴, DOU分期营销补贴.
SETTLE_SUBSIDY_FIELDS = ("platform_coupon", "author_coupon", "zt_pay_promotion", "zr_pay_promotion")
# trade_type: 0 已结算; 1 结算后退款（原路）; 2 保证金退款; 3 结算后退款（非原路）.
_SETTLE_KINDS: dict[int, BillKind] = {0: "sale", 1: "refund", 2: "adjustment", 3: "refund"}


def bill_line_from_settlement(row: Mapping[str, Any]) -> BillLine:
    """One settled sub-order (or a refund after settlement) -> BillLine of its shop order.

    ``settle_amount`` (商家实收) is what the shop was paid. On a settlement row the buyer's money is
    ``real_pay_amount`` (用户实付) and ``refund_before_settle`` what went back before settling; the fees are
    ``total_outcome`` (合计支出), itemised by the named fields (a remainder the items do not explain is kept
    as ``other``). On a refund after settlement the refund is what the payout, fees and subsidies leave [I]."""
    shop_order_id = _present(_id(row.get("shop_order_id")), "settlement row without shop_order_id")
    sub_order = _id(row.get("order_id")) or shop_order_id
    trade_type = _opt_int(row.get("trade_type"), "trade_type") or 0
    kind = _SETTLE_KINDS.get(trade_type, "other")
    fees = {name: fen(row.get(name), name) for name in SETTLE_FEE_FIELDS}
    fees = {name: value for name, value in fees.items() if value}
    fee = sum(fees.values())
    if row.get("total_outcome") not in (None, ""):
        total = fen(row.get("total_outcome"), "total_outcome")
        if total != fee:
            fees["other"] = total - fee
        fee = total
    subsidy = sum(fen(row.get(name), name) for name in SETTLE_SUBSIDY_FIELDS)
    amount = fen(row.get("settle_amount"), "settle_amount")
    if kind == "sale":
        gross = fen(row.get("real_pay_amount"), "real_pay_amount")
        refund = fen(row.get("refund_before_settle"), "refund_before_settle")
    else:
        gross = 0
        refund = subsidy - fee - amount
    request_no = _id(row.get("request_no")) or _text(row.get("settle_time")) or ""
    return BillLine(
        line_id=f"settle:{request_no}:{sub_order}:{trade_type}",
        order_external_id=shop_order_id,
        currency=CURRENCY,
        kind=kind,
        amount_minor=amount,
        occurred_at=from_beijing(_text(row.get("settle_time"))),
        gross_minor=gross,
        refund_minor=refund,
        fee_minor=fee,
        subsidy_minor=subsidy,
        fees=fees,
        source="platform",
        raw=dict(row),
    )
