"""Platform bills: imported bill files and every settlement or bill line, matched to its order or listed
as unmatched; the lines are where orders' actual fees and subsidies come from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, json_field, money_field, time_field


class BillImport(SQLModel, table=True):
    """One uploaded bill file; the same file again (same digest) is the same import."""

    __tablename__ = "bill_import"
    __table_args__ = (UniqueConstraint("store_id", "digest"),)

    id: int | None = id_field()
    store_id: int = fk_field("store.id", index=False)
    name: str | None = Field(default=None, max_length=255)
    digest: str = Field(max_length=64)  # sha256 of the file's bytes
    lines: int = 0  # lines in the file
    new_lines: int = 0  # lines no earlier import held
    matched: int = 0  # new lines whose order we hold
    created_at: datetime = time_field(default_now=True)


class BillEntry(SQLModel, table=True):
    """A line of the platform's settlement data or of a bill file, unique per store by the platform's own
    identity of it, so that importing it again adds nothing. ``order_id`` is None while no order matches."""

    __tablename__ = "bill_line"
    __table_args__ = (
        UniqueConstraint("store_id", "line_key"),
        Index("ix_bill_line_store_order", "store_id", "order_external_id"),
        Index("ix_bill_line_store_time", "store_id", "occurred_at"),
    )

    id: int | None = id_field()
    store_id: int = fk_field("store.id", index=False)
    bill_import_id: int | None = fk_field("bill_import.id", nullable=True)
    line_key: str = Field(max_length=255)
    order_external_id: str | None = Field(default=None, max_length=128)
    order_id: int | None = fk_field("sales_order.id", nullable=True)
    source: str = Field(max_length=16)  # platform (an API's settlement data), bill (a bill file)
    kind: str = Field(max_length=16)  # sale, refund, fee, subsidy, adjustment, other
    currency: str = Field(max_length=3)
    amount_minor: int = money_field()  # what the platform paid the shop for this line (negative: took)
    gross_minor: int = money_field()
    refund_minor: int = money_field()
    fee_minor: int = money_field()
    subsidy_minor: int = money_field()
    fees: dict = json_field()  # fee items by the platform's names
    fee_known: bool = True  # the line states its order's fee (adapters.base.BillLine.fee_known)
    occurred_at: datetime | None = time_field()
    raw: dict | list | None = json_field(default_factory=lambda: None, nullable=True)
    created_at: datetime = time_field(default_now=True)
