"""Webhook intake: verify, store in the inbox with a job to apply it, acknowledge.

Rows from concurrent requests are gathered for a few milliseconds and written in one transaction
(group commit); each request is answered only after the transaction holding its row committed, so
an acknowledgement is always a durability promise. No outbound call is made here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import insert, update
from sqlalchemy.dialects import postgresql, sqlite

from app.api.deps import Database
from app.models import InboxItem, Job, Store
from app.models.base import utcnow
from app.workers.jobs import _wakers

log = logging.getLogger("coopsync.intake")

INBOX_APPLY_JOB = "inbox.apply"
MAX_BATCH = 256  # rows per group commit
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


class GroupCommitter:
    """Batches inbox inserts from concurrent requests into one transaction each."""

    def __init__(self, db: Database, *, window_ms: float = 2.0) -> None:
        self.db = db
        self.window_s = window_ms / 1000
        self._queue: asyncio.Queue[PendingRow] | None = None
        self._task: asyncio.Task | None = None
        self.dialect = db.engine.dialect.name
        # Built once: executed with a list of rows it compiles once (insertmanyvalues), where a
        # multi-VALUES statement would be compiled anew for every batch size.
        ins = postgresql.insert(InboxItem) if self.dialect == "postgresql" else sqlite.insert(InboxItem)
        self._insert = ins.on_conflict_do_nothing(index_elements=["store_id", "dedupe_key"]).returning(
            InboxItem.id, InboxItem.store_id, InboxItem.dedupe_key)

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="coopsync-inbox-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, row: PendingRow) -> str:
        """'accepted' or 'duplicate', once the row (or its twin) is committed."""
        self.start()
        row.future = asyncio.get_running_loop().create_future()
        await self._queue.put(row)
        return await row.future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.window_s
            while len(batch) < MAX_BATCH:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    try:
                        batch.append(self._queue.get_nowait())
                        continue
                    except asyncio.QueueEmpty:
                        break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            try:
                outcomes = await self.write(batch)
            except Exception as exc:  # the database failed: every request in the batch answers 503
                log.exception("inbox group commit failed")
                for row in batch:
                    if not row.future.done():
                        row.future.set_exception(exc)
                continue
            for row, outcome in zip(batch, outcomes):
                if not row.future.done():
                    row.future.set_result(outcome)
            for wake in list(_wakers):
                wake()

    async def write(self, batch: list[PendingRow]) -> list[str]:
        seen: set[tuple[int, str]] = set()
        unique: list[PendingRow] = []
        for row in batch:
            key = (row.store_id, row.dedupe_key)
            if key not in seen:
                seen.add(key)
                unique.append(row)
        now = utcnow()
        values = [dict(store_id=r.store_id, platform=r.platform, dedupe_key=r.dedupe_key, topic=r.topic,
                       headers=r.headers, body=r.body, status="pending", attempts=0, received_at=now)
                  for r in unique]
        async with self.db.transaction() as session:
            inserted = {(r[1], r[2]): r[0] for r in (await session.execute(self._insert, values)).all()}
            if inserted:
                await session.execute(insert(Job), [
                    dict(name=INBOX_APPLY_JOB, payload={"inbox_id": inbox_id}, status="queued", run_after=now, priority=100,
                         attempts=0, max_attempts=20, created_at=now, updated_at=now)
                    for inbox_id in inserted.values()
                ])
                for store_id in {k[0] for k in inserted}:
                    await session.execute(update(Store).where(Store.id == store_id).values(last_webhook_at=now))
        outcomes = []
        claimed: set[tuple[int, str]] = set()
        for row in batch:
            key = (row.store_id, row.dedupe_key)
            if key in inserted and key not in claimed:
                claimed.add(key)
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
