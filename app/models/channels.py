"""Push channel leases: one consumer per platform app across every replica, and what it last saw."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.base import time_field


class ChannelLease(SQLModel, table=True):
    """Who consumes one push channel (``pinduoduo:<app key>``, ``taobao:<app key>``), until when."""

    __tablename__ = "channel_lease"

    name: str = Field(primary_key=True, max_length=128)
    holder: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = time_field()
    heartbeat_at: datetime | None = time_field()
    last_message_at: datetime | None = time_field()
    connected: bool = False
    messages: int = 0
    reconnects: int = 0
