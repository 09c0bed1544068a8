"""The job catalogue: each kind of job is declared once, beside its flow, with the ``job`` decorator.

A declaration names everything the queue, the runner, the scheduler and retention need to know
about that kind (priority, attempts, dedupe and lock keys, batch handler, schedule, whether finished
rows are kept), so adding a job touches one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.jobs.outcomes import BatchHandler, Handler, JobContext, Outcome
from app.jobs.queue import insert_job

KeyBuilder = Callable[[dict], str]
# Queues whatever of this kind is due at ``now``, in the scheduler's transaction.
Schedule = Callable[[AsyncSession, datetime, Settings], Awaitable[None]]


@dataclass
class JobSpec:
    name: str
    handler: Handler
    priority: int = 100
    max_attempts: int = 20
    dedupe: KeyBuilder | None = None  # one queued job per key: later ones coalesce into it
    lock: KeyBuilder | None = None  # one running job per key, across processes
    batch: BatchHandler | None = None  # claims a run of due jobs of this kind and applies them together
    schedule: Schedule | None = None
    keep_finished: bool = False  # retention leaves finished rows of this kind alone
    # Works on the database alone (at most a bounded platform call, e.g. a notice's fetch): runs in the
    # runner's local lane too, which a job stuck on an unreachable platform can never hold up.
    local: bool = False

    async def __call__(self, ctx: JobContext) -> Outcome:
        return await self.handler(ctx)

    def dedupe_key(self, payload: dict) -> str | None:
        return self.dedupe(payload) if self.dedupe else None

    def lock_key(self, payload: dict) -> str | None:
        return self.lock(payload) if self.lock else None

    async def enqueue(self, session: AsyncSession, payload: dict | None = None, *, run_after: datetime | None = None,
                      max_attempts: int | None = None) -> bool:
        """Queue one job of this kind in the caller's transaction (False: a queued twin absorbed it)."""
        payload = payload or {}
        return await insert_job(session, self.name, payload, run_after=run_after,
                                dedupe_key=self.dedupe_key(payload), lock_key=self.lock_key(payload),
                                max_attempts=self.max_attempts if max_attempts is None else max_attempts,
                                priority=self.priority)


CATALOGUE: dict[str, JobSpec] = {}


def job(name: str, *, priority: int = 100, max_attempts: int = 20, dedupe: KeyBuilder | None = None,
        lock: KeyBuilder | None = None, batch: BatchHandler | None = None, schedule: Schedule | None = None,
        keep_finished: bool = False, local: bool = False) -> Callable[[Handler], JobSpec]:
    """Declare a kind of job; the decorated handler becomes its ``JobSpec`` (still callable)."""

    def register(handler: Handler) -> JobSpec:
        if name in CATALOGUE:
            raise ValueError(f"job {name!r} is declared twice")
        spec = JobSpec(name=name, handler=handler, priority=priority, max_attempts=max_attempts, dedupe=dedupe,
                       lock=lock, batch=batch, schedule=schedule, keep_finished=keep_finished, local=local)
        CATALOGUE[name] = spec
        return spec

    return register


def per_store(name: str) -> KeyBuilder:
    """Key builder for the common "one per store" jobs: ``<name>:<store_id>``."""
    return lambda payload: f"{name}:{payload['store_id']}"


def kept_job_names() -> tuple[str, ...]:
    return tuple(sorted(spec.name for spec in CATALOGUE.values() if spec.keep_finished))
