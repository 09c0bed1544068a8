"""Orders, order lines, refunds and refund lines as taken in from the shops."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, json_field, money_field, time_field


class Order(SQLModel, table=True):
    __tablename__ = "sales_order"
    __table_args__ = (
        UniqueConstraint("store_id", "external_id"),
        Index("ix_sales_order_due", "status", "settlement_id", "delivered_at"),
    )

    id: int | None = id_field()
    store_id: int = fk_field("store.id")
    platform: str = Field(max_length=32)
    external_id: str = Field(max_length=128)
    status: str = Field(max_length=16, index=True)
    currency: str = Field(max_length=3)
    total_minor: int = money_field()
    refunded_minor: int = money_field()
    # The platform's actual fee: from the order's own payload (``fee_source`` "order", e.g. Taobao's
    # commission_fee), settlement data an API returned ("settlement": Douyin's settlement rows, Shopify
    # Payments), or an imported bill ("bill"); bill lines win over the order's payload. None: no actual
    # fee yet (settlement waits ``fee_wait_days`` for one, then uses the store's estimate).
    platform_fee_minor: int | None = money_field(None, nullable=True)
    fee_source: str | None = Field(default=None, max_length=16)
    # What the platform pays the shop on top of the buyer's money (its own coupons, DESIGN "Fees and
    # bills"): part of a statement's gross, kept apart from total_minor, which snapshots overwrite.
    subsidy_minor: int = money_field()
    # What statements counted so far (the sale line, then fee adjustments); None until the order is settled.
    fee_settled_minor: int | None = money_field(None, nullable=True)
    subsidy_settled_minor: int | None = money_field(None, nullable=True)
    placed_at: datetime | None = time_field()
    paid_at: datetime | None = time_field()
    shipped_at: datetime | None = time_field()
    delivered_at: datetime | None = time_field()
    cancelled_at: datetime | None = time_field()
    ship_by: datetime | None = time_field(index=True)  # the platform's ship-by deadline, where it gives one
    platform_updated_at: datetime = time_field(nullable=False)
    settlement_id: str | None = Field(default=None, foreign_key="settlement.id", max_length=36, index=True)
    has_unbound: bool = Field(default=False, index=True)
    oversold: bool = Field(default=False, index=True)
    seen_via: str = Field(default="webhook", max_length=16)  # webhook, poll, resync
    raw: dict | list | None = json_field(default_factory=lambda: None, nullable=True)
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)


class OrderLine(SQLModel, table=True):
    """One line; the ``*_qty`` columns say how much of it each stock effect already covered."""

    __tablename__ = "order_line"
    __table_args__ = (UniqueConstraint("order_id", "external_line_id"),)

    id: int | None = id_field()
    order_id: int = fk_field("sales_order.id")
    line_no: int
    external_line_id: str = Field(max_length=128)
    external_sku_key: str | None = Field(default=None, max_length=255)
    merchant_sku: str | None = Field(default=None, max_length=255)
    title: str | None = Field(default=None, max_length=500)
    sku_id: int | None = fk_field("sku.id", nullable=True)
    quantity: int = Field(sa_type=BigInteger)
    unit_price_minor: int = money_field()
    discount_minor: int = money_field()
    total_minor: int = money_field()
    shipped_quantity: int | None = Field(default=None, sa_type=BigInteger)  # platform's per-line figure
    reserved_qty: int = Field(default=0, sa_type=BigInteger)  # reserved now
    shipped_qty: int = Field(default=0, sa_type=BigInteger)  # taken from on hand
    released_qty: int = Field(default=0, sa_type=BigInteger)  # reservation given back (cancel)
    restocked_qty: int = Field(default=0, sa_type=BigInteger)  # came back on hand (returns)
    oversold_qty: int = Field(default=0, sa_type=BigInteger)  # paid but no stock to reserve
    platform_held: int = Field(default=0, sa_type=BigInteger)  # units the platform took from its own stock
    # Units our own shipments cover; once any line of the order has some, they decide what shipped.
    shipment_qty: int = Field(default=0, sa_type=BigInteger)
    listing_ref: dict = json_field()
    # ``sale``: a line the buyer paid for. ``replacement``: what an exchange or a reship sends out again
    # (refund ``replacement_of_refund_id``, in place of line ``replacement_of_line_id``). It reserves
    # and ships like a line of its own (whatever its order's status) but carries no money: settlement
    # counts it as no sale.
    kind: str = Field(default="sale", max_length=16)
    replacement_of_refund_id: int | None = fk_field("refund.id", nullable=True)
    replacement_of_line_id: int | None = fk_field("order_line.id", nullable=True, index=False)


class Refund(SQLModel, table=True):
    __tablename__ = "refund"
    __table_args__ = (UniqueConstraint("store_id", "external_id"),)

    id: int | None = id_field()
    store_id: int = fk_field("store.id")
    order_id: int | None = fk_field("sales_order.id", nullable=True)
    external_id: str = Field(max_length=128)
    order_external_id: str = Field(max_length=128)
    status: str = Field(max_length=16, index=True)
    currency: str = Field(max_length=3)
    amount_minor: int = money_field()
    placed_at: datetime | None = time_field()
    platform_updated_at: datetime = time_field(nullable=False)
    succeeded_at: datetime | None = time_field()
    # The statement that counted this refund: its order's, or (a late refund, after its order
    # was settled) a later one as a negative line. Never counted twice.
    settlement_id: str | None = Field(default=None, foreign_key="settlement.id", max_length=36, index=True)
    raw: dict | list | None = json_field(default_factory=lambda: None, nullable=True)
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)
    # After-sales: refund_only, return, exchange, reship, repair, price_protection. None while
    # ``kind_pending``: the platform's detail call (a job) has not told it yet, and the stock effects that
    # depend on it (restock, replacement) wait; its money applies at once.
    kind: str | None = Field(default=None, max_length=24)
    kind_pending: bool = Field(default=False)
    # Returns and exchanges: awaiting_goods, received, inspected (None for kinds that take nothing back).
    return_status: str | None = Field(default=None, max_length=16)
    returned_at: datetime | None = time_field()  # when the platform first said the goods were back
    # Exchanges and reships: due, shipped, cancelled (None: not agreed yet).
    replacement_status: str | None = Field(default=None, max_length=16)


class RefundLine(SQLModel, table=True):
    __tablename__ = "refund_line"

    id: int | None = id_field()
    refund_id: int = fk_field("refund.id")
    line_no: int
    order_line_id: int | None = fk_field("order_line.id", nullable=True)
    external_line_id: str | None = Field(default=None, max_length=128)
    quantity: int = Field(sa_type=BigInteger)
    amount_minor: int = money_field()
    restock: str = Field(max_length=16)  # cancel, return, no_restock
    applied_qty: int = Field(default=0, sa_type=BigInteger)
    # Returned goods: units back with us (the platform's word or the warehouse's inspection), those of
    # them held apart awaiting inspection (store setting restock_returns "after_inspection"), those this
    # line put on hand, and the inspection's verdicts. A defective unit is written off, never sellable.
    returned_qty: int = Field(default=0, sa_type=BigInteger)
    held_qty: int = Field(default=0, sa_type=BigInteger)
    restocked_qty: int = Field(default=0, sa_type=BigInteger)
    good_qty: int = Field(default=0, sa_type=BigInteger)
    defective_qty: int = Field(default=0, sa_type=BigInteger)
    # An exchange for another sku: the platform's key and merchant code of the replacement.
    replacement_sku_key: str | None = Field(default=None, max_length=255)
    replacement_merchant_sku: str | None = Field(default=None, max_length=255)
