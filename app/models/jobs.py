"""One job table for all background work: inbox apply, pulls, resyncs, stock pushes, dividends."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from app.models.base import fk_field, id_field, json_field, time_field


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_due", "status", "priority", "run_after"),
        # At most one queued job per dedupe key: a burst of stock changes coalesces into one push.
        Index("uq_job_dedupe_queued", "dedupe_key", unique=True,
              postgresql_where=text("status = 'queued'"), sqlite_where=text("status = 'queued'")),
        # At most one running job per lock key (procrastinate's lock): one push per listing in flight.
        Index("uq_job_lock_running", "lock_key", unique=True,
              postgresql_where=text("status = 'running'"), sqlite_where=text("status = 'running'")),
    )

    id: int | None = id_field()
    name: str = Field(max_length=64, index=True)  # dotted: inbox.apply, stock.push, dividend.deliver
    payload: dict = json_field()
    status: str = Field(default="queued", max_length=16)  # queued, running, done, dead, cancelled
    priority: int = Field(default=100)  # lower runs first among due jobs: stock pushes before the rest
    run_after: datetime = time_field(default_now=True)
    attempts: int = 0
    max_attempts: int = 20
    lease_until: datetime | None = time_field()
    locked_by: str | None = Field(default=None, max_length=128)
    lock_key: str | None = Field(default=None, max_length=255)
    dedupe_key: str | None = Field(default=None, max_length=255)
    last_error: str | None = Field(default=None, max_length=2000)
    # What a parked job waits for ("store-auth:<id>"): it is woken when that is resolved, not by a timer only.
    waiting_for: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = time_field(default_now=True)
    updated_at: datetime = time_field(default_now=True)
    finished_at: datetime | None = time_field()


class Resync(SQLModel, table=True):
    """An operator resync of one resource of one store over a time window."""

    __tablename__ = "resync"

    id: int | None = id_field()
    store_id: int = fk_field("store.id")
    resource: str = Field(max_length=16)  # orders, refunds, inventory
    since: datetime | None = time_field()
    until: datetime | None = time_field()
    status: str = Field(default="queued", max_length=16)  # queued, running, succeeded, failed, cancelled
    pages: int = 0
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    position: dict = json_field()  # window index and page cursor, saved with each page
    results: list = json_field(default_factory=list)  # inventory: a result per listing
    error: str | None = Field(default=None, max_length=2000)
    cancel_requested: bool = False
    created_at: datetime = time_field(default_now=True)
    started_at: datetime | None = time_field()
    finished_at: datetime | None = time_field()
