"""Stores (a shop on a platform), listings (shop sku key -> cooperative sku) and sync cursors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, json_field, time_field


class Store(SQLModel, table=True):
    __tablename__ = "store"

    id: int | None = id_field()
    platform: str = Field(max_length=32, index=True)
    name: str = Field(max_length=255)
    external_shop_id: str | None = Field(default=None, max_length=255)
    webhook_secret: str | None = Field(default=None, max_length=512)
    # Kept after a rotation so deliveries signed with the old secret still pass for a while.
    webhook_secret_previous: str | None = Field(default=None, max_length=512)
    credentials: dict = json_field()
    settings: dict = json_field()
    auth_status: str = Field(default="ok", max_length=32)  # ok, expired
    auth_error: str | None = Field(default=None, max_length=1000)
    last_webhook_at: datetime | None = time_field()
    last_poll_at: datetime | None = time_field()
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)


class Listing(SQLModel, table=True):
    """A shop's sellable item bound (or not yet) to a cooperative sku."""

    __tablename__ = "listing"
    __table_args__ = (UniqueConstraint("store_id", "external_sku_key"),)

    id: int | None = id_field()
    store_id: int = fk_field("store.id")
    external_sku_key: str = Field(max_length=255)
    sku_id: int | None = fk_field("sku.id", nullable=True)
    merchant_sku: str | None = Field(default=None, max_length=255)
    listing_ref: dict = json_field()
    bound_by: str | None = Field(default=None, max_length=16)  # auto, manual
    pushed_quantity: int | None = Field(default=None, sa_type=BigInteger)
    pushed_at: datetime | None = time_field()
    # Units the platform took off this listing (sales, less cancels and restocks) since our last
    # successful push: the platform should now show pushed_quantity - sold_since_push.
    sold_since_push: int = Field(default=0, sa_type=BigInteger)
    # Sales learnt only from the platform's own count (their webhooks were lost): when their orders
    # arrive later they are absorbed here instead of being counted against the listing a second time.
    unheard_sales: int = Field(default=0, sa_type=BigInteger)
    push_error: str | None = Field(default=None, max_length=1000)
    platform_quantity: int | None = Field(default=None, sa_type=BigInteger)
    platform_checked_at: datetime | None = time_field()
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)


class SyncCursor(SQLModel, table=True):
    """How far scheduled polling of one stream of one store has come."""

    __tablename__ = "sync_cursor"
    __table_args__ = (UniqueConstraint("store_id", "stream"),)

    id: int | None = id_field()
    store_id: int = fk_field("store.id")
    stream: str = Field(max_length=32)  # orders, refunds
    high_water: datetime | None = time_field()
    last_started_at: datetime | None = time_field()
    last_succeeded_at: datetime | None = time_field()
    last_error: str | None = Field(default=None, max_length=1000)
    consecutive_failures: int = 0
