"""The scheduler: every tick it asks each scheduled kind of job in the catalogue to queue what is due
(store polls, drift checks, the settlement run, retention). Schedules only write jobs with dedupe
keys, so several processes may tick at once harmlessly."""

from __future__ import annotations

import asyncio
import logging

from app.config import Settings
from app.db import Database
from app.jobs.catalogue import CATALOGUE
from app.models.base import utcnow

log = logging.getLogger("coopsync.schedule")


class Scheduler:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="coopsync-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.settings.scheduler_tick_s)

    async def tick(self) -> None:
        now = utcnow()
        async with self.db.transaction() as session:
            for spec in sorted(CATALOGUE.values(), key=lambda s: s.name):
                if spec.schedule is not None:
                    await spec.schedule(session, now, self.settings)
