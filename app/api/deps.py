"""Typed dependencies: the database, the acting principal and scope checks."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, Field, WithJsonSchema
from sqlalchemy import or_, select, update

from app.config import Settings
from app.db import Database
from app.errors import Problem
from app.models import ApiToken
from app.models.base import utcnow
from app.security import Principal, expand_scopes, hash_token, same_secret

log = logging.getLogger("coopsync.auth")

MAX_ID = 2**63 - 1  # ids are bigint: a larger one names nothing (and would overflow the driver)
LAST_USED_EVERY = timedelta(minutes=1)  # a token's last_used_at is written at most this often


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="coopsync"'}
# Declares the scheme in the OpenAPI document; the refusal (401 problem+json) is ours, below.
bearer = HTTPBearer(scheme_name="bearer", auto_error=False,
                    description="an API token (`coopsync token create`) or COOPSYNC_ADMIN_TOKEN")


async def current_principal(db: DbDep, settings: SettingsDep,
                            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
                            ) -> Principal:
    token = credentials.credentials if credentials is not None else ""
    if not token:
        raise Problem(401, "a bearer token is required", headers=_CHALLENGE)
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    if admin and same_secret(token, admin):
        return Principal(name="admin-token", scopes=expand_scopes(["admin"]))
    # Looked up by digest: the database never sees the token, and equality on a digest of a
    # high-entropy secret leaks nothing useful through timing.
    async with db.read() as session:
        row = (await session.execute(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        )).scalar_one_or_none()
    if row is None:
        raise Problem(401, "the bearer token is not valid", headers=_CHALLENGE)
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        await _note_use(db, row.id, now)
    # At most 128 characters, as idempotency records keep it (the id alone makes it unique).
    return Principal(name=f"token:{row.id}:{row.name}"[:128], scopes=expand_scopes(row.scopes.split()))


async def _note_use(db: Database, token_id: int, now) -> None:
    """Write ``last_used_at``, at most once a minute per token (the row just read says when it was
    last written, so most requests write nothing); replicas racing here write it once."""
    try:
        async with db.transaction() as session:
            await session.execute(update(ApiToken).where(
                ApiToken.id == token_id,
                or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_EVERY),
            ).values(last_used_at=now))
    except Exception:  # bookkeeping only: a busy database must not refuse the request
        log.warning("could not note a token's last use", exc_info=True, extra={"token_id": token_id})


def require(scope: str):
    async def _check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(scope):
            raise Problem(403, f"this route needs the {scope!r} scope")
        return principal

    _check.__name__ = f"require_{scope.replace(':', '_')}"
    return _check


StockRead = Annotated[Principal, Depends(require("stock:read"))]
StockWrite = Annotated[Principal, Depends(require("stock:write"))]
OrdersRead = Annotated[Principal, Depends(require("orders:read"))]
Fulfillment = Annotated[Principal, Depends(require("fulfillment"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def _path_id(what: str):
    def known(value: int) -> int:
        if not 1 <= value <= MAX_ID:
            raise Problem(404, f"no {what} {value}")  # not a validation error: such an id names nothing
        return value

    return Annotated[int, AfterValidator(known),
                     WithJsonSchema({"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID})]


# A path id outside 1..2**63-1 names nothing: 404, never a driver overflow.
StoreIdPath = _path_id("store")
OrderIdPath = _path_id("order")
RefundIdPath = _path_id("refund")
ResyncIdPath = _path_id("resync")
InboxIdPath = _path_id("inbox row")
TokenIdPath = _path_id("token")
ShipmentIdPath = _path_id("shipment")
# A query or body id must be one an id can be: past int64 it is 422.
IdValue = Annotated[int, Field(ge=1, le=MAX_ID)]
