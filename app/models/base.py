"""Shared column types and the metadata naming convention for every table."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Integer, Text, TypeDecorator
from sqlmodel import Field, SQLModel

from app import crypto

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IdType = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER keys


class UTCDateTime(TypeDecorator):
    """Aware UTC in, aware UTC out, on every engine (SQLite forgets offsets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware UTC only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)



class EncryptedText(TypeDecorator):
    """A secret string, stored as a Fernet token (``app.crypto``); a token no key opens raises, never reads as text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        return None if value is None else crypto.encrypt(value.encode("utf-8"))

    def process_result_value(self, value: str | None, dialect) -> str | None:
        return None if value is None else crypto.decrypt(value).decode("utf-8")


class EncryptedJSON(TypeDecorator):
    """A JSON document of secrets (a dict), stored as one Fernet token of its JSON text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect) -> str | None:
        return None if value is None else crypto.encrypt(orjson.dumps(value))

    def process_result_value(self, value: str | None, dialect):
        return None if value is None else orjson.loads(crypto.decrypt(value))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def id_field() -> Any:
    return Field(default=None, primary_key=True, sa_type=IdType)


def fk_field(target: str, *, nullable: bool = False, index: bool = True, ondelete: str | None = None) -> Any:
    return Field(default=None if nullable else ..., foreign_key=target, sa_type=IdType,
                 nullable=nullable, index=index, ondelete=ondelete)


def money_field(default: int | None = 0, *, nullable: bool = False) -> Any:
    return Field(default=default, sa_type=BigInteger, nullable=nullable)


def time_field(*, nullable: bool = True, default_now: bool = False, index: bool = False) -> Any:
    if default_now:
        return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def json_field(default_factory=dict, *, nullable: bool = False) -> Any:
    return Field(default_factory=default_factory, sa_type=JSON, nullable=nullable)
