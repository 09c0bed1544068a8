"""Push channels: Pinduoduo's message service and Taobao's TMC, read by one replica per app (a lease row),
each message stored in the inbox with its apply job before it is acknowledged. Polling stays on.

One ``ChannelConsumer`` per configured app runs in every process that runs workers. Each one tries to take
the app's row in ``channel_lease``; the replica that holds it renews it every ``channel_renew_s`` (shorter
than ``channel_lease_s``) and consumes; the others wait and take it over once it runs out. A holder that
cannot renew in time, or finds the row taken, disconnects at once. Two replicas may overlap for at most
one renewal clock after a stall: the inbox's delivery identity (the platform's message id) makes the second
write of a message a duplicate, so nothing is applied twice. A message goes to the inbox through the
webhook intake's group commit (``GroupCommitter.submit``: the row and its ``inbox.apply`` job, committed
together) and is acknowledged only after that commit; a failed write leaves it unacknowledged and the
connection is opened again after a back-off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Awaitable, Callable

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from adapters.channels import ChannelMessage
from adapters.errors import AdapterError, PermanentError
from adapters.pinduoduo import messages as pdd_messages
from adapters.taobao import tmc
from adapters.taobao.client import TopClient
from app.config import Settings
from app.db import Database
from app.jobs.queue import backoff_s
from app.metrics import CHANNEL_CONNECTED, CHANNEL_MESSAGES, CHANNEL_RECONNECTS
from app.models import ChannelLease, Store
from app.models.base import utcnow
from app.services.intake import GroupCommitter, PendingRow
from app.services.platforms import shared_http

log = logging.getLogger("coopsync.channels")

MAX_IN_FLIGHT = 64  # messages of one connection being stored at once (the group commit batches them)
SHOPS_REFRESH_S = 60.0  # seconds the shop id -> store map is trusted before it is read again
SHOPS_MISS_RELOAD_S = 0.5  # seconds between re-reads caused by a message naming a shop not in the map


class LeaseLost(Exception):
    """Another replica holds the channel now, or this one could not renew in time."""


@dataclass(frozen=True)
class ChannelSpec:
    """One app's channel on one platform; its lease row is named ``<platform>:<app key>``."""

    platform: str
    app_key: str
    app_secret: str = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.platform}:{self.app_key}"


def configured_channels(settings: Settings) -> list[ChannelSpec]:
    """The channels this deployment reads: enabled in the settings, with the platform's app in ``apps``."""
    wanted = [("pinduoduo", settings.pdd_message_service, "client_id", "client_secret"),
              ("taobao", settings.taobao_tmc, "app_key", "app_secret")]
    specs = []
    for platform, enabled, key_field, secret_field in wanted:
        if not enabled:
            continue
        app = settings.apps.get(platform, {})
        if not app.get(key_field) or not app.get(secret_field):
            log.warning("the %s push channel is on but its app is not set: set COOPSYNC_APPS__%s__%s and __%s",
                        platform, platform.upper(), key_field.upper(), secret_field.upper())
            continue
        specs.append(ChannelSpec(platform, app[key_field], app[secret_field]))
    return specs


# --- the lease ------------------------------------------------------------------------------------


async def try_acquire(db: Database, name: str, holder: str, lease_s: float) -> bool:
    """Take the channel if nobody holds it, its lease ran out, or it is ours already (one statement each
    for the row and the take, so two replicas racing for it cannot both win)."""
    now = utcnow()
    async with db.transaction() as session:
        insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
        await session.execute(insert(ChannelLease).values(name=name, connected=False, messages=0, reconnects=0)
                              .on_conflict_do_nothing(index_elements=["name"]))
        result = await session.execute(
            update(ChannelLease)
            .where(ChannelLease.name == name,
                   or_(ChannelLease.holder.is_(None), ChannelLease.holder == holder,
                       ChannelLease.lease_until.is_(None), ChannelLease.lease_until < now))
            .values(holder=holder, lease_until=now + timedelta(seconds=lease_s), heartbeat_at=now, connected=False))
        return result.rowcount == 1


async def renew(db: Database, name: str, holder: str, lease_s: float, *, connected: bool,
                last_message_at: datetime | None, messages: int, reconnects: int) -> bool:
    """Extend our lease and note how the channel is doing; False when the row is no longer ours."""
    now = utcnow()
    async with db.transaction() as session:
        result = await session.execute(
            update(ChannelLease).where(ChannelLease.name == name, ChannelLease.holder == holder)
            .values(lease_until=now + timedelta(seconds=lease_s), heartbeat_at=now, connected=connected,
                    last_message_at=last_message_at, messages=messages, reconnects=reconnects))
        return result.rowcount == 1


async def release(db: Database, name: str, holder: str) -> None:
    """Give the channel up (a clean stop), so another replica takes it without waiting for the lease."""
    async with db.transaction() as session:
        await session.execute(
            update(ChannelLease).where(ChannelLease.name == name, ChannelLease.holder == holder)
            .values(holder=None, lease_until=None, connected=False))


# --- one consumer ---------------------------------------------------------------------------------


def _holder_id(obj: object) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(obj):x}"


class ChannelConsumer:
    """Holds one app's channel when it can and consumes it; run ``run()`` as a task, cancel it to stop."""

    def __init__(self, db: Database, settings: Settings, spec: ChannelSpec, committer: GroupCommitter, *,
                 holder: str | None = None, http: httpx.AsyncClient | None = None) -> None:
        self.db = db
        self.settings = settings
        self.spec = spec
        self.committer = committer
        self.holder = holder or _holder_id(self)
        self.http = http
        self.holding = False
        self.connected = False
        self.messages = 0
        self.reconnects = 0
        self.last_message_at: datetime | None = None
        self.release_on_exit = True  # False: leave the lease to run out, as a killed process does
        self._lease_deadline = 0.0  # loop time by which the lease must be renewed, or given up
        self._shops: dict[str, int] = {}
        self._shops_loaded_at: float | None = None
        self._shops_lock = asyncio.Lock()

    # -- lease ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Wait for the lease, hold it and consume; if it is lost, disconnect and wait again."""
        try:
            while True:
                if not await self._acquire():
                    await asyncio.sleep(self.settings.channel_renew_s)
                    continue
                log.info("holding push channel %s", self.spec.name, extra={"holder": self.holder})
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._keep_lease(), name=f"channel-lease-{self.spec.name}")
                        group.create_task(self._consume(), name=f"channel-consume-{self.spec.name}")
                except* LeaseLost as lost:
                    log.warning("push channel %s given up: %s", self.spec.name, lost.exceptions[0])
                except* Exception:
                    # A bug must not end the consumer for good: give the channel up, wait, and start over.
                    log.exception("push channel %s failed", self.spec.name)
                    await self._give_up()
                    await asyncio.sleep(self.settings.channel_backoff_cap_s)
                finally:
                    self._show_connected(False)
        finally:
            if self.release_on_exit:
                await self._give_up()
            self.holding = False

    async def _give_up(self) -> None:
        if self.holding:
            self.holding = False
            try:
                await release(self.db, self.spec.name, self.holder)
            except Exception:
                log.exception("could not release push channel %s; it frees itself when its lease runs out",
                              self.spec.name)

    async def _acquire(self) -> bool:
        started = asyncio.get_running_loop().time()
        try:
            self.holding = await try_acquire(self.db, self.spec.name, self.holder, self.settings.channel_lease_s)
        except Exception:
            log.exception("could not take push channel %s", self.spec.name)
            self.holding = False
        # Counted from before the statement: the database's copy of the lease ends no earlier than this.
        self._lease_deadline = started + self.settings.channel_lease_s
        return self.holding

    async def _keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.channel_renew_s)
            started = loop.time()
            try:
                kept = await renew(self.db, self.spec.name, self.holder, self.settings.channel_lease_s,
                                   connected=self.connected, last_message_at=self.last_message_at,
                                   messages=self.messages, reconnects=self.reconnects)
            except Exception:
                # A database blip: keep consuming while the lease we hold lasts, never past it.
                if loop.time() + self.settings.channel_renew_s >= self._lease_deadline:
                    self.holding = False
                    raise LeaseLost("the lease could not be renewed before it ran out") from None
                log.warning("could not renew push channel %s; trying again", self.spec.name, exc_info=True)
                continue
            if not kept:
                self.holding = False
                raise LeaseLost("another replica holds it now")
            self._lease_deadline = started + self.settings.channel_lease_s

    # -- connections ----------------------------------------------------------------------------

    async def _consume(self) -> None:
        """Open the channel again and again, backing off between failed attempts."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started, before = loop.time(), self.messages
            try:
                await self.session()
                error: BaseException | None = None
            except Exception as exc:  # every end of a connection, a failed write included
                error = exc
            self._show_connected(False)
            self.reconnects += 1
            CHANNEL_RECONNECTS.labels(self.spec.name).inc()
            # A connection that carried messages or stayed up a while was healthy: start the back-off over.
            healthy = self.messages > before or loop.time() - started >= self.settings.channel_renew_s
            attempt = 1 if healthy else attempt + 1
            delay = backoff_s(attempt, base_s=self.settings.channel_backoff_base_s,
                              cap_s=self.settings.channel_backoff_cap_s)
            if isinstance(error, PermanentError):
                delay = self.settings.channel_backoff_cap_s  # wrong credentials do not fix themselves quickly
            log.warning("push channel %s disconnected (%s); reconnecting in %.2f s", self.spec.name,
                        _describe(error), delay)
            await asyncio.sleep(delay)

    async def session(self) -> None:
        """One connection, until it ends (it always ends with an exception)."""
        if self.spec.platform == "pinduoduo":
            await self._pdd_session()
        elif self.spec.platform == "taobao":
            await self._tmc_session()
        else:
            raise PermanentError(f"no push channel for {self.spec.platform}", platform=self.spec.platform)

    async def _pdd_session(self) -> None:
        url = pdd_messages.connect_url(self.settings.pdd_message_url, self.spec.app_key, self.spec.app_secret,
                                       pdd_messages.now_ms())
        async with pdd_messages.MessageServiceConnection.open(url, heartbeat_s=self.settings.channel_heartbeat_s) as conn:
            self._show_connected(True)
            window = asyncio.Semaphore(MAX_IN_FLIGHT)
            # A failed write ends the group, and with it the connection: that message stays unacknowledged.
            async with asyncio.TaskGroup() as group:
                async for message in conn:
                    await window.acquire()
                    group.create_task(self._store_then_ack(message, conn.ack, window))

    async def _store_then_ack(self, message: ChannelMessage, ack: Callable[[ChannelMessage], Awaitable[None]],
                              window: asyncio.Semaphore) -> None:
        try:
            await self.store(message)
            await ack(message)
        finally:
            window.release()

    async def _tmc_session(self) -> None:
        client = TopClient(self.http or shared_http(), app_key=self.spec.app_key, app_secret=self.spec.app_secret,
                           access_token=None, base_url=self.settings.taobao_tmc_url)
        group_name = self.settings.taobao_tmc_group
        while True:
            batch = await tmc.consume(client, group_name)
            self._show_connected(True)
            if not batch:
                await asyncio.sleep(self.settings.taobao_tmc_idle_s)
                continue
            outcomes = await asyncio.gather(*(self.store(message) for message in batch), return_exceptions=True)
            stored = [m.message_id for m, outcome in zip(batch, outcomes)
                      if not isinstance(outcome, BaseException) and m.message_id]
            if stored:
                await tmc.confirm(client, stored, group_name)
            failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if failed:
                raise failed[0]  # those stay unconfirmed: TMC hands them out again

    # -- one message ----------------------------------------------------------------------------

    async def store(self, message: ChannelMessage) -> str:
        """Write ``message`` to the inbox (or decide it needs no row); the caller acknowledges it only if
        this returns. Raises when the write failed."""
        if not message.wanted:
            return self._count("ignored")
        store_id = await self._store_for(message)
        if store_id is None:
            # No store of ours: acknowledged, or the platform would redeliver it for ever. A store added
            # later starts with a resync, which covers this order.
            log.warning("push channel %s: message %s names shop %s, which is no store here", self.spec.name,
                        message.message_id, message.shop_id or message.shop_nick)
            return self._count("unknown_shop")
        row = PendingRow(store_id=store_id, platform=self.spec.platform, dedupe_key=message.dedupe_key,
                         topic=message.topic[:128] or None, headers=message.headers, body=message.body)
        try:
            outcome = await self.committer.submit(row)
        except Exception:
            self._count("store_failed")
            raise
        self.messages += 1
        self.last_message_at = utcnow()
        return self._count(outcome)

    def _count(self, outcome: str) -> str:
        CHANNEL_MESSAGES.labels(self.spec.name, outcome).inc()
        return outcome

    async def _store_for(self, message: ChannelMessage) -> int | None:
        loop = asyncio.get_running_loop()
        loaded_at = self._shops_loaded_at
        if loaded_at is None or loop.time() - loaded_at >= SHOPS_REFRESH_S:
            await self._load_shops(loaded_at)
        found = self._lookup(message)
        if found is None and self._shops_loaded_at is not None \
                and loop.time() - self._shops_loaded_at >= SHOPS_MISS_RELOAD_S:
            await self._load_shops(self._shops_loaded_at)  # a store added since the map was read
            found = self._lookup(message)
        return found

    def _lookup(self, message: ChannelMessage) -> int | None:
        for key in (message.shop_id, message.shop_nick):
            if key and key in self._shops:
                return self._shops[key]
        return None

    async def _load_shops(self, seen: float | None) -> None:
        async with self._shops_lock:
            if self._shops_loaded_at != seen:
                return  # another message's task read it meanwhile
            async with self.db.read() as session:
                rows = (await session.execute(
                    select(Store.id, Store.external_shop_id)
                    .where(Store.platform == self.spec.platform, Store.external_shop_id.is_not(None))
                    .order_by(Store.id.desc()))).all()
            # Ordered newest first, so the oldest store wins where two name the same shop.
            self._shops = {str(shop): store_id for store_id, shop in rows}
            self._shops_loaded_at = asyncio.get_running_loop().time()

    def _show_connected(self, connected: bool) -> None:
        self.connected = connected
        CHANNEL_CONNECTED.labels(self.spec.name).set(1 if connected else 0)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "ended"
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions[:3])
    if isinstance(error, AdapterError):
        return str(error)
    return repr(error)


# --- every consumer of this process ---------------------------------------------------------------


class Channels:
    """This process's channel consumers, one per configured app (none unless configured). Started beside the
    job workers; every replica runs them, and the lease picks the one that consumes."""

    def __init__(self, db: Database, settings: Settings, *, committer: GroupCommitter | None = None,
                 specs: list[ChannelSpec] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.specs = configured_channels(settings) if specs is None else specs
        self._own_committer = committer is None and bool(self.specs)
        self.committer = committer
        self.consumers: list[ChannelConsumer] = []
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self.specs or self._tasks:
            return
        if self.committer is None:
            self.committer = GroupCommitter(self.db, window_ms=self.settings.inbox_group_commit_ms)
        self.consumers = [ChannelConsumer(self.db, self.settings, spec, self.committer) for spec in self.specs]
        self._tasks = [asyncio.create_task(c.run(), name=f"coopsync-channel-{c.spec.name}") for c in self.consumers]
        log.info("push channels started: %s", ", ".join(spec.name for spec in self.specs))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._own_committer and self.committer is not None:
            await self.committer.stop()
