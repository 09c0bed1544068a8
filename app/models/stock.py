"""Stock tables: cooperative skus, member lots, ledger movements and lot consumption."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, json_field, time_field


class Sku(SQLModel, table=True):
    __tablename__ = "sku"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    )

    id: int | None = id_field()
    sku: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=255)
    # Balances are a cache of the ledger, kept in the same transaction as each movement.
    on_hand: int = Field(default=0, sa_type=BigInteger)
    reserved: int = Field(default=0, sa_type=BigInteger)
    allocation: dict | None = json_field(default_factory=lambda: None, nullable=True)
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)


class MemberLot(SQLModel, table=True):
    """What one member household delivered; sales consume lots first in, first out."""

    __tablename__ = "member_lot"
    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        CheckConstraint("remaining <= quantity", name="remaining_within_quantity"),
        Index("ix_member_lot_fifo", "sku_id", "received_at", "id"),
    )

    id: int | None = id_field()
    sku_id: int = fk_field("sku.id")
    member_id: str = Field(max_length=64, index=True)
    lot_ref: str | None = Field(default=None, max_length=128)
    quantity: int = Field(sa_type=BigInteger)
    remaining: int = Field(sa_type=BigInteger)
    received_at: datetime = time_field(default_now=True)


class StockMovement(SQLModel, table=True):
    """One ledger entry. ``cause_key`` is unique, so applying the same cause twice is a no-op."""

    __tablename__ = "stock_movement"
    __table_args__ = (Index("ix_stock_movement_sku_newest", "sku_id", "id"),)

    id: int | None = id_field()
    sku_id: int = fk_field("sku.id", index=False)
    kind: str = Field(max_length=32)  # receipt, adjustment, reserve, release, ship, restock, write_off
    on_hand_delta: int = Field(default=0, sa_type=BigInteger)
    reserved_delta: int = Field(default=0, sa_type=BigInteger)
    on_hand_after: int = Field(sa_type=BigInteger)
    reserved_after: int = Field(sa_type=BigInteger)
    cause_key: str = Field(max_length=255, unique=True)
    member_id: str | None = Field(default=None, max_length=64)
    lot_id: int | None = fk_field("member_lot.id", nullable=True, index=False)
    order_line_id: int | None = fk_field("order_line.id", nullable=True)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = time_field(default_now=True)


class LotConsumption(SQLModel, table=True):
    """Which member lot supplied how many units of an order line (negative when goods came back)."""

    __tablename__ = "lot_consumption"

    id: int | None = id_field()
    movement_id: int = fk_field("stock_movement.id")
    sku_id: int = fk_field("sku.id", index=False)
    lot_id: int | None = fk_field("member_lot.id", nullable=True)  # None: the cooperative's own stock
    member_id: str | None = Field(default=None, max_length=64)
    order_line_id: int | None = fk_field("order_line.id", nullable=True)
    quantity: int = Field(sa_type=BigInteger)
    created_at: datetime = time_field(default_now=True)
