"""Typed dependencies: the database, the acting principal and scope checks."""

from __future__ import annotations

from contextlib import asynccontextmanager
import asyncio
from dataclasses import dataclass, field
from typing import Annotated, AsyncIterator

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import READ_ONLY_OPTION
from app.errors import Problem
from app.models import ApiToken
from app.security import Principal, expand_scopes, hash_token, same_secret


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    _writer: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _writer_task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: services flush, this commits once before the answer is sent.

        On SQLite the writers of this process queue here, in order, instead of in SQLite's busy
        handler, which sleeps in growing steps and lets a burst of writers starve each other."""
        if not self.is_sqlite:
            async with self.sessions() as session:
                async with session.begin():
                    yield session
                    await run_before_commit(session)
            return
        if self._writer_task is asyncio.current_task() and self._writer.locked():
            raise RuntimeError("a write transaction inside another on the same task would deadlock")
        async with self._writer:
            self._writer_task = asyncio.current_task()
            try:
                async with self.sessions() as session:
                    async with session.begin():
                        yield session
                        await run_before_commit(session)
            finally:
                self._writer_task = None

    @asynccontextmanager
    async def exclusive_writer(self) -> AsyncIterator[None]:
        """This process's writer turn, for writes made outside a session (the inbox intake's own
        connection). On PostgreSQL, row locks do this job and nothing is held."""
        if not self.is_sqlite:
            yield
            return
        async with self._writer:
            yield

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading: on SQLite its transaction is deferred and never takes the write lock."""
        async with self.sessions() as session:
            if self.is_sqlite:
                await session.connection(execution_options={READ_ONLY_OPTION: True})
            yield session


async def run_before_commit(session: AsyncSession) -> None:
    """Run what domain code asked to do once per transaction, just before it commits (for example,
    queue one stock push per store of each sku that changed, however many movements it had)."""
    hooks: dict = session.info.get("before_commit") or {}
    while hooks:
        _, hook = hooks.popitem()
        await hook(session)


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
