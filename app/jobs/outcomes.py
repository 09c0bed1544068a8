"""What a job handler returns (done, retry later, dead) and what it is handed (its context)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Awaitable, Callable

from sqlalchemy import text

from app.config import Settings
from app.db import Database, bind_time
from app.models import Job
from app.models.base import utcnow


@dataclass(frozen=True)
class Done:
    note: str | None = None


@dataclass(frozen=True)
class Retry:
    """Run again after ``delay_s``. ``counts`` False: waiting on something, not a failure.
    ``waiting_for`` names what it waits on ("store-auth:<id>") so it can be woken when that is resolved."""

    delay_s: float
    error: str
    counts: bool = True
    waiting_for: str | None = None


@dataclass(frozen=True)
class Dead:
    error: str


Outcome = Done | Retry | Dead


@dataclass
class JobContext:
    db: Database
    settings: Settings
    job: Job
    worker_id: str
    services: dict[str, Any] = field(default_factory=dict)
    # Set by the runner: moves the job's timeout along with its lease.
    on_extend: Callable[[], None] | None = None

    async def extend_lease(self) -> None:
        """For long jobs (resyncs): keep the job ours while we make progress (its timeout moves too)."""
        async with self.db.transaction() as session:
            await session.execute(
                text("UPDATE job SET lease_until = :until WHERE id = :id AND locked_by = :me"),
                {"until": bind_time(session, utcnow() + timedelta(seconds=self.settings.job_lease_s)),
                 "id": self.job.id, "me": self.job.locked_by},
            )
        if self.on_extend is not None:
            self.on_extend()


Handler = Callable[[JobContext], Awaitable[Outcome]]
BatchHandler = Callable[[list[JobContext]], Awaitable[list[Outcome]]]
