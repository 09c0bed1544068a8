"""The job runner: claim with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) under a lease, run, record.

A job whose lease ran out (its process died) is claimed again. Handlers make their own effects
idempotent (cause keys, inbox status under a row lock), so a job that runs twice has one effect.

No job can stall the others: every run is cut off at ``timeout_for(settings)`` (shorter than the lease,
moved along by ``extend_lease``) and retried with back-off; the jobs declared ``local`` (database work:
inbox.apply, ...) also have a lane of their own, so a platform that never answers holds at most the
platform lane, never SQLite's only writer loop; every loop reaps expired leases on a clock, and a
cancellation leaking out of a handler is a retry, not a dead worker.
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
from app.jobs.queue import add_waker, backoff_s, intake_busy, remove_waker, wake_workers
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

_NEXT_DUE_SQL = """
SELECT min(j.run_after) FROM job j
WHERE j.status = 'queued' {names}
  AND (j.lock_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM job r WHERE r.status = 'running' AND r.lock_key = j.lock_key))
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

REAP_EVERY_S = 5.0  # seconds between passes over expired leases, per worker loop
TIMEOUT_SHARE_OF_LEASE = 0.9  # a job is cut off before its lease runs out, whatever job_timeout_s says
BATCH_SIZE = 64  # jobs claimed and recorded per transaction, for kinds declared with a batch handler
BURST_BATCH_SIZE = 16  # the same during a webhook burst

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
        self._wakes: dict[int, tuple[str | None, asyncio.Event]] = {}  # per loop: its lane and wake-up
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.is_sqlite = db.engine.dialect.name == "sqlite"
        self.timeout_s = self.timeout_for(settings)
        # Kinds that only work on the database: they also run in a lane of their own (see ``start``).
        self.local_names = sorted(name for name, handler in handlers.items() if getattr(handler, "local", False)
                                  and (names is None or name in names))

    @staticmethod
    def timeout_for(settings: Settings) -> float:
        """Seconds a job may run before it is cut off: ``job_timeout_s``, but always inside its lease."""
        return max(0.05, min(settings.job_timeout_s, settings.job_lease_s * TIMEOUT_SHARE_OF_LEASE))

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

    def _names_filter(self, lane: str | None) -> tuple[str, dict[str, Any]]:
        """SQL restricting a claim to this runner's kinds, and to a lane's: ``local`` takes only the
        local kinds, ``platform`` everything else, None everything."""
        sql, params = "", {}
        for prefix, names, negate in (("n", self.names, False),
                                      ("l", self.local_names if lane in ("local", "platform") else None,
                                       lane == "platform")):
            if names is None:
                continue
            if not names:
                if not negate:
                    sql += " AND 1 = 0"
                continue
            placeholders = ", ".join(f":{prefix}{i}" for i in range(len(names)))
            sql += f" AND j.name {'NOT IN' if negate else 'IN'} ({placeholders})"
            params.update({f"{prefix}{i}": n for i, n in enumerate(names)})
        return sql, params

    async def claim_batch(self, size: int = BATCH_SIZE, *, lane: str | None = None) -> list[Job]:
        """Claim the next due job; when it is one of the short flood jobs (inbox.apply), claim up to
        ``size - 1`` more of its kind in the same transaction, so a burst costs a commit per batch."""
        names_sql, params = self._names_filter(lane)
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

    async def run_one(self, *, lane: str | None = None) -> Job | None:
        """Claim due work (one job, or a batch of flood jobs) and run it; None when nothing was due."""
        # During a webhook burst a batch is smaller, so that it holds SQLite's one writer (and the
        # event loop) for a shorter time between the intake's commits.
        busy = intake_busy(self.settings.intake_burst_rows)
        jobs = await self.claim_batch(BURST_BATCH_SIZE if busy else BATCH_SIZE, lane=lane)
        if not jobs:
            return None
        if len(jobs) == 1:
            await self.execute(jobs[0])
            return jobs[0]
        batch = self._batch_handler(jobs[0].name)
        outcomes: list[Outcome] | None = None
        if batch is not None:
            ctxs = [self._context(job) for job in jobs]
            try:
                outcomes = await self._within_timeout(lambda: batch(ctxs), ctxs)
            except Exception:
                # One transaction for the batch failed as a whole (a deadlock, a bug in one row, a
                # fetch that never ended): run the rows one by one, each under its own timeout and a
                # fresh lease, so one poison row cannot hold the others back.
                log.warning("batch of %d %s jobs failed; running them one by one", len(jobs), jobs[0].name,
                            exc_info=True)
                await self._extend_leases(jobs)
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

    def _context(self, job: Job) -> JobContext:
        return JobContext(db=self.db, settings=self.settings, job=job, worker_id=self.worker_id,
                          services=self.services)

    async def _within_timeout(self, call, ctxs: list[JobContext]):
        """Await ``call()`` under the job timeout; a context's ``extend_lease`` moves the deadline on."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout_s) as deadline:
            def extend() -> None:
                deadline.reschedule(loop.time() + self.timeout_s)

            for ctx in ctxs:
                ctx.on_extend = extend
            return await call()

    async def _extend_leases(self, jobs: list[Job]) -> None:
        async with self.db.transaction() as session:
            until = bind_time(session, utcnow() + timedelta(seconds=self.settings.job_lease_s))
            await session.execute(text("UPDATE job SET lease_until = :until WHERE id = :id AND locked_by = :me"),
                                  [{"until": until, "id": job.id, "me": job.locked_by} for job in jobs])

    async def _run(self, job: Job) -> Outcome:
        handler = self.handlers.get(job.name)
        ctx = self._context(job)
        if handler is None:
            return Dead(f"no handler for job {job.name!r}")
        try:
            return await self._within_timeout(lambda: handler(ctx), [ctx])
        except TimeoutError:
            # A platform that never answers, an awaited lock: cut off before the lease runs out, so no
            # other worker starts it twice, and tried again later.
            log.warning("job %s #%s timed out after %.1fs", job.name, job.id, self.timeout_s)
            return Retry(backoff_s(job.attempts, base_s=5.0, cap_s=600.0),
                         f"timed out after {self.timeout_s:g}s (job_timeout_s, inside the {self.settings.job_lease_s:g}s lease)")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping.is_set() or (task is not None and task.cancelling()):
                raise  # the runner is stopping: let the cancellation through
            # Raised by the handler itself (a library's cancel scope gone astray): the worker lives on.
            log.error("job %s #%s was cancelled from inside; retrying it", job.name, job.id)
            return Retry(backoff_s(job.attempts), "cancelled inside the handler")
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
        if job.lock_key is not None:
            wake_workers()  # a job queued behind this one's lock (the next push of a store) may run now
        if label != "done":
            log.warning("job %s #%s %s: %s", job.name, job.id, label, getattr(outcome, "error", ""))

    # -- the long-running loop ------------------------------------------------------------------
    def wake(self, *, local_only: bool = False) -> None:
        """Jobs were committed: the loops that may run them look now (``local_only``: database-only jobs)."""
        for lane, event in list(self._wakes.values()):
            if not local_only or lane != "platform":
                event.set()

    def lanes(self) -> list[str | None]:
        """The worker loops this runner starts. SQLite (one writer): ``worker_concurrency`` loops for the
        jobs that call shops (their calls are made outside any transaction, their writes queue for the
        writer) and one ``local`` loop for database-only jobs. PostgreSQL: ``worker_concurrency`` loops
        for any job, plus the ``local`` loop."""
        concurrency = max(1, self.settings.worker_concurrency)
        if not self.local_names:
            return [None] if self.is_sqlite else [None] * concurrency
        if self.is_sqlite:
            return ["platform"] * concurrency + ["local"]
        return [None] * concurrency + ["local"]

    async def start(self) -> None:
        add_waker(self.wake)
        self._stopping.clear()
        self._tasks = [self._spawn(i, lane) for i, lane in enumerate(self.lanes())]

    def _spawn(self, index: int, lane: str | None) -> asyncio.Task:
        task = asyncio.create_task(self._loop(index, lane), name=f"coopsync-worker-{index}-{lane or 'any'}")
        task.add_done_callback(lambda t: self._respawn(t, index, lane))
        return task

    def _respawn(self, task: asyncio.Task, index: int, lane: str | None) -> None:
        """A worker loop must never end while the runner runs: start a new one if it did."""
        if self._stopping.is_set() or task not in self._tasks:
            return
        error = None if task.cancelled() else task.exception()
        log.error("worker loop %s ended unexpectedly; starting it again", task.get_name(),
                  exc_info=error if error is not None else None)
        self._tasks[self._tasks.index(task)] = self._spawn(index, lane)

    async def stop(self) -> None:
        remove_waker(self.wake)
        self._stopping.set()
        self.wake()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _loop(self, index: int, lane: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        # Kept across a restart of this loop: a wake-up set while it was being replaced is not lost.
        wake = self._wakes.setdefault(index, (lane, asyncio.Event()))[1]
        reap_every, reap_at = 0, 0.0
        while not self._stopping.is_set():
            # Cleared before looking for work, not after finding none: a wake-up that comes while
            # this loop claims is kept for the wait below (no lost wake-up).
            wake.clear()
            try:
                # Expired leases are reaped on a clock too, so a backlog of jobs, or a job that runs
                # long in another loop, never keeps a dead worker's job from being claimed again.
                if reap_every <= 0 or loop.time() >= reap_at:
                    await self.reap()
                    reap_every, reap_at = 50, loop.time() + REAP_EVERY_S
                reap_every -= 1
                started = loop.time()
                job = await self.run_one(lane=lane)
                if job is not None:
                    await self._yield_to_intake(job, loop.time() - started)
                    continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping.is_set() or (task is not None and task.cancelling()):
                    raise
                log.error("worker loop: a cancellation leaked out of a job; going on")
                continue
            except Exception:
                log.exception("worker loop error")
                await asyncio.sleep(1.0)
                continue
            # The wait is computed first: a coroutine made before a cancelled await is never awaited.
            idle_s = await self._idle_wait(lane)
            try:
                await asyncio.wait_for(wake.wait(), timeout=idle_s)
            except asyncio.TimeoutError:
                pass

    async def _yield_to_intake(self, job: Job, spent_s: float) -> None:
        """During a webhook burst, database work takes at most ``apply_share_under_intake`` of the time:
        it shares the process (and SQLite's writer) with the acknowledgements, which are the promise
        the platforms wait for; what it leaves waits in the inbox, applied at full speed after."""
        share = self.settings.apply_share_under_intake
        if job.name not in self.local_names or share >= 1 or not intake_busy(self.settings.intake_burst_rows):
            return
        await asyncio.sleep(min(1.0, spent_s * (1 - share) / max(share, 0.01)))

    async def _idle_wait(self, lane: str | None = None) -> float:
        """Sleep until the next queued job this lane may claim falls due (a debounced push), at most one
        poll interval. Jobs of other lanes, or held behind a running job of their lock, do not count:
        a loop that counted them would spin on claims that find nothing (on SQLite, write transactions)."""
        names_sql, params = self._names_filter(lane)
        async with self.db.read() as session:
            due = (await session.execute(text(_NEXT_DUE_SQL.format(names=names_sql)), params)).scalar()
        if due is None:
            return self.settings.worker_poll_s
        if isinstance(due, str):  # SQLite hands raw SQL times back as text
            due = datetime.fromisoformat(due)
        if due.tzinfo is None:
            due = due.replace(tzinfo=timezone.utc)
        return min(self.settings.worker_poll_s, max(0.0, (due - utcnow()).total_seconds()))
