"""The webhook inbox: every authenticated delivery, kept until applied (or failed, for replay)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, json_field, time_field


class InboxItem(SQLModel, table=True):
    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("store_id", "dedupe_key"),)

    id: int | None = id_field()
    store_id: int = fk_field("store.id")
    platform: str = Field(max_length=32)
    dedupe_key: str = Field(max_length=255)
    topic: str | None = Field(default=None, max_length=128)
    headers: dict = json_field()
    body: bytes = Field(sa_type=LargeBinary)
    status: str = Field(default="pending", max_length=16, index=True)  # pending, done, failed
    attempts: int = 0
    error: str | None = Field(default=None, max_length=2000)
    received_at: datetime = time_field(default_now=True)
    processed_at: datetime | None = time_field()
