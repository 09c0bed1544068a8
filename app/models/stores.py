"""Stores (a shop on a platform), listings (shop sku key -> cooperative sku) and sync cursors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from sqlalchemy import BigInteger, UniqueConstraint
from pydantic import BaseModel, ConfigDict
from pydantic import Field as Setting
from sqlmodel import Field, SQLModel

from adapters.bills import BillColumns
from app.models.base import EncryptedJSON, EncryptedText, fk_field, id_field, json_field, time_field


class StoreSettings(BaseModel):
    """A store's settings, read the same way by every flow; unknown keys are refused on input."""

    model_config = ConfigDict(extra="forbid")

    base_url: Annotated[str, Setting(max_length=2048)] | None = None
    return_window_days: Annotated[int, Setting(ge=0, le=3650)] = 30
    safety_stock: Annotated[int, Setting(ge=0, le=1_000_000_000)] = 0
    poll_interval_s: Annotated[int, Setting(ge=0, le=86_400 * 7)] = 300  # 0 turns scheduled polling off
    # Seconds each poll window reaches back over the last one; None: the service's default.
    poll_overlap_s: Annotated[float, Setting(ge=0, le=86_400)] | None = None
    # The estimated platform fee, basis points of the order's total, used when no actual fee came. None: no
    # estimate: where the platform reports fees, orders wait for the actual one (elsewhere the fee is 0).
    fee_rate_bp: Annotated[int, Setting(ge=0, le=10_000)] | None = None
    # Days past the return window that settlement waits for an actual fee before it uses the estimate.
    fee_wait_days: Annotated[int, Setting(ge=0, le=365)] = 7
    # The columns of this store's bill files, replacing the platform's built-in mapping (README, "Bills").
    bill_columns: BillColumns | None = None
    # Returned goods go on hand when they come back ("on_receipt"), or are held apart until the
    # warehouse inspects them ("after_inspection": good units then go on hand).
    restock_returns: Literal["on_receipt", "after_inspection"] = "on_receipt"
    # Days after shipping at which an order with no delivered signal counts as delivered (its return
    # window runs from then).
    delivery_assumed_days: Annotated[int, Setting(ge=0, le=365)] = 15
    # Seconds a rotated-out webhook secret still verifies, so deliveries in flight are not refused.
    webhook_secret_grace_s: Annotated[int, Setting(ge=0, le=86_400 * 30)] = 86_400
    # Read by one adapter each: Shopify's inventory location, WooCommerce's own order statuses,
    # Taobao's signing method, the unit of Pinduoduo refund amounts, the sandbox's page size.
    location_id: Annotated[str, Setting(max_length=64)] | int | None = None
    status_map: dict[Annotated[str, Setting(max_length=64)], Annotated[str, Setting(max_length=32)]] | None = None
    sign_method: Literal["md5", "hmac", "hmac-sha256"] | None = None
    mall: Literal["taobao", "tmall"] | None = None  # a Taobao store that is a Tmall shop: Tmall's stock API
    refund_amount_unit: Literal["yuan", "fen"] | None = None
    page_size: Annotated[int, Setting(ge=1, le=1000)] | None = None

    @classmethod
    def of(cls, raw: dict | None) -> "StoreSettings":
        """A stored row's settings; keys this version does not know (written by an older one) are ignored."""
        return cls.model_validate({k: v for k, v in (raw or {}).items() if k in cls.model_fields})

    def stored(self) -> dict:
        """What goes into the row (JSON values; options left empty are left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class Store(SQLModel, table=True):
    __tablename__ = "store"

    id: int | None = id_field()
    platform: str = Field(max_length=32, index=True)
    name: str = Field(max_length=255)
    external_shop_id: str | None = Field(default=None, max_length=255)
    # Secrets are encrypted at rest (COOPSYNC_SECRET_KEY); the API caps a webhook secret at 512 characters.
    webhook_secret: str | None = Field(default=None, sa_type=EncryptedText)
    # Kept after a rotation so deliveries signed with the old secret still pass for a while.
    webhook_secret_previous: str | None = Field(default=None, sa_type=EncryptedText)
    webhook_secret_rotated_at: datetime | None = time_field()  # the previous secret's grace starts here
    credentials: dict = Field(default_factory=dict, sa_type=EncryptedJSON, nullable=False)
    settings: dict = json_field()
    auth_status: str = Field(default="ok", max_length=32)  # ok, expired, revoked
    auth_error: str | None = Field(default=None, max_length=1000)
    # The access token's and the refresh token's end, as the platform told us (None: does not expire).
    auth_expires_at: datetime | None = time_field()
    refresh_expires_at: datetime | None = time_field()
    last_refreshed_at: datetime | None = time_field()
    # Bumped on every change of credentials: a caller that saw version N expire refreshes only if
    # nobody has since; the lease makes one replica at a time the one that calls the platform.
    credentials_version: int = Field(default=0)
    refresh_lease_until: datetime | None = time_field()
    last_webhook_at: datetime | None = time_field()
    last_poll_at: datetime | None = time_field()
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)

    @property
    def options(self) -> StoreSettings:
        return StoreSettings.of(self.settings)

    def webhook_secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery may be signed with now: the current one, and the previous one
        while its grace period lasts."""
        secrets = [self.webhook_secret] if self.webhook_secret else []
        if self.webhook_secret_previous and self.webhook_secret_rotated_at is not None and (
                (now - self.webhook_secret_rotated_at).total_seconds() < self.options.webhook_secret_grace_s):
            secrets.append(self.webhook_secret_previous)
        return secrets


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
    # Under a share policy: the units of the sku this shop may still sell (its quota). Its own sales use
    # it up; only receipts, adjustments, returns to stock and a rebalance change it otherwise. None under
    # the shared policy.
    quota: int | None = Field(default=None, sa_type=BigInteger)
    # A delta sent to the platform whose answer was not heard, and the idempotency key it went under:
    # the retry sends the same delta under the same key (or, without keys, is not sent again blind).
    pending_delta: int | None = Field(default=None, sa_type=BigInteger)
    pending_delta_key: str | None = Field(default=None, max_length=64)
    push_error: str | None = Field(default=None, max_length=1000)
    # The sales-speed buffer (app/domain/allocation.py, sales_pace): this shop's recent sales of the sku in
    # units per second as last estimated, when, and sold_since_push - unheard_sales at that moment (every
    # sale heard moves that up: the sales heard since are its rise); how late its sales reach us (webhook
    # or poll, then the apply), and
    # how long a new figure takes to land on it once stock changed (seconds, both smoothed).
    sales_rate: float = Field(default=0.0)
    sales_rated_at: datetime | None = time_field()
    sales_mark: int = Field(default=0, sa_type=BigInteger)
    hear_lag_s: float | None = Field(default=None)
    push_lag_s: float | None = Field(default=None)
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
