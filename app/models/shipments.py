"""Shipments (发货回传): parcels the cooperative's warehouse sent, what each covers, every upload attempt,
and the carriers with each platform's company id or code for them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, time_field


class Carrier(SQLModel, table=True):
    """A courier under the cooperative's own code (``ZTO``); built-in ones are written on first use."""

    __tablename__ = "carrier"

    id: int | None = id_field()
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=128)
    # Where a buyer follows a parcel, ``{number}`` standing for the tracking number (Shopify, WooCommerce).
    tracking_url: str | None = Field(default=None, max_length=512)
    builtin: bool = Field(default=False)
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)


class CarrierCode(SQLModel, table=True):
    """What one platform calls a carrier: PDD's ``logistics_id``, TOP's and Douyin's ``company_code``,
    Shopify's tracking company, WooCommerce's tracking provider."""

    __tablename__ = "carrier_code"
    __table_args__ = (UniqueConstraint("carrier_id", "platform"),)

    id: int | None = id_field()
    carrier_id: int = fk_field("carrier.id", index=False, ondelete="CASCADE")
    platform: str = Field(max_length=32)
    company: str = Field(max_length=128)
    company_name: str | None = Field(default=None, max_length=128)  # the platform's own name for it
    source: str = Field(max_length=16)  # builtin, platform (its company list), operator (never overwritten)
    updated_at: datetime = time_field(default_now=True)


class Shipment(SQLModel, table=True):
    """One parcel of one order; ``status``: pending (being uploaded), uploaded, failed (the platform
    refused or shows another tracking number: an operator decides), dead (retries used up)."""

    __tablename__ = "shipment"
    # The same tracking number twice on one order is a repeated request, not a second parcel.
    __table_args__ = (UniqueConstraint("order_id", "tracking_number"),)

    id: int | None = id_field()
    order_id: int = fk_field("sales_order.id", index=False)
    store_id: int = fk_field("store.id")
    carrier_id: int = fk_field("carrier.id", index=False)
    carrier: str = Field(max_length=32)  # the carrier's code (codes never change)
    tracking_number: str = Field(max_length=64)
    shipped_at: datetime = time_field(nullable=False)
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = Field(default=0)  # upload attempts that reached the platform (or tried to)
    platform_ref: str | None = Field(default=None, max_length=255)  # the platform's id of it (pack, fulfillment)
    error: str | None = Field(default=None, max_length=2000)
    uploaded_at: datetime | None = time_field()
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)


class ShipmentLine(SQLModel, table=True):
    __tablename__ = "shipment_line"
    __table_args__ = (UniqueConstraint("shipment_id", "order_line_id"),)

    id: int | None = id_field()
    shipment_id: int = fk_field("shipment.id", index=False)
    order_line_id: int = fk_field("order_line.id")
    quantity: int = Field(sa_type=BigInteger)


class ShipmentAttempt(SQLModel, table=True):
    """Every upload attempt, committed whatever its outcome."""

    __tablename__ = "shipment_attempt"
    __table_args__ = (UniqueConstraint("shipment_id", "attempt_no"),)

    id: int | None = id_field()
    shipment_id: int = fk_field("shipment.id", index=False)
    attempt_no: int
    started_at: datetime = time_field(nullable=False)
    duration_ms: int | None = None
    outcome: str = Field(max_length=16)  # in_flight, uploaded, failed, retry, waiting, dead
    error_kind: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, max_length=2000)
