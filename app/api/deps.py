"""Typed dependencies: the database, the acting principal and scope checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from app.config import Settings
from app.db import Database
from app.errors import Problem
from app.models import ApiToken
from app.security import Principal, expand_scopes, hash_token, same_secret


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="coopsync"'}


async def current_principal(request: Request, db: DbDep, settings: SettingsDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
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
    return Principal(name=f"token:{row.id}:{row.name}", scopes=expand_scopes(row.scopes.split()))


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
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
