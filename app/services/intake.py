"""Webhook intake: verify, store in the inbox with a job to apply it, acknowledge.

Rows from concurrent requests are written together in one transaction (group commit); each request
is answered only after the transaction holding its row committed, so an acknowledgement is always a
durability promise. The write goes straight to the database driver (one thread with its own sqlite3
connection, or one asyncpg connection), not through the ORM: at a webhook burst the ORM's per-row
work, not the database, was the limit. No outbound call is made here.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from app.db import SQLITE_BUSY_TIMEOUT_MS, Database, sqlite_pragmas
from app.models.base import utcnow
from app.jobs.queue import IntakeLoad, wake_workers
from app.services.apply import handle_inbox_apply as APPLY_JOB

log = logging.getLogger("coopsync.intake")

# The fast SQL below writes apply jobs itself; their values come from the catalogue entry.
INBOX_APPLY_JOB = APPLY_JOB.name
INBOX_APPLY_PRIORITY = int(APPLY_JOB.priority)
INBOX_APPLY_MAX_ATTEMPTS = int(APPLY_JOB.max_attempts)
MAX_BATCH = 256  # rows per group commit
APPLICATION_NAME = "coopsync-intake"  # how the intake's PostgreSQL connection shows in pg_stat_activity
KEPT_HEADERS = 40  # headers kept with a delivery (the signature and event ids are among the first)


def dedupe_key_for(platform_key: str | None, body: bytes) -> str:
    if platform_key:
        return platform_key[:255]
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class PendingRow:
    store_id: int
    platform: str
    dedupe_key: str
    topic: str | None
    headers: dict
    body: bytes
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]


# (store_id, platform, dedupe_key, topic, headers as JSON text, body)
RowValues = tuple[int, str, str, str | None, str, bytes]


class SqliteInboxWriter:
    """Writes batches on one thread of its own with a plain sqlite3 connection.

    The thread holds the GIL only to bind values; SQLite's own work and the commit's fsync run
    without it, beside the event loop. Batches take this process's writer turn first
    (``Database.exclusive_writer``), so the workers' transactions and the intake queue in order."""

    INSERT_INBOX = (
        "INSERT INTO inbox (store_id, platform, dedupe_key, topic, headers, body, status, attempts, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?) ON CONFLICT (store_id, dedupe_key) DO NOTHING")
    INSERT_JOB = (
        "INSERT INTO job (name, payload, status, priority, run_after, attempts, max_attempts, created_at, updated_at) "
        f"VALUES ('{INBOX_APPLY_JOB}', ?, 'queued', {INBOX_APPLY_PRIORITY}, ?, 0, {INBOX_APPLY_MAX_ATTEMPTS}, ?, ?)")
    TOUCH_STORE = "UPDATE store SET last_webhook_at = ? WHERE id = ?"

    def __init__(self, db: Database) -> None:
        self.db = db
        # The engine's own reading of the URL, so that this connection opens the same file.
        args, params = db.engine.dialect.create_connect_args(db.engine.url)
        self.path = args[0] if args else ":memory:"
        self.uri = bool(params.get("uri"))
        if self.path == ":memory:" or "mode=memory" in self.path or self.path.startswith("file::memory:"):
            # A second connection to an in-memory database is a different, empty database: the
            # deliveries acknowledged there would be lost.
            raise ValueError("coopsync needs a SQLite database file (or PostgreSQL): an in-memory database "
                             "cannot hold the webhook inbox; set COOPSYNC_DATABASE_URL to sqlite+aiosqlite:///path")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coopsync-inbox")
        self._conn: sqlite3.Connection | None = None

    @staticmethod
    def is_row_error(exc: BaseException) -> bool:
        """An error one row's values cause (a constraint, a value SQLite cannot bind)."""
        return isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, ValueError,
                                TypeError, OverflowError))

    async def write(self, rows: list[RowValues], now: datetime) -> list[tuple[int, int, str]]:
        if self._thread is None:  # closed, and in use again (a restarted app)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coopsync-inbox")
        async with self.db.exclusive_writer():
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, rows, now)

    def _write(self, rows: list[RowValues], now: datetime) -> list[tuple[int, int, str]]:
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                isolation_level=None, uri=self.uri)
            sqlite_pragmas(conn)
        # The format SQLAlchemy's SQLite DATETIME reads back (naive UTC, microseconds).
        stamp = now.replace(tzinfo=None).isoformat(" ", "microseconds")
        inserted: list[tuple[int, int, str]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for store_id, platform, key, topic, headers, body in rows:
                cursor = conn.execute(self.INSERT_INBOX, (store_id, platform, key, topic, headers, body, stamp))
                if cursor.rowcount == 1:
                    inserted.append((cursor.lastrowid, store_id, key))
            if inserted:
                conn.executemany(self.INSERT_JOB, [(f'{{"inbox_id": {inbox_id}}}', stamp, stamp, stamp)
                                                   for inbox_id, _, _ in inserted])
                conn.executemany(self.TOUCH_STORE, [(stamp, store_id) for store_id in {s for _, s, _ in inserted}])
            conn.execute("COMMIT")
        except BaseException:
            # A fresh connection for the next batch: whatever failed may have left this one unusable.
            self._conn = None
            conn.close()
            raise
        return inserted

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(thread, _close)
        thread.shutdown(wait=True)


class PostgresInboxWriter:
    """Writes a batch as one statement on one asyncpg connection of its own: the rows as arrays,
    their apply jobs and the stores' last-webhook time in the same statement, committed as one."""

    STATEMENT = f"""
        WITH ins AS (
            INSERT INTO inbox (store_id, platform, dedupe_key, topic, headers, body, status, attempts, received_at)
            SELECT r.store_id, r.platform, r.dedupe_key, r.topic, r.headers::json, r.body, 'pending', 0, $7
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
                 AS r(store_id, platform, dedupe_key, topic, headers, body)
            ON CONFLICT (store_id, dedupe_key) DO NOTHING
            RETURNING id, store_id, dedupe_key
        ), jobs AS (
            INSERT INTO job (name, payload, status, priority, run_after, attempts, max_attempts, created_at, updated_at)
            SELECT '{INBOX_APPLY_JOB}', json_build_object('inbox_id', ins.id), 'queued', {INBOX_APPLY_PRIORITY}, $7,
                   0, {INBOX_APPLY_MAX_ATTEMPTS}, $7, $7
            FROM ins
        ), touched AS (
            UPDATE store SET last_webhook_at = $7 WHERE id IN (SELECT store_id FROM ins)
        )
        SELECT id, store_id, dedupe_key FROM ins
    """

    def __init__(self, db: Database) -> None:
        import asyncpg

        # The engine's own reading of the URL (host, ssl=..., and so on), less what only
        # SQLAlchemy's adapter understands: asyncpg would send unknown options to the server.
        _, params = db.engine.dialect.create_connect_args(db.engine.url)
        accepted = inspect.signature(asyncpg.connect).parameters
        if "prepared_statement_cache_size" in params:
            params["statement_cache_size"] = params.pop("prepared_statement_cache_size")
        self.connect_args = {k: v for k, v in params.items() if k in accepted}
        self.connect_args["server_settings"] = {**self.connect_args.get("server_settings", {}),
                                                "application_name": APPLICATION_NAME}
        self._conn = None

    @staticmethod
    def is_row_error(exc: BaseException) -> bool:
        """An error one row's values cause (a constraint, a value PostgreSQL refuses)."""
        import asyncpg

        return isinstance(exc, (asyncpg.IntegrityConstraintViolationError, asyncpg.exceptions.DataError,
                                ValueError, TypeError, OverflowError))

    async def write(self, rows: list[RowValues], now: datetime) -> list[tuple[int, int, str]]:
        import asyncpg

        columns = list(zip(*rows))
        for attempt in (1, 2):
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(**self.connect_args)
            conn = self._conn
            try:
                records = await conn.fetch(self.STATEMENT, *columns, now)
            except Exception as exc:
                if not _connection_lost(exc, conn):
                    raise
                self._conn = None
                conn.terminate()
                # Once more on a new connection (a server restart or an idle cut). Safe: if the lost
                # statement did commit, its rows conflict now and are answered as duplicates.
                if attempt == 2:
                    raise
                continue
            return [(r[0], r[1], r[2]) for r in records]
        raise AssertionError("unreachable")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()


def _connection_lost(exc: BaseException, conn) -> bool:
    import asyncpg

    return conn.is_closed() or isinstance(exc, (
        OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.CannotConnectNowError))


def make_inbox_writer(db: Database):
    return SqliteInboxWriter(db) if db.is_sqlite else PostgresInboxWriter(db)


class GroupCommitter:
    """Batches inbox inserts from concurrent requests into one transaction each.

    While one batch is being written, the rows that arrive queue up and make the next batch, so the
    batch size follows the load by itself; ``window_ms`` adds a wait for more rows on top."""

    def __init__(self, db: Database, *, window_ms: float = 0.0) -> None:
        self.db = db
        self.window_s = window_ms / 1000
        self.writer = make_inbox_writer(db)
        self._pending: list[PendingRow] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="coopsync-inbox-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for row in self._pending:
            if not row.future.done():
                row.future.set_exception(RuntimeError("the service is stopping"))
        self._pending = []
        await self.writer.close()

    async def submit(self, row: PendingRow) -> str:
        """'accepted' or 'duplicate', once the row (or its twin) is committed."""
        self.start()
        row.future = asyncio.get_running_loop().create_future()
        self._pending.append(row)
        self._wake.set()
        return await row.future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.window_s > 0:
                await asyncio.sleep(self.window_s)
            self._wake.clear()
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if self._pending:
                self._wake.set()
            if not batch:
                continue
            IntakeLoad.committed(len(batch))
            try:
                await self._commit(batch)
            finally:  # cancelled while writing (shutdown): no request may wait for ever
                for row in batch:
                    if not row.future.done():
                        row.future.set_exception(RuntimeError("the service stopped before the delivery was stored"))
            wake_workers(local_only=True)  # what it wrote are inbox.apply jobs

    async def _commit(self, batch: list[PendingRow]) -> None:
        try:
            outcomes = await self.write(batch)
        except Exception as exc:
            if len(batch) > 1 and self.writer.is_row_error(exc):
                # One bad row must not fail its neighbours: each row once more, on its own.
                log.warning("inbox group commit of %d rows failed; writing them one by one", len(batch),
                            exc_info=True)
                for row in batch:
                    await self._commit([row])
                return
            # The database failed (down, locked, full): these requests answer 503 and the platforms
            # deliver again; trying each row alone would only keep them waiting longer.
            log.exception("inbox write of %d rows failed", len(batch))
            for row in batch:
                if not row.future.done():
                    row.future.set_exception(exc)
            return
        for row, outcome in zip(batch, outcomes):
            if not row.future.done():
                row.future.set_result(outcome)

    async def write(self, batch: list[PendingRow]) -> list[str]:
        """Store a batch; the outcome of each row in order. The first of two rows with one key in a
        batch is the one accepted."""
        seen: set[tuple[int, str]] = set()
        values: list[RowValues] = []
        for row in batch:
            key = (row.store_id, row.dedupe_key)
            if key not in seen:
                seen.add(key)
                values.append((row.store_id, row.platform, row.dedupe_key, row.topic,
                               orjson.dumps(row.headers).decode(), row.body))
        inserted = {(store_id, key) for _, store_id, key in await self.writer.write(values, utcnow())}
        outcomes = []
        for row in batch:
            key = (row.store_id, row.dedupe_key)
            if key in inserted:
                inserted.discard(key)
                outcomes.append("accepted")
            else:
                outcomes.append("duplicate")
        return outcomes


def kept_headers(headers) -> dict:
    kept = {}
    for name, value in list(headers.items())[:KEPT_HEADERS]:
        lname = name.lower()
        if lname in ("authorization", "cookie"):
            continue
        kept[lname] = value[:1000]
    return kept
