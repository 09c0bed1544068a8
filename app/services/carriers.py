"""Carriers: the cooperative's courier codes (SF, ZTO, ... built in), each platform's id or code for them, and
their refresh from each platform's company list (``carriers.refresh``, daily, and on demand before an upload)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Adapter, Capability, PlatformCarrier
from adapters.errors import AdapterError, AuthExpiredError, TransientError
from app.config import Settings
from app.domain import carriers as rules
from app.jobs.catalogue import job
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.models import Carrier, CarrierCode, Job, Store
from app.models.base import utcnow
from app.services.connections import NEEDS_AUTHORIZATION, connect, wait_for_authorization
from app.services.errors import Invalid
from app.services.platforms import UnknownPlatform, adapter_class, registry

log = logging.getLogger("coopsync.carriers")

REFRESH_EVERY_S = 86_400  # seconds: a platform's company list is read once a day


@dataclass(frozen=True)
class CarrierView:
    carrier: Carrier
    codes: list[CarrierCode]


def _insert(session: AsyncSession):
    return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert


async def ensure_builtin(session: AsyncSession) -> None:
    """Write the built-in carriers (and their built-in platform codes) that are not there yet; a carrier an
    operator changed keeps its changes."""
    have = set((await session.execute(select(Carrier.code).where(
        Carrier.code.in_(list(rules.BUILTIN_BY_CODE))))).scalars())
    missing = [spec for spec in rules.BUILTIN_CARRIERS if spec.code not in have]
    if not missing:
        return
    now = utcnow()
    insert = _insert(session)
    await session.execute(insert(Carrier).values([
        {"code": spec.code, "name": spec.names[0], "tracking_url": spec.tracking_url, "builtin": True,
         "created_at": now, "updated_at": now} for spec in missing]).on_conflict_do_nothing(index_elements=["code"]))
    ids = dict((await session.execute(select(Carrier.code, Carrier.id).where(
        Carrier.code.in_([spec.code for spec in missing])))).all())
    rows = [{"carrier_id": ids[spec.code], "platform": platform, "company": company, "source": rules.BUILTIN,
             "updated_at": now} for spec in missing if spec.code in ids for platform, company in spec.platform_codes.items()]
    if rows:
        await session.execute(insert(CarrierCode).values(rows).on_conflict_do_nothing(
            index_elements=["carrier_id", "platform"]))


async def carrier_by_code(session: AsyncSession, code: str) -> Carrier | None:
    found = (await session.execute(select(Carrier).where(Carrier.code == code))).scalar_one_or_none()
    if found is None and code in rules.BUILTIN_BY_CODE:
        await ensure_builtin(session)
        found = (await session.execute(select(Carrier).where(Carrier.code == code))).scalar_one_or_none()
    return found


async def company_of(session: AsyncSession, carrier_id: int, platform: str) -> CarrierCode | None:
    return (await session.execute(select(CarrierCode).where(
        CarrierCode.carrier_id == carrier_id, CarrierCode.platform == platform))).scalar_one_or_none()


async def list_carriers(session: AsyncSession) -> list[CarrierView]:
    await ensure_builtin(session)
    carriers = (await session.execute(select(Carrier).order_by(Carrier.code))).scalars().all()
    codes: dict[int, list[CarrierCode]] = {c.id: [] for c in carriers}
    for row in (await session.execute(select(CarrierCode).order_by(CarrierCode.platform))).scalars():
        codes.setdefault(row.carrier_id, []).append(row)
    return [CarrierView(c, codes[c.id]) for c in carriers]


async def put_carriers(session: AsyncSession, items: list[dict]) -> list[CarrierView]:
    """Create or change carriers by code: ``name``, ``tracking_url`` (``{number}`` stands for the tracking
    number), and per platform the company id or code (``null`` removes it). What is set here is the
    operator's and no refresh overwrites it."""
    await ensure_builtin(session)
    known_platforms = set(registry())
    now = utcnow()
    for item in items:
        unknown = sorted(set(item.get("platforms") or {}) - known_platforms)
        if unknown:
            raise Invalid(f"carrier {item['code']}: no platform {', '.join(unknown)}")
        carrier = (await session.execute(select(Carrier).where(Carrier.code == item["code"])
                                         .with_for_update())).scalar_one_or_none()
        if carrier is None:
            if not item.get("name"):
                raise Invalid(f"carrier {item['code']} is new: it needs a name")
            carrier = Carrier(code=item["code"], name=item["name"], tracking_url=item.get("tracking_url"))
            session.add(carrier)
            await session.flush()
        else:
            if item.get("name"):
                carrier.name = item["name"]
            if "tracking_url" in item:
                carrier.tracking_url = item["tracking_url"]
            carrier.updated_at = now
        for platform, company in (item.get("platforms") or {}).items():
            row = await company_of(session, carrier.id, platform)
            if company is None:
                if row is not None:
                    await session.delete(row)
                continue
            if row is None:
                session.add(CarrierCode(carrier_id=carrier.id, platform=platform, company=company,
                                        source=rules.OPERATOR, updated_at=now))
            else:
                row.company, row.company_name, row.source, row.updated_at = company, None, rules.OPERATOR, now
    await session.flush()
    return await list_carriers(session)


async def apply_platform_list(session: AsyncSession, platform: str, rows: list[PlatformCarrier]) -> int:
    """Match a platform's company list onto the carriers; codes an operator set are left alone. Returns how
    many carrier codes were written or changed."""
    await ensure_builtin(session)
    carriers = (await session.execute(select(Carrier))).scalars().all()
    existing = {row.carrier_id: row for row in (await session.execute(
        select(CarrierCode).where(CarrierCode.platform == platform).with_for_update())).scalars()}
    matched = rules.match([rules.known(c.code, c.name) for c in carriers], rows)
    now = utcnow()
    changed = 0
    for carrier in carriers:
        found = matched.get(carrier.code)
        row = existing.get(carrier.id)
        if found is None or (row is not None and row.source == rules.OPERATOR):
            continue
        if row is None:
            session.add(CarrierCode(carrier_id=carrier.id, platform=platform, company=found.company,
                                    company_name=found.name[:128] or None, source=rules.PLATFORM, updated_at=now))
            changed += 1
        else:
            if (row.company, row.company_name, row.source) != (found.company, found.name[:128] or None, rules.PLATFORM):
                changed += 1
            row.company, row.company_name, row.source, row.updated_at = (
                found.company, found.name[:128] or None, rules.PLATFORM, now)
    await session.flush()
    return changed


async def refresh_with(db, platform: str, adapter: Adapter) -> int:
    """Read the platform's company list through ``adapter`` (outside any transaction) and match it."""
    rows = await adapter.fetch_carriers()
    async with db.transaction() as session:
        changed = await apply_platform_list(session, platform, rows)
    log.info("carrier codes refreshed", extra={"platform": platform, "companies": len(rows), "changed": changed})
    return changed


# --- the scheduled refresh ------------------------------------------------------------------------


def _refresh_key(payload: dict) -> str:
    return f"carriers.refresh:{payload['platform']}:{payload['day']}"


async def schedule_refresh(session: AsyncSession, now: datetime, settings: Settings) -> None:
    """Once a day per platform that has a company list and a connected store (whoever ticks first)."""
    day = int(now.timestamp() // REFRESH_EVERY_S)
    platforms = (await session.execute(select(Store.platform).where(
        Store.auth_status.not_in(NEEDS_AUTHORIZATION)).distinct())).scalars().all()
    for platform in sorted(platforms):
        try:
            if Capability.CARRIER_LIST not in adapter_class(platform).capabilities:
                continue
        except UnknownPlatform:  # a store of a platform whose adapter is gone: nothing to refresh
            continue
        payload = {"platform": platform, "day": day}
        ran = (await session.execute(select(Job.id).where(Job.name == handle_refresh.name,
                                                          Job.dedupe_key == _refresh_key(payload)).limit(1))).first()
        if ran is None:
            await handle_refresh.enqueue(session, payload)


@job("carriers.refresh", priority=150, dedupe=_refresh_key, lock=lambda payload: f"carriers.refresh:{payload['platform']}",
     schedule=schedule_refresh)
async def handle_refresh(ctx: JobContext) -> Outcome:
    platform = str(ctx.job.payload["platform"])
    async with ctx.db.transaction() as session:
        store = (await session.execute(select(Store).where(
            Store.platform == platform, Store.auth_status.not_in(NEEDS_AUTHORIZATION)).order_by(Store.id)
            .limit(1))).scalar_one_or_none()
    if store is None:
        return Done(f"no connected {platform} store to read its company list with")
    try:
        adapter = await connect(ctx.db, store, ctx.services.get("http"))
        changed = await refresh_with(ctx.db, platform, adapter)
    except AuthExpiredError as exc:
        return wait_for_authorization(store.id, exc)
    except TransientError as exc:
        return Retry(max(exc.retry_after_s or 0, backoff_s(ctx.job.attempts, base_s=30, cap_s=3600)), str(exc))
    except AdapterError as exc:
        return Done(f"{platform} company list not read: {exc}")
    return Done(f"{changed} carrier codes written")
