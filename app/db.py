"""The database: engines for SQLite (WAL, BEGIN IMMEDIATE) and PostgreSQL (asyncpg), and the unit of work
(one transaction, its before-commit hooks, and SQLite's writer turn)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

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


def bind_time(session_or_engine, moment: datetime):
    """A time bound into raw SQL: raw SQL bypasses the UTCDateTime type, so match how it stores values."""
    return moment.replace(tzinfo=None) if is_sqlite(session_or_engine) else moment


BeforeCommit = Callable[[AsyncSession], Awaitable[None]]


def before_commit(session: AsyncSession, key: str, hook: BeforeCommit) -> None:
    """Run ``hook`` once, just before this session's transaction commits, however often it is asked
    for under the same ``key`` (for example, one stock push per store of each sku that changed)."""
    session.info.setdefault("before_commit", {})[key] = hook


async def run_before_commit(session: AsyncSession) -> None:
    """Run the hooks asked for with ``before_commit``; a hook may ask for more."""
    hooks: dict = session.info.get("before_commit") or {}
    while hooks:
        _, hook = hooks.popitem()
        await hook(session)


@dataclass
class Database:
    """The process's engine and its units of work."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    _writer: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _writer_task: asyncio.Task | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 8) -> "Database":
        engine = make_engine(url, pool_size=pool_size)
        return cls(engine, make_sessionmaker(engine))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: services flush, this commits once (after the before-commit hooks).

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
