"""Alembic environment: async engine from COOPSYNC_DATABASE_URL (or the caller's connection)."""

from __future__ import annotations

import asyncio
import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers every table on the metadata)
from app.config import Settings
from app.db import make_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def _url() -> str:
    return config.attributes.get("database_url") or Settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
        compare_type=True,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_outside_transaction(connection: Connection, *statements: str) -> list:
    """Run statements on the driver's connection itself: SQLite refuses these inside a transaction, and
    SQLAlchemy would begin one (BEGIN IMMEDIATE, see app/db.py) before any statement of its own."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        results = []
        for statement in statements:
            cursor.execute(statement)
            results.append(cursor.fetchall())
        return results
    finally:
        cursor.close()


async def _compact(connection, tables: set[str]) -> None:
    """Leave no copy of rewritten rows behind (a migration that encrypts them asks for this in
    ``config.attributes["compact_tables"]``): SQLite rebuilds the file and empties its WAL; PostgreSQL
    rewrites the tables without their dead row versions."""
    if connection.dialect.name == "sqlite":
        results = await connection.run_sync(_sqlite_outside_transaction, "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)")
        if results[-1] and results[-1][0][0]:
            logging.getLogger("alembic").warning(
                "VACUUM done, but the -wal file could not be emptied because another process has the database "
                "open: stop it, then run `PRAGMA wal_checkpoint(TRUNCATE)` on the database")
    else:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in sorted(tables):
            await autocommit.exec_driver_sql(f'VACUUM FULL "{table}"')


async def _run_async() -> None:
    engine = make_engine(_url())
    async with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Off while migrating, as SQLite's ALTER TABLE procedure asks: batch operations copy a table
            # and drop the original, which with enforcement on would delete (cascade) or refuse its children.
            # Migrations that copy a parent table check the foreign keys themselves before they commit.
            await connection.run_sync(_sqlite_outside_transaction, "PRAGMA foreign_keys=OFF")
        await connection.run_sync(_run_sync)
        await connection.commit()
        tables = config.attributes.pop("compact_tables", None)
        if tables:
            await _compact(connection, tables)
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
