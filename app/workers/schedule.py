"""The scheduler: every tick it queues what is due (store polls, the daily settlement run, drift
checks). It only writes jobs with dedupe keys, so several processes may tick at once harmlessly."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select

from app.api.deps import Database
from app.config import Settings
from app.models import Job, Store
from app.models.base import utcnow
from app.workers.jobs import enqueue
from app.workers.maintenance import PRUNE_JOB

log = logging.getLogger("coopsync.schedule")

SETTLEMENT_JOB = "settlement.run"
POLL_JOB = "sync.poll"
DRIFT_JOB = "stock.drift_check"
DRIFT_INTERVAL_S = 900.0  # seconds between stock drift checks of a store that can report stock


class Scheduler:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._task: asyncio.Task | None = None
        self._last_settlement: float | None = None

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
            stores = (await session.execute(select(Store))).scalars().all()
            for store in stores:
                interval = int((store.settings or {}).get("poll_interval_s", 300) or 0)
                if interval > 0 and store.auth_status == "ok" and (
                        store.last_poll_at is None or now - store.last_poll_at >= timedelta(seconds=interval)):
                    key = f"{POLL_JOB}:{store.id}"
                    # dedupe: at most one queued poll per store; lock: at most one running, across processes.
                    await enqueue(session, POLL_JOB, {"store_id": store.id}, dedupe_key=key, lock_key=key)
                drift_key = f"{DRIFT_JOB}:{store.id}"
                await enqueue(session, DRIFT_JOB, {"store_id": store.id}, dedupe_key=drift_key, lock_key=drift_key,
                              run_after=now + timedelta(seconds=DRIFT_INTERVAL_S))
            day = int(now.timestamp() // self.settings.settlement_interval_s)
            key = f"{SETTLEMENT_JOB}:{day}"
            # One settlement run per interval, whoever ticks first: the key names the interval, and a
            # finished run with that key also counts (the dedupe index only covers queued jobs).
            ran = (await session.execute(select(Job.id).where(Job.name == SETTLEMENT_JOB, Job.dedupe_key == key)
                                         .limit(1))).first()
            if ran is None:
                await enqueue(session, SETTLEMENT_JOB, {"interval": day}, dedupe_key=key, lock_key=SETTLEMENT_JOB)
            # Retention, once a day on the same terms (its key outlives the rows it deletes).
            prune_key = f"{PRUNE_JOB}:{int(now.timestamp() // 86400)}"
            if (await session.execute(select(Job.id).where(Job.name == PRUNE_JOB, Job.dedupe_key == prune_key)
                                      .limit(1))).first() is None:
                await enqueue(session, PRUNE_JOB, {}, dedupe_key=prune_key, lock_key=PRUNE_JOB)
