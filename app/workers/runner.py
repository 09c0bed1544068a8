"""The job runner: claim with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) under a lease, run, record.

A job whose lease ran out (its process died) is claimed again. Handlers make their own effects
idempotent (cause keys, inbox status under a row lock), so a job that runs twice has one effect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.config import Settings
from app.db import Database, bind_time
from app.jobs.outcomes import Dead, Done, Handler, JobContext, Outcome, Retry
from app.jobs.queue import add_waker, backoff_s, remove_waker
from app.metrics import JOBS
from app.models import Job
from app.models.base import utcnow

log = logging.getLogger("coopsync.worker")


_CLAIM_SQL = """
UPDATE job SET status = 'running', attempts = attempts + 1, lease_until = :lease, locked_by = :me,
               updated_at = :now
WHERE id = (
    SELECT j.id FROM job j
    WHERE j.status = 'queued' AND j.run_after <= :now {names}
      AND (j.lock_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM job r WHERE r.status = 'running' AND r.lock_key = j.lock_key))
    ORDER BY j.priority, j.run_after, j.id
    LIMIT 1 {skip_locked}
)
RETURNING id
"""

_CLAIM_MORE_SQL = """
UPDATE job SET status = 'running', attempts = attempts + 1, lease_until = :lease, locked_by = :me,
               updated_at = :now
WHERE id IN (
    SELECT j.id FROM job j
    WHERE j.status = 'queued' AND j.name = :name AND j.lock_key IS NULL AND j.run_after <= :now
    ORDER BY j.run_after, j.id
    LIMIT :more {skip_locked}
)
RETURNING id
"""

BATCH_SIZE = 16  # jobs claimed and recorded per transaction, for kinds declared with a batch handler

# A stalled job whose queued twin (same dedupe key) exists is superseded by it: the twin plans from
# the state at its own run, so nothing is lost, and requeuing would break the one-queued-per-key index.
_SUPERSEDE_STALLED_SQL = """
UPDATE job SET status = 'done', finished_at = :now, updated_at = :now, lease_until = NULL,
               last_error = 'lease expired; superseded by a newer queued job'
WHERE status = 'running' AND lease_until < :now AND dedupe_key IS NOT NULL
  AND EXISTS (SELECT 1 FROM job q WHERE q.status = 'queued' AND q.dedupe_key = job.dedupe_key)
"""

_REAP_SQL = """
UPDATE job SET status = 'queued', locked_by = NULL, lease_until = NULL, updated_at = :now,
               last_error = 'lease expired: the worker that held it stopped'
WHERE status = 'running' AND lease_until < :now
"""


class Runner:
    """Claims and runs jobs. On SQLite one job runs at a time; on PostgreSQL ``concurrency``."""

    def __init__(self, db: Database, settings: Settings, handlers: Mapping[str, Handler], *,
                 worker_id: str | None = None, services: dict[str, Any] | None = None,
                 names: list[str] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.handlers = handlers
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.services = services or {}
        self.names = names
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.is_sqlite = db.engine.dialect.name == "sqlite"

    # -- one step at a time (tests drive these directly) -------------------------------------
    async def reap(self) -> int:
        async with self.db.transaction() as session:
            now = bind_time(session, utcnow())
            superseded = await session.execute(text(_SUPERSEDE_STALLED_SQL), {"now": now})
            result = await session.execute(text(_REAP_SQL), {"now": now})
            return (result.rowcount or 0) + (superseded.rowcount or 0)

    async def claim(self) -> Job | None:
        jobs = await self.claim_batch(1)
        return jobs[0] if jobs else None

    async def claim_batch(self, size: int = BATCH_SIZE) -> list[Job]:
        """Claim the next due job; when it is one of the short flood jobs (inbox.apply), claim up to
        ``size - 1`` more of its kind in the same transaction, so a burst costs a commit per batch."""
        names_sql = ""
        params: dict[str, Any] = {}
        if self.names:
            placeholders = ", ".join(f":n{i}" for i in range(len(self.names)))
            names_sql = f"AND j.name IN ({placeholders})"
            params.update({f"n{i}": n for i, n in enumerate(self.names)})
        skip = "" if self.is_sqlite else "FOR UPDATE SKIP LOCKED"
        try:
            async with self.db.transaction() as session:
                now = utcnow()
                # A token per claim, not per worker: the fencing below must tell apart two claims of
                # one job by tasks of the same runner (a lease ran out, the job was claimed again).
                claim = f"{self.worker_id}:{uuid.uuid4().hex[:12]}"
                params.update(now=bind_time(session, now), me=claim,
                              lease=bind_time(session, now + timedelta(seconds=self.settings.job_lease_s)))
                row = (await session.execute(text(_CLAIM_SQL.format(names=names_sql, skip_locked=skip)), params)).first()
                if row is None:
                    return []
                first = await session.get(Job, row[0])
                ids = [first.id]
                if size > 1 and self._batch_handler(first.name) is not None and first.lock_key is None:
                    more = (await session.execute(text(_CLAIM_MORE_SQL.format(skip_locked=skip)), {
                        "now": params["now"], "me": claim, "lease": params["lease"], "name": first.name,
                        "more": size - 1})).all()
                    ids += [r[0] for r in more]
                if len(ids) == 1:
                    return [first]
                others = {j.id: j for j in (await session.execute(select(Job).where(Job.id.in_(ids[1:])))).scalars()}
                return [first] + [others[i] for i in ids[1:]]
        except IntegrityError:
            # Two workers raced for jobs sharing a lock key: the partial unique index let one win.
            return []

    async def run_one(self) -> Job | None:
        """Claim due work (one job, or a batch of flood jobs) and run it; None when nothing was due."""
        jobs = await self.claim_batch()
        if not jobs:
            return None
        if len(jobs) == 1:
            await self.execute(jobs[0])
            return jobs[0]
        batch = self._batch_handler(jobs[0].name)
        outcomes: list[Outcome] | None = None
        if batch is not None:
            try:
                outcomes = await batch([JobContext(db=self.db, settings=self.settings, job=job,
                                                   worker_id=self.worker_id, services=self.services) for job in jobs])
            except Exception:
                # One transaction for the batch failed as a whole (a deadlock, a bug in one row):
                # run the rows one by one, so one poison row cannot hold the others back.
                log.warning("batch of %d %s jobs failed; running them one by one", len(jobs), jobs[0].name,
                            exc_info=True)
        if outcomes is None:
            outcomes = [await self._run(job) for job in jobs]
        await self._record_many(list(zip(jobs, outcomes)))
        return jobs[0]

    def _batch_handler(self, name: str):
        # Kinds from the catalogue declare one (``JobSpec.batch``); plain handlers run one at a time.
        return getattr(self.handlers.get(name), "batch", None)

    async def run_until_idle(self, max_jobs: int = 10_000) -> int:
        """Run due jobs until none is due (tests and the CLI use this)."""
        count = 0
        while count < max_jobs:
            await self.reap()
            if await self.run_one() is None:
                break
            count += 1
        return count

    async def execute(self, job: Job) -> Outcome:
        outcome = await self._run(job)
        await self._record(job, outcome)
        return outcome

    async def _run(self, job: Job) -> Outcome:
        handler = self.handlers.get(job.name)
        ctx = JobContext(db=self.db, settings=self.settings, job=job, worker_id=self.worker_id,
                         services=self.services)
        if handler is None:
            return Dead(f"no handler for job {job.name!r}")
        try:
            return await handler(ctx)
        except (OperationalError, DBAPIError) as exc:
            return Retry(backoff_s(job.attempts, base_s=0.5, cap_s=30), f"database: {exc!r}"[:1500])
        except Exception as exc:  # an unexpected bug: keep the trace for the operator, retry with back-off
            log.exception("job %s #%s failed", job.name, job.id)
            return Retry(backoff_s(job.attempts), "".join(traceback.format_exception_only(exc))[:1500])

    async def _record_many(self, results: list[tuple[Job, Outcome]]) -> None:
        """Record a batch in one transaction; any trouble falls back to one transaction per job."""
        if any(not isinstance(outcome, Done) for _, outcome in results):
            for job, outcome in results:
                await self._record(job, outcome)
            return
        async with self.db.transaction() as session:
            now = bind_time(session, utcnow())
            await session.execute(text(
                "UPDATE job SET status = 'done', finished_at = :now, updated_at = :now, lease_until = NULL,"
                " last_error = NULL WHERE id = :id AND locked_by = :me"),
                [{"id": job.id, "me": job.locked_by, "now": now} for job, _ in results])
        for job, _ in results:
            JOBS.labels(job.name, "done").inc()

    async def _record(self, job: Job, outcome: Outcome) -> None:
        async with self.db.transaction() as session:
            now = utcnow()
            params: dict[str, Any] = {"id": job.id, "me": job.locked_by, "now": bind_time(session, now)}
            if isinstance(outcome, Done):
                sql = ("UPDATE job SET status = 'done', finished_at = :now, updated_at = :now, lease_until = NULL,"
                       " last_error = NULL, waiting_for = NULL WHERE id = :id AND locked_by = :me")
                label = "done"
            elif isinstance(outcome, Retry) and (not outcome.counts or job.attempts < job.max_attempts):
                params.update(run_after=bind_time(session, now + timedelta(seconds=outcome.delay_s)), err=outcome.error[:2000],
                              undo=0 if outcome.counts else 1, waiting=outcome.waiting_for)
                sql = ("UPDATE job SET status = 'queued', run_after = :run_after, last_error = :err, waiting_for = :waiting,"
                       " attempts = attempts - :undo, locked_by = NULL, lease_until = NULL, updated_at = :now"
                       " WHERE id = :id AND locked_by = :me")
                label = "retry"
            else:
                error = outcome.error if isinstance(outcome, (Dead, Retry)) else "dead"
                params.update(err=error[:2000])
                sql = ("UPDATE job SET status = 'dead', last_error = :err, finished_at = :now, updated_at = :now,"
                       " lease_until = NULL WHERE id = :id AND locked_by = :me")
                label = "dead"
            if label == "retry" and job.dedupe_key is not None:
                # A newer twin queued meanwhile (same dedupe key) covers this retry: re-queuing would
                # break the one-queued-per-key index, so this run ends as superseded instead.
                twin = (await session.execute(text(
                    "SELECT 1 FROM job WHERE status = 'queued' AND dedupe_key = :key AND id != :id LIMIT 1"),
                    {"key": job.dedupe_key, "id": job.id})).first()
                if twin is not None:
                    sql = ("UPDATE job SET status = 'done', finished_at = :now, updated_at = :now, lease_until = NULL,"
                           " last_error = 'superseded by a newer queued job' WHERE id = :id AND locked_by = :me")
                    params = {"id": job.id, "me": job.locked_by, "now": params["now"]}
                    label = "superseded"
            await session.execute(text(sql), params)
        JOBS.labels(job.name, label).inc()
        if label != "done":
            log.warning("job %s #%s %s: %s", job.name, job.id, label, getattr(outcome, "error", ""))

    # -- the long-running loop ------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        add_waker(self.wake)
        concurrency = 1 if self.is_sqlite else max(1, self.settings.worker_concurrency)
        self._tasks = [asyncio.create_task(self._loop(i), name=f"coopsync-worker-{i}") for i in range(concurrency)]

    async def stop(self) -> None:
        remove_waker(self.wake)
        self._stopping.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _loop(self, index: int) -> None:
        reap_every = 0
        while not self._stopping.is_set():
            try:
                if reap_every <= 0:
                    await self.reap()
                    reap_every = 50
                reap_every -= 1
                job = await self.run_one()
                if job is not None:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker loop error")
                await asyncio.sleep(1.0)
                continue
            self._wake.clear()
            # The wait is computed first: a coroutine made before a cancelled await is never awaited.
            idle_s = await self._idle_wait()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=idle_s)
            except asyncio.TimeoutError:
                pass

    async def _idle_wait(self) -> float:
        """Sleep until the next queued job falls due (a debounced push), at most one poll interval."""
        async with self.db.read() as session:
            due = (await session.execute(text("SELECT min(run_after) FROM job WHERE status = 'queued'"))).scalar()
        if due is None:
            return self.settings.worker_poll_s
        if isinstance(due, str):  # SQLite hands raw SQL times back as text
            due = datetime.fromisoformat(due)
        if due.tzinfo is None:
            due = due.replace(tzinfo=timezone.utc)
        return min(self.settings.worker_poll_s, max(0.0, (due - utcnow()).total_seconds()))
