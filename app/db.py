"""Async engines for SQLite (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000  # milliseconds a writer waits for the lock before failing
READ_ONLY_OPTION = "coopsync_read_only"  # execution option: this transaction only reads
# PostgreSQL errors that say "try the same again": serialization failure, deadlock, lock not available.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def sqlite_pragmas(dbapi_connection) -> None:
    """The settings every SQLite connection of the service runs with."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL, not NORMAL: an acknowledged webhook must survive a power cut, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _prepare_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every sqlite test
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions would defer it).
        dbapi_connection.isolation_level = None
        sqlite_pragmas(dbapi_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        if conn.get_execution_options().get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")  # readers never wait for the writer in WAL mode
            return
        # Writers take the write lock up front: two deferred transactions that both read then write
        # would otherwise deadlock into SQLITE_BUSY instead of queueing (lost-update defence).
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_transient_db_error(exc: BaseException) -> bool:
    """A database error that a retry of the same work can clear (a lock, a race, a deadlock), as
    against one that would fail again (bad data, a bug)."""
    if isinstance(exc, (OperationalError, IntegrityError)):
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in TRANSIENT_SQLSTATES
    return False


def _json_dumps(value) -> str:
    # orjson: raw platform payloads go into JSON columns on every order, ~10x faster than json.dumps.
    return orjson.dumps(value).decode()


def make_engine(url: str, *, pool_size: int = 8, echo: bool = False) -> AsyncEngine:
    parsed = make_url(url)
    json_options = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                                     **json_options)
        _prepare_sqlite(engine)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **json_options,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def is_sqlite(engine_or_session) -> bool:
    bind = getattr(engine_or_session, "bind", None) or engine_or_session
    return bind.dialect.name == "sqlite"


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: services flush, this commits once (or rolls back on error)."""
    async with sessions() as session:
        async with session.begin():
            yield session
