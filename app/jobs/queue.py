"""Write jobs in the caller's transaction; wake this process's workers once that transaction commits."""

from __future__ import annotations

import random
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import event, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.db import bind_time
from app.models import Job
from app.models.base import utcnow

_wakers: list[Callable[..., None]] = []


def add_waker(callback: Callable[..., None]) -> None:
    _wakers.append(callback)


def remove_waker(callback: Callable[..., None]) -> None:
    if callback in _wakers:
        _wakers.remove(callback)


class IntakeLoad:
    """The sizes of this process's last inbox group commits and when the last one was. A burst shows as
    commits that each carry many deliveries (they queued while the one before was written): then the
    process's time is better spent acknowledging than applying."""

    recent: deque[int] = deque(maxlen=9)
    last_at = 0.0

    @classmethod
    def committed(cls, rows: int) -> None:
        cls.recent.append(rows)
        cls.last_at = time.monotonic()


def intake_busy(batch_rows: int, within_s: float = 0.25) -> bool:
    """Webhooks arrive in a burst: the median of the last group commits held at least ``batch_rows``
    deliveries, and the last commit is recent."""
    if not IntakeLoad.recent or time.monotonic() - IntakeLoad.last_at > within_s:
        return False
    return sorted(IntakeLoad.recent)[len(IntakeLoad.recent) // 2] >= batch_rows


def wake_workers(*, local_only: bool = False) -> None:
    """Tell this process's workers that jobs were committed (for writers that bypass the session);
    ``local_only``: only database-only jobs were (the inbox's apply jobs), so the loops that run
    platform calls need not look (on SQLite each look is a write transaction)."""
    for wake in list(_wakers):
        wake(local_only=local_only)


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop("jobs_enqueued", False):
        wake_workers()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop("jobs_enqueued", None)


async def insert_job(
    session: AsyncSession,
    name: str,
    payload: dict | None = None,
    *,
    run_after: datetime | None = None,
    dedupe_key: str | None = None,
    lock_key: str | None = None,
    max_attempts: int = 20,
    priority: int = 100,
) -> bool:
    """Add a job row in the current transaction. With ``dedupe_key``, a job already queued under the
    same key absorbs this one (returns False): a burst of changes coalesces into one run.

    Callers name a kind from the catalogue (``JobSpec.enqueue``); this is the one place job rows are
    written through the session."""
    values = dict(name=name, payload=payload or {}, status="queued", run_after=run_after or utcnow(), priority=priority,
                  attempts=0, max_attempts=max_attempts, dedupe_key=dedupe_key, lock_key=lock_key,
                  created_at=utcnow(), updated_at=utcnow())
    dialect = session.bind.dialect.name
    if dedupe_key is None:
        await session.execute(insert(Job).values(**values))
        inserted = True
    else:
        ins = (postgresql.insert(Job) if dialect == "postgresql" else sqlite.insert(Job)).values(**values)
        stmt = ins.on_conflict_do_nothing(index_elements=["dedupe_key"], index_where=text("status = 'queued'"))
        result = await session.execute(stmt)
        inserted = result.rowcount == 1
        if not inserted and run_after is None:
            # A queued twin that waits on a back-off must not hold back this newer change.
            await session.execute(
                text("UPDATE job SET run_after = :now WHERE dedupe_key = :key AND status = 'queued' AND run_after > :now"),
                {"now": bind_time(session, utcnow()), "key": dedupe_key},
            )
    session.sync_session.info["jobs_enqueued"] = True
    return inserted


def backoff_s(attempt: int, *, base_s: float = 2.0, cap_s: float = 3600.0) -> float:
    """Exponential back-off with full jitter, seconds before attempt ``attempt + 1``."""
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
