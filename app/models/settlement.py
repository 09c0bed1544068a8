"""Settlement statements, their lines and member shares, and every dividend delivery attempt."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.base import IdType, fk_field, id_field, json_field, money_field, time_field


class Settlement(SQLModel, table=True):
    """One statement per currency per run; never changed after it was created (but its delivery state)."""

    __tablename__ = "settlement"

    id: str = Field(primary_key=True, max_length=36)  # uuid; also the Idempotency-Key of its delivery
    run_id: str = Field(max_length=36, index=True)
    currency: str = Field(max_length=3)
    gross_minor: int = money_field()
    refunds_minor: int = money_field()
    platform_fees_minor: int = money_field()
    net_minor: int = money_field()
    # platform_fees_minor = actual + estimated; gross_minor includes subsidies_minor.
    platform_fees_actual_minor: int = money_field()
    platform_fees_estimated_minor: int = money_field()
    subsidies_minor: int = money_field()
    body: dict = json_field()  # exactly what is sent to the dividend endpoint
    delivery_status: str = Field(default="pending", max_length=16, index=True)  # pending, delivered, dead
    delivery_attempts: int = 0
    delivered_at: datetime | None = time_field()
    created_at: datetime = time_field(default_now=True)


class SettlementLine(SQLModel, table=True):
    """An order settled in a statement, or a late refund taken off it (negative net)."""

    __tablename__ = "settlement_line"

    id: int | None = id_field()
    settlement_id: str = Field(foreign_key="settlement.id", max_length=36, index=True)
    # sale (an order settled), refund (a late refund, negative), fee_adjustment (an actual fee or subsidy
    # that arrived after its order was settled). Statements before migration 0011 say order, late_refund.
    kind: str = Field(max_length=16)
    order_id: int | None = fk_field("sales_order.id", nullable=True)
    refund_id: int | None = Field(default=None, foreign_key="refund.id", unique=True, sa_type=IdType)
    store_id: int = fk_field("store.id", index=False)
    external_id: str = Field(max_length=128)
    gross_minor: int = money_field()
    refunds_minor: int = money_field()
    fees_minor: int = money_field()
    net_minor: int = money_field()
    subsidy_minor: int = money_field()  # part of gross_minor
    fee_source: str | None = Field(default=None, max_length=16)  # platform, bill, estimate (None: no fee in it)


class MemberShare(SQLModel, table=True):
    __tablename__ = "member_share"

    id: int | None = id_field()
    settlement_id: str = Field(foreign_key="settlement.id", max_length=36, index=True)
    member_id: str = Field(max_length=64)  # "cooperative" for stock no member supplied
    net_minor: int = money_field()


class DeliveryAttempt(SQLModel, table=True):
    """Every POST to the dividend endpoint, committed whatever its outcome."""

    __tablename__ = "delivery_attempt"

    id: int | None = id_field()
    settlement_id: str = Field(foreign_key="settlement.id", max_length=36, index=True)
    attempt_no: int
    started_at: datetime = time_field(default_now=True)
    duration_ms: int = 0
    status_code: int | None = None
    outcome: str = Field(max_length=16)  # in_flight, delivered, retry, dead, interrupted (worker died mid-POST)
    error_kind: str | None = Field(default=None, max_length=32)
    response_excerpt: str | None = Field(default=None, max_length=1000)
