"""API tokens (stored hashed) and idempotency records for write routes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, time_field


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = id_field()
    name: str = Field(max_length=128)
    token_hash: str = Field(max_length=64, unique=True)  # sha256 hex of the token
    scopes: str = Field(max_length=255)  # space separated
    created_at: datetime = time_field(default_now=True)
    last_used_at: datetime | None = time_field()  # written at most once a minute per token
    revoked_at: datetime | None = time_field()


class OAuthState(SQLModel, table=True):
    """A consent request in flight: the ``state`` handed to the platform, kept hashed, used once."""

    __tablename__ = "oauth_state"

    id: int | None = id_field()
    store_id: int = fk_field("store.id", ondelete="CASCADE")
    state_hash: str = Field(max_length=64, unique=True)  # sha256 hex of the state value
    created_at: datetime = time_field(default_now=True)
    expires_at: datetime = time_field(nullable=False)
    used_at: datetime | None = time_field()


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a write with an ``Idempotency-Key`` (IETF draft semantics)."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: int | None = id_field()
    principal: str = Field(max_length=128)
    key: str = Field(max_length=255)
    method: str = Field(max_length=8)
    path: str = Field(max_length=500)
    request_hash: str = Field(max_length=64)
    status: str = Field(max_length=16)  # in_flight, completed
    response_status: int | None = None
    response_body: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)
