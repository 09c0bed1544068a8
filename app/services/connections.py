"""Shop connections: authorising a store, keeping its token fresh (one refresh per store across all
replicas), and parking its jobs while a human has to authorise it again."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

import httpx
from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Adapter, StockLevel
from adapters.errors import AdapterError, AuthExpiredError, PermanentError, SignatureError, TransientError
from adapters.tokens import Authorization, RefreshRefused, TokenGrant
from app.config import Settings
from app.db import Database, bind_time
from app.jobs.catalogue import job, per_store
from app.jobs.outcomes import Done, JobContext, Outcome, Retry
from app.metrics import STORE_REAUTHORIZATION_NEEDED, TOKEN_REFRESHES
from app.models import OAuthState, Store
from app.models.base import utcnow
from app.services.errors import Conflict, Invalid, NotFound, PlatformUnavailable, ServiceError
from app.services.platforms import adapter_class, make_adapter

log = logging.getLogger("coopsync.connections")

NEEDS_AUTHORIZATION = ("expired", "revoked")
AUTH_KINDS = (AuthExpiredError.kind, RefreshRefused.kind)  # push results that failed on the token
EXPIRING_WITHIN = timedelta(hours=24)  # "expiring": less than this left and no refresh possible
REFRESH_LEASE = timedelta(seconds=60)  # one replica refreshes a store; a crashed one's lease runs out
REFRESH_WAIT_POLL_S = 0.2  # seconds between looks while another replica refreshes
PARKED_RECHECK_S = 3600.0  # a parked job also looks again hourly, in case it was resolved another way
STATE_TTL = timedelta(minutes=15)  # a consent page left open longer must be started again


class StoreNotAuthorized(AuthExpiredError, kind="auth_expired"):
    """The store waits for a human to authorise it (again); nothing is sent to the platform meanwhile."""


class BadCallback(ServiceError):
    """A callback that is forged, reused, expired or incomplete: refused, nothing changed."""

    status = 400


def authorization_of(platform: str) -> Authorization:
    return getattr(adapter_class(platform), "authorization", Authorization())


def auth_wait_key(store_id: int) -> str:
    return f"store-auth:{store_id}"


def wait_for_authorization(store_id: int, error: Exception | str) -> Retry:
    """The outcome of a job that cannot go on until the store is authorised again: it waits, uncounted,
    and is woken the moment the store is connected."""
    return Retry(PARKED_RECHECK_S, f"waiting for the store to be authorised again: {error}"[:2000], counts=False,
                 waiting_for=auth_wait_key(store_id))


# --- the auth object on store answers ---------------------------------------------------------


@dataclass(frozen=True)
class AuthState:
    status: str  # ok, expiring, expired, revoked, not_required
    expires_at: datetime | None
    refresh_expires_at: datetime | None
    last_refreshed_at: datetime | None
    error: str | None


def _can_refresh(store: Store, now: datetime) -> bool:
    return bool((store.credentials or {}).get("refresh_token")) and (
        store.refresh_expires_at is None or store.refresh_expires_at > now)


def auth_state(store: Store, now: datetime | None = None) -> AuthState:
    now = now or utcnow()
    spec = authorization_of(store.platform)
    status, error = "ok", store.auth_error
    if spec.mode == "none":
        status = "not_required"
    elif store.auth_status in NEEDS_AUTHORIZATION:
        status = store.auth_status
    elif store.auth_expires_at is not None and not _can_refresh(store, now):
        if store.auth_expires_at <= now:
            status, error = "expired", f"the token ended at {store.auth_expires_at.isoformat()} and cannot be renewed"
        elif store.auth_expires_at - now < EXPIRING_WITHIN:
            status = "expiring"
            error = f"the token ends at {store.auth_expires_at.isoformat()} and cannot be renewed: authorise again"
    return AuthState(status, store.auth_expires_at, store.refresh_expires_at, store.last_refreshed_at, error)


# --- storing tokens -----------------------------------------------------------------------------


def split_token_times(credentials: dict) -> tuple[dict, datetime | None, datetime | None]:
    """Credentials given by hand may name their tokens' ends; those live in columns, not in the secret."""
    rest = {k: v for k, v in credentials.items() if k not in ("expires_at", "refresh_expires_at")}
    return rest, _when(credentials.get("expires_at")), _when(credentials.get("refresh_expires_at"))


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise Invalid("credentials: expires_at and refresh_expires_at are ISO 8601 times") from None
    if moment.tzinfo is None:
        raise Invalid("credentials: expires_at and refresh_expires_at need a UTC offset")
    return moment


def has_token(store: Store) -> bool:
    spec = authorization_of(store.platform)
    return spec.mode == "none" or bool((store.credentials or {}).get(spec.token_field))


async def wake_parked(session: AsyncSession, store_id: int) -> None:
    """Jobs that waited for this store's authorisation run now (after the caller commits)."""
    result = await session.execute(
        text("UPDATE job SET run_after = :now, waiting_for = NULL WHERE waiting_for = :key AND status = 'queued'"),
        {"now": bind_time(session, utcnow()), "key": auth_wait_key(store_id)})
    if result.rowcount:
        session.info["jobs_enqueued"] = True
        log.info("store connected: %s waiting jobs resume", result.rowcount, extra={"store_id": store_id})


async def save_grant(session: AsyncSession, store: Store, grant: TokenGrant, *, refreshed: bool) -> None:
    """Keep what a token endpoint answered: the tokens (encrypted with the credentials), their ends, and
    the store connected again; its waiting jobs resume."""
    now = utcnow()
    previous_refresh = (store.credentials or {}).get("refresh_token")
    store.credentials = {**(store.credentials or {}), **dict(grant.credentials)}
    if not grant.refreshable:
        store.credentials.pop("refresh_token", None)
    store.auth_expires_at = grant.expires_at
    if grant.refresh_expires_at is not None or store.credentials.get("refresh_token") != previous_refresh:
        store.refresh_expires_at = grant.refresh_expires_at
    if grant.shop_id and not store.external_shop_id:
        store.external_shop_id = grant.shop_id
    store.last_refreshed_at = now if refreshed else store.last_refreshed_at
    store.auth_status, store.auth_error = "ok", None
    store.credentials_version += 1
    store.refresh_lease_until = None
    store.updated_at = now
    await wake_parked(session, store.id)


async def mark_needs_authorization(session: AsyncSession, store_id: int, error: str, *, revoked: bool = False) -> None:
    """The store cannot call its platform until a human authorises it again: say so once, loudly."""
    store = await session.get(Store, store_id, with_for_update=True, populate_existing=True)
    if store is None:
        return
    status = "revoked" if revoked else "expired"
    first = store.auth_status not in NEEDS_AUTHORIZATION
    store.auth_status = status
    store.auth_error = f"{error[:800]} Resolution: authorise the store again (POST /v1/stores/{store_id}/authorize)."
    store.refresh_lease_until = None
    store.updated_at = utcnow()
    if first:
        STORE_REAUTHORIZATION_NEEDED.labels(store.platform, status).inc()
        log.warning("store needs re-authorisation", extra={"store_id": store_id, "platform": store.platform,
                                                            "auth_status": status, "reason": error[:300]})


# --- keeping a token fresh ----------------------------------------------------------------------


class TokenKeeper:
    """One store's adapter and the version of the credentials it was built from. ``renew`` refreshes the
    token once across all replicas: whoever claims the lease calls the platform, the others wait for the
    new version and use it (Douyin refuses concurrent refreshes; Shopify replaces the refresh token)."""

    def __init__(self, db: Database, store: Store, http: httpx.AsyncClient | None) -> None:
        self.db = db
        self.http = http
        self.spec = authorization_of(store.platform)
        self._adopt(store)

    def _adopt(self, store: Store) -> None:
        self.store = store
        self.version = store.credentials_version
        self.adapter = make_adapter(store, self.http)

    def refresh_due(self, now: datetime) -> bool:
        return (self.spec.mode != "none" and self.store.auth_expires_at is not None
                and self.store.auth_expires_at - now <= self.spec.refresh_margin and _can_refresh(self.store, now))

    async def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        version = self.version
        try:
            result = await getattr(self.adapter, name)(*args, **kwargs)
        except AuthExpiredError as exc:
            await self.recover(exc, version)
            try:
                return await getattr(self.adapter, name)(*args, **kwargs)
            except AuthExpiredError as again:
                await self.give_up(again)
                raise
        if name == "push_stock":
            return await self._repush_after_refresh(args[0] if args else kwargs["levels"], result, version)
        return result

    async def _repush_after_refresh(self, levels: list[StockLevel], results: list, version: int) -> list:
        """A push halts on an expired token and reports the rest with it: renew, then push those again."""
        expired = [r for r in results if r.error_kind in AUTH_KINDS]
        if not expired:
            return results
        await self.recover(AuthExpiredError(expired[0].error or "token expired", platform=self.store.platform),
                           version)
        again_keys = {r.external_sku_key for r in expired}
        again = await self.adapter.push_stock([level for level in levels if level.external_sku_key in again_keys])
        if any(r.error_kind in AUTH_KINDS for r in again):
            await self.give_up(AuthExpiredError("the renewed token was refused too", platform=self.store.platform))
        by_key = {r.external_sku_key: r for r in again}
        return [by_key.get(r.external_sku_key, r) for r in results]

    async def recover(self, exc: AuthExpiredError, version: int) -> None:
        """After the platform's "token expired": renew once, or give up and raise."""
        if isinstance(exc, RefreshRefused) or self.spec.mode == "none":
            await self.give_up(exc)
            raise exc
        if self.version != version:
            return  # renewed meanwhile by another call of this keeper
        if not _can_refresh(self.store, utcnow()):
            await self.give_up(exc)
            raise exc
        await self.renew()

    async def give_up(self, exc: AdapterError) -> None:
        async with self.db.transaction() as session:
            await mark_needs_authorization(session, self.store.id, str(exc),
                                           revoked=bool(getattr(exc, "revoked", False)))

    async def renew(self) -> None:
        """Refresh the token, or adopt the one another replica just got."""
        deadline = time.monotonic() + REFRESH_LEASE.total_seconds()
        while True:
            now = utcnow()
            async with self.db.transaction() as session:
                claimed = (await session.execute(
                    update(Store).where(
                        Store.id == self.store.id, Store.credentials_version == self.version,
                        or_(Store.refresh_lease_until.is_(None), Store.refresh_lease_until < now))
                    .values(refresh_lease_until=now + REFRESH_LEASE)
                    .execution_options(synchronize_session=False))).rowcount == 1
                current = None if claimed else await session.get(Store, self.store.id, populate_existing=True)
            if claimed:
                break
            if current is None:
                raise PermanentError("store no longer exists", platform=self.store.platform)
            if current.credentials_version != self.version:
                self._adopt(current)  # another replica refreshed: use its tokens
                if current.auth_status in NEEDS_AUTHORIZATION:
                    raise StoreNotAuthorized(current.auth_error or "store needs authorisation")
                return
            if current.auth_status in NEEDS_AUTHORIZATION:
                raise StoreNotAuthorized(current.auth_error or "store needs authorisation")
            if time.monotonic() > deadline:
                raise TransientError("another replica's token refresh has not finished", platform=current.platform,
                                     retry_after_s=5.0)
            await asyncio.sleep(REFRESH_WAIT_POLL_S)
        try:
            grant = await self.adapter.refresh_tokens()
        except RefreshRefused as exc:
            TOKEN_REFRESHES.labels(self.store.platform, "refused").inc()
            await self.give_up(exc)
            raise
        except BaseException:
            TOKEN_REFRESHES.labels(self.store.platform, "failed").inc()
            async with self.db.transaction() as session:
                await session.execute(update(Store).where(Store.id == self.store.id)
                                      .values(refresh_lease_until=None)
                                      .execution_options(synchronize_session=False))
            raise
        async with self.db.transaction() as session:
            store = await session.get(Store, self.store.id, with_for_update=True, populate_existing=True)
            await save_grant(session, store, grant, refreshed=True)
        TOKEN_REFRESHES.labels(self.store.platform, "ok").inc()
        log.info("token refreshed", extra={"store_id": store.id, "platform": store.platform})
        self._adopt(store)


class ConnectedAdapter:
    """The store's adapter, with every platform call renewed once on the platform's "token expired"."""

    def __init__(self, keeper: TokenKeeper) -> None:
        self._keeper = keeper

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._keeper.adapter, name)
        if not inspect.iscoroutinefunction(value):
            return value

        async def renewing(*args: Any, **kwargs: Any) -> Any:
            return await self._keeper.call(name, args, kwargs)

        return renewing


async def connect(db: Database, store: Store, http: httpx.AsyncClient | None = None) -> Adapter:
    """The adapter a flow calls its platform with: refused at once (``StoreNotAuthorized``) while the store
    waits for authorisation, its token renewed when it is due, and renewed once more on "token expired"."""
    if authorization_of(store.platform).mode != "none":
        if store.auth_status in NEEDS_AUTHORIZATION:
            raise StoreNotAuthorized(store.auth_error or "store needs authorisation")
        if not has_token(store):
            async with db.transaction() as session:
                await mark_needs_authorization(session, store.id, "the store has not been authorised yet.")
            raise StoreNotAuthorized(f"store {store.id} has not been authorised yet: POST /v1/stores/{store.id}/authorize")
    keeper = TokenKeeper(db, store, http)
    now = utcnow()
    if keeper.refresh_due(now):
        try:
            await keeper.renew()
        except TransientError as exc:
            if store.auth_expires_at is not None and store.auth_expires_at <= now:
                raise
            log.warning("token refresh failed, the current token still works: %s", exc,
                        extra={"store_id": store.id, "platform": store.platform})
    return ConnectedAdapter(keeper)  # type: ignore[return-value]


# --- scheduled refresh ahead of expiry ------------------------------------------------------------


async def schedule_refreshes(session: AsyncSession, now: datetime, settings: Settings) -> None:
    """Queue a refresh of each connected store whose token is inside its refresh margin, so that idle
    stores (no polls, no pushes) keep their tokens too."""
    rows = (await session.execute(select(Store).where(
        Store.auth_status == "ok", Store.auth_expires_at.is_not(None),
        or_(Store.refresh_lease_until.is_(None), Store.refresh_lease_until < now)))).scalars().all()
    for store in rows:
        spec = authorization_of(store.platform)
        if spec.mode != "none" and store.auth_expires_at - now <= spec.refresh_margin and _can_refresh(store, now):
            await handle_refresh.enqueue(session, {"store_id": store.id})


@job("auth.refresh", dedupe=per_store("auth.refresh"), lock=per_store("auth.refresh"), schedule=schedule_refreshes)
async def handle_refresh(ctx: JobContext) -> Outcome:
    store_id = int(ctx.job.payload["store_id"])
    async with ctx.db.read() as session:
        store = await session.get(Store, store_id)
    if store is None or store.auth_status in NEEDS_AUTHORIZATION:
        return Done("store gone or waiting for authorisation")
    keeper = TokenKeeper(ctx.db, store, ctx.services.get("http"))
    if not keeper.refresh_due(utcnow()):
        return Done("not due")
    try:
        await keeper.renew()
    except TransientError as exc:
        return Retry(exc.retry_after_s or 30.0, str(exc))
    except AuthExpiredError as exc:
        return Done(f"store needs authorisation: {exc}")
    return Done("refreshed")


# --- authorising a store ------------------------------------------------------------------------


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def redirect_uri(public_base: str, platform: str) -> str:
    return f"{public_base.rstrip('/')}/oauth/{platform}/callback"


@dataclass(frozen=True)
class Authorize:
    authorize_url: str | None
    state_expires_at: datetime | None
    connected: bool
    detail: str


async def start_authorization(db: Database, store_id: int, public_base: str,
                              http: httpx.AsyncClient | None = None) -> Authorize:
    """The consent page with a single-use ``state``; a self-use app's token is created right away."""
    async with db.read() as session:
        store = await session.get(Store, store_id)
    if store is None:
        raise NotFound(f"no store {store_id}")
    if authorization_of(store.platform).mode == "none":
        raise Invalid(f"{store.platform} stores need no authorisation: their key pair does not expire")
    adapter = make_adapter(store, http)
    state = secrets.token_urlsafe(32)
    try:
        url = adapter.authorize_url(redirect_uri(public_base, store.platform), state)
    except PermanentError as exc:
        raise Invalid(str(exc)) from None
    if url is None:
        grant = await _platform_grant(adapter.create_token())
        async with db.transaction() as session:
            row = await session.get(Store, store_id, with_for_update=True)
            await save_grant(session, row, grant, refreshed=False)
        return Authorize(None, None, True, "self-use app: its token was created directly, no consent page")
    expires = utcnow() + STATE_TTL
    async with db.transaction() as session:
        session.add(OAuthState(store_id=store_id, state_hash=_hash(state), expires_at=expires))
    return Authorize(url, expires, False, "open authorize_url as the shop's owner; the platform returns to the "
                                          "service's callback, which stores the tokens")


async def _platform_grant(call) -> TokenGrant:
    try:
        return await call
    except TransientError as exc:
        raise PlatformUnavailable(f"the platform did not answer: {exc}") from None
    except AdapterError as exc:
        raise Conflict(f"the platform refused: {exc}") from None


@dataclass(frozen=True)
class Connected:
    store: Store
    grant: TokenGrant


async def complete_authorization(db: Database, platform: str, params: Mapping[str, str], public_base: str,
                                 http: httpx.AsyncClient | None = None) -> Connected:
    """The platform's redirect: check the state (ours, unused, fresh, this platform's), exchange the code,
    keep the tokens. A bad state changes nothing."""
    state, code = params.get("state") or "", params.get("code") or ""
    if not state or not code:
        raise BadCallback("the callback needs code and state")
    now = utcnow()
    async with db.read() as session:
        found = (await session.execute(select(OAuthState, Store).join(Store, Store.id == OAuthState.store_id)
                                       .where(OAuthState.state_hash == _hash(state)))).first()
    if found is None:
        raise BadCallback("unknown state: start again with POST /v1/stores/{id}/authorize")
    pending, store = found
    if pending.used_at is not None or pending.expires_at <= now or store.platform != platform:
        raise BadCallback("this state was used already, has expired or belongs to another platform")
    adapter = make_adapter(store, http)
    try:
        adapter.verify_callback(params)
    except (SignatureError, PermanentError) as exc:
        raise BadCallback(f"the callback does not verify: {exc}") from None
    async with db.transaction() as session:
        # Single use, across replicas: only one request flips used_at.
        taken = (await session.execute(
            update(OAuthState).where(OAuthState.id == pending.id, OAuthState.used_at.is_(None))
            .values(used_at=now).execution_options(synchronize_session=False))).rowcount == 1
    if not taken:
        raise BadCallback("this state was used already")
    grant = await _platform_grant(adapter.exchange_code(code, redirect_uri(public_base, platform), params))
    async with db.transaction() as session:
        row = await session.get(Store, store.id, with_for_update=True, populate_existing=True)
        if grant.shop_id and row.external_shop_id and grant.shop_id != row.external_shop_id:
            raise Conflict(f"the shop that authorised ({grant.shop_id}) is not this store's "
                           f"({row.external_shop_id}); nothing was changed")
        await save_grant(session, row, grant, refreshed=False)
    log.info("store authorised", extra={"store_id": row.id, "platform": platform})
    return Connected(row, grant)
