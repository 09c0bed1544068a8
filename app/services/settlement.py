"""Settlement runs: settle what is due (the arithmetic is the domain's) and queue each statement's
delivery in the same transaction; scheduled once per ``settlement_interval_s``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Capability
from app.config import Settings
from app.domain.fees import match_waiting_lines
from app.domain.settlement import SettlementConflict, settle_due
from app.jobs.catalogue import job
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.models import Job, Settlement
from app.services.dividends import queue_delivery
from app.services.platforms import UnknownPlatform, adapter_class


def expects_fees(platform: str) -> bool:
    """Whether actual fees come for this platform's orders (``Capability.FEES``): then an order without
    one waits ``fee_wait_days`` for it before its store's estimate is used."""
    try:
        return Capability.FEES in adapter_class(platform).capabilities
    except UnknownPlatform:
        return False


async def run_settlement(session: AsyncSession, settings: Settings | None = None, *, now: datetime | None = None,
                         run_id: str | None = None) -> list[Settlement]:
    """Write the statements of everything due and queue their deliveries, in the caller's transaction.

    Raises ``SettlementConflict`` (the caller's transaction must roll back) if a concurrent run took
    some of the same rows first; a plain retry then settles the rest."""
    await match_waiting_lines(session)  # bill lines that came before their orders
    created = await settle_due(session, now=now, run_id=run_id, expects_fees=expects_fees)
    for statement in created:
        await queue_delivery(session, statement.id, settings)
    return created


def _interval_key(payload: dict) -> str:
    return f"settlement.run:{payload['interval']}"


async def schedule_settlement(session: AsyncSession, now: datetime, settings: Settings) -> None:
    """One run per interval, whoever ticks first: the key names the interval, and a finished run
    with that key also counts (the dedupe index only covers queued jobs)."""
    payload = {"interval": int(now.timestamp() // settings.settlement_interval_s)}
    ran = (await session.execute(select(Job.id).where(Job.name == handle_settlement.name,
                                                      Job.dedupe_key == _interval_key(payload)).limit(1))).first()
    if ran is None:
        await handle_settlement.enqueue(session, payload)


# Finished runs are kept: the schedule reads a run's key as "this interval ran", and an interval may
# be longer than the job retention (one row per interval, so nothing grows).
@job("settlement.run", dedupe=_interval_key, lock=lambda _payload: "settlement.run", schedule=schedule_settlement,
     keep_finished=True, local=True)
async def handle_settlement(ctx: JobContext) -> Outcome:
    try:
        async with ctx.db.transaction() as session:
            created = await run_settlement(session, ctx.settings)
    except SettlementConflict as exc:
        return Retry(1.0, str(exc), counts=False)
    return Done(f"{len(created)} statement(s)")
