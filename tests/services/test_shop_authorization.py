"""Shops stay connected: tokens refreshed on the platform's "expired" answer and ahead of expiry, one refresh
across replicas, jobs parked (never dead) while a human re-authorises, and the OAuth callback's state."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, parse_qsl, urlparse

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.db import Database, make_engine, make_sessionmaker
from app.models import Job, Order, Store
from app.models.base import utcnow
from app.services.connections import connect
from app.workers.schedule import Scheduler
from tests.helpers import ADMIN, count_rows, create_store
from tests.services.test_platforms_e2e import PDD_CREDS, PDD_GATEWAY, PddGateway, _pdd_error, _resync
from tests.shops import make_jobs_due


class TokenPdd(PddGateway):
    """The PDD gateway with its token endpoints: a call with a token it no longer knows answers 10019
    ("access_token已过期"); ``pdd.pop.auth.token.refresh`` trades the refresh token for new ones."""

    def __init__(self, *, valid: str | None = None, refresh: str = "refresh-1", refresh_delay_s: float = 0.0) -> None:
        super().__init__()
        self.valid_token = valid
        self.refresh_token = refresh
        self.refresh_delay_s = refresh_delay_s
        self.refuse_refresh = False
        self.refreshes = 0
        self.codes: dict[str, str] = {}  # code -> the shop it authorises
        self.tokens_used: list[str] = []

    def _grant(self, shop: str = "mall-1") -> dict:
        n = self.refreshes + len(self.tokens_used) + 1
        self.valid_token, self.refresh_token = f"token-new-{n}", f"refresh-new-{n}"
        now = int(time.time())
        return {"access_token": self.valid_token, "expires_at": now + 86400, "expires_in": 86400,
                "refresh_token": self.refresh_token, "refresh_token_expires_at": now + 30 * 86400,
                "owner_id": shop, "owner_name": "秦巴茶叶", "scope": ["pdd.order.information.get"]}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        kind = params["type"]
        if kind.startswith("pdd.pop.auth.token."):
            assert "access_token" not in params  # the token endpoints are called without the stale token
            if kind.endswith(".refresh"):
                self.refreshes += 1
                await asyncio.sleep(self.refresh_delay_s)
                if self.refuse_refresh or params["refresh_token"] != self.refresh_token:
                    return httpx.Response(200, json=_pdd_error(10018, "refresh_token无效", "invalid_refresh_token"))
                return httpx.Response(200, json={"pop_auth_token_refresh_response": self._grant()})
            shop = self.codes.pop(params.get("code", ""), None)
            if shop is None:
                return httpx.Response(200, json=_pdd_error(10018, "code无效或已过期", "invalid_code"))
            self.tokens_used.append(params["code"])
            return httpx.Response(200, json={"pop_auth_token_create_response": self._grant(shop)})
        if params.get("access_token") != self.valid_token:
            return httpx.Response(200, json=_pdd_error(10019, "access_token已过期", "access_token_invalid"))
        return super().__call__(request)


PDD_WITH_REFRESH = {**PDD_CREDS, "access_token": "token-old", "refresh_token": "refresh-1"}


async def _pdd_store(client, credentials=PDD_WITH_REFRESH, **extra) -> dict:
    return await create_store(client, "pinduoduo", external_shop_id="mall-1", credentials=credentials,
                              settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0}, **extra)


async def _resync_status(client, resync_id) -> dict:
    r = await client.get(f"/v1/resyncs/{resync_id}", headers=ADMIN)
    assert r.status_code == 200
    return r.json()


async def test_pdd_token_expired_once_is_refreshed_and_the_call_succeeds(client, db, runner):
    store = await _pdd_store(client)
    gateway = TokenPdd(valid=None)  # the platform no longer knows "token-old": 10019 on the first call
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        resync_id = await _resync(client, store["id"], "orders")
        await runner.run_until_idle()
    assert gateway.refreshes == 1
    done = await _resync_status(client, resync_id)
    assert done["status"] == "succeeded", done
    assert await count_rows(db, Order, Order.store_id == store["id"]) == 2
    r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
    auth = r.json()["auth"]
    assert auth["status"] == "ok" and auth["last_refreshed_at"] is not None and auth["expires_at"] is not None
    async with db.read() as session:
        row = await session.get(Store, store["id"])
    # Kept for the next calls: the new token and the new refresh token (the old one is spent).
    assert row.credentials["access_token"] == gateway.valid_token
    assert row.credentials["refresh_token"] == gateway.refresh_token


async def test_two_replicas_hitting_expiry_at_once_refresh_once(client, db, database_url):
    store = await _pdd_store(client)
    gateway = TokenPdd(valid=None, refresh_delay_s=0.3)
    # Two replicas: each its own engine and connection pool on the one PostgreSQL database.
    replicas = [Database(engine, make_sessionmaker(engine))
                for engine in (make_engine(database_url, pool_size=2), make_engine(database_url, pool_size=2))]
    try:
        with respx.mock(assert_all_mocked=True) as mock:
            mock.post(PDD_GATEWAY).mock(side_effect=gateway)

            async def fetch(replica: Database):
                async with replica.read() as session:
                    row = await session.get(Store, store["id"])
                adapter = await connect(replica, row)
                return await adapter.fetch_order("240601-100000000000001")

            orders = await asyncio.gather(*(fetch(r) for r in replicas))
    finally:
        for replica in replicas:
            await replica.engine.dispose()
    assert [o.external_id for o in orders] == ["240601-100000000000001"] * 2
    assert gateway.refreshes == 1


def _reauthorizations() -> float:
    return REGISTRY.get_sample_value("coopsync_store_reauthorization_needed_total",
                                     {"platform": "pinduoduo", "status": "expired"}) or 0.0


async def test_refused_refresh_parks_the_jobs_and_the_callback_resumes_them(client, db, runner):
    reauthorizations = _reauthorizations()
    store = await _pdd_store(client)
    gateway = TokenPdd(valid=None)
    gateway.refuse_refresh = True
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        resync_id = await _resync(client, store["id"], "orders")
        await runner.run_until_idle()
        r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
        assert r.json()["auth"]["status"] == "expired" and "authorize" in r.json()["auth"]["error"]
        async with db.read() as session:
            job = (await session.execute(select(Job).where(Job.name == "resync.run"))).scalar_one()
        assert job.status == "queued" and job.waiting_for == f"store-auth:{store['id']}" and job.attempts == 0
        assert (await _resync_status(client, resync_id))["status"] == "running"
        # Waiting is not failing: however often the workers look, nothing goes dead or calls the platform.
        await make_jobs_due(db)
        calls = len(mock.calls)
        await runner.run_until_idle()
        assert len(mock.calls) == calls
        async with db.read() as session:
            assert (await session.get(Job, job.id)).status == "queued"
        metrics = (await client.get("/metrics")).text
        assert 'coopsync_stores_needing_authorization{platform="pinduoduo"} 1.0' in metrics
        assert _reauthorizations() == reauthorizations + 1  # once, however many jobs found it expired

        r = await client.post(f"/v1/stores/{store['id']}/authorize", headers=ADMIN)
        assert r.status_code == 200, r.text
        url = urlparse(r.json()["authorize_url"])
        query = parse_qs(url.query)
        assert url.netloc == "fuwu.pinduoduo.com" and query["client_id"] == [PDD_CREDS["client_id"]]
        assert query["redirect_uri"] == ["http://coopsync.test/oauth/pinduoduo/callback"]
        gateway.codes["code-1"] = "mall-1"
        r = await client.get("/oauth/pinduoduo/callback", params={"code": "code-1", "state": query["state"][0]})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "connected" and r.json()["store_id"] == store["id"]
        assert r.json()["shop_id"] == "mall-1" and r.json()["auth"]["status"] == "ok"
        await runner.run_until_idle()  # woken at once: no waiting for the hourly recheck
    assert (await _resync_status(client, resync_id))["status"] == "succeeded"
    assert await count_rows(db, Order, Order.store_id == store["id"]) == 2


async def test_a_forged_or_reused_state_is_400_and_changes_nothing(client, db):
    store = await _pdd_store(client)
    gateway = TokenPdd(valid="token-old")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        r = await client.post(f"/v1/stores/{store['id']}/authorize", headers=ADMIN)
        state = parse_qs(urlparse(r.json()["authorize_url"]).query)["state"][0]
        async with db.read() as session:
            before = (await session.get(Store, store["id"])).credentials
        gateway.codes.update({"code-1": "mall-1", "code-2": "mall-1"})
        for params in ({"code": "code-1", "state": state[:-2] + "xx"},  # forged
                       {"code": "code-1", "state": "made-up"},
                       {"code": "code-1"},  # none
                       {"code": "code-1", "state": state}):  # right, but on another platform's callback
            path = "/oauth/douyin/callback" if params.get("state") == state else "/oauth/pinduoduo/callback"
            r = await client.get(path, params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        assert gateway.tokens_used == []  # no code was spent
        r = await client.get("/oauth/pinduoduo/callback", params={"code": "code-1", "state": state})
        assert r.status_code == 200
        async with db.read() as session:
            after_first = (await session.get(Store, store["id"])).credentials
        assert after_first != before
        r = await client.get("/oauth/pinduoduo/callback", params={"code": "code-2", "state": state})  # reused
        assert r.status_code == 400
        assert gateway.tokens_used == ["code-1"]
    async with db.read() as session:
        assert (await session.get(Store, store["id"])).credentials == after_first


async def test_an_expired_state_is_refused(client, db):
    store = await _pdd_store(client)
    r = await client.post(f"/v1/stores/{store['id']}/authorize", headers=ADMIN)
    state = parse_qs(urlparse(r.json()["authorize_url"]).query)["state"][0]
    from app.models import OAuthState

    async with db.transaction() as session:
        row = (await session.execute(select(OAuthState))).scalar_one()
        row.expires_at = utcnow() - timedelta(seconds=1)
    r = await client.get("/oauth/pinduoduo/callback", params={"code": "c", "state": state})
    assert r.status_code == 400


async def test_tokens_are_refreshed_ahead_of_expiry_by_the_scheduler(client, db, runner, settings):
    soon = (datetime.now(timezone.utc) + timedelta(minutes=10)).isoformat()
    store = await _pdd_store(client, credentials={**PDD_WITH_REFRESH, "expires_at": soon})
    r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
    assert r.json()["auth"]["expires_at"] is not None
    gateway = TokenPdd(valid="token-old")
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        await Scheduler(db, settings).tick()
        await runner.run_until_idle()
    assert gateway.refreshes == 1
    async with db.read() as session:
        row = await session.get(Store, store["id"])
    assert row.credentials["access_token"] == gateway.valid_token
    assert row.auth_expires_at > utcnow() + timedelta(hours=23)
    metrics = (await client.get("/metrics")).text
    line = next(m for m in metrics.splitlines()
                if m.startswith(f'coopsync_store_token_expires_in_seconds{{platform="pinduoduo",store_id="{store["id"]}"}}'))
    assert float(line.split()[-1]) > 23 * 3600


async def test_a_store_without_a_token_waits_for_authorisation_without_calling(client, db, runner):
    store = await _pdd_store(client, credentials={"client_id": PDD_CREDS["client_id"],
                                                  "client_secret": PDD_CREDS["client_secret"]})
    assert store["auth"]["status"] == "expired" and "authorize" in store["auth"]["error"]
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        route = mock.post(PDD_GATEWAY).mock(return_value=httpx.Response(500))
        resync_id = await _resync(client, store["id"], "orders")
        await runner.run_until_idle()
    assert route.call_count == 0
    assert (await _resync_status(client, resync_id))["status"] == "running"


# --- Douyin ----------------------------------------------------------------------------------------

DY_BASE = "https://douyin.test"
DY_CREDS = {"app_key": "1234567890123456789", "app_secret": "testsecret"}


async def test_douyin_self_use_app_creates_its_token_without_a_consent_page(client, db):
    store = await create_store(client, "douyin", external_shop_id="12345", credentials=DY_CREDS,
                               settings={"base_url": DY_BASE, "poll_interval_s": 0})
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(f"{DY_BASE}/token/create").mock(return_value=httpx.Response(200, json={
            "code": 10000, "data": {"access_token": "dy-access", "expires_in": 604800, "refresh_token": "dy-refresh",
                                    "shop_id": 12345, "shop_name": "秦巴"}}))
        r = await client.post(f"/v1/stores/{store['id']}/authorize", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["authorize_url"] is None and r.json()["connected"] is True
    sent = route.calls[0].request
    assert "access_token" not in sent.url.params
    assert b'"grant_type":"authorization_self"' in sent.content and b'"shop_id":12345' in sent.content
    async with db.read() as session:
        row = await session.get(Store, store["id"])
    assert row.credentials["access_token"] == "dy-access" and row.auth_status == "ok"
    assert row.refresh_expires_at - utcnow() > timedelta(days=13)


async def test_douyin_concurrent_refresh_refusal_is_retried_not_the_end(client, db, runner):
    store = await create_store(client, "douyin", external_shop_id="12345",
                               credentials={**DY_CREDS, "access_token": "dy-old", "refresh_token": "dy-r1"},
                               settings={"base_url": DY_BASE, "poll_interval_s": 0})
    answers = iter([
        httpx.Response(200, json={"code": 50002, "sub_code": "isv.business-failed:31012", "msg": "刷新token失败，有并发请求"}),
        httpx.Response(200, json={"code": 10000, "data": {"access_token": "dy-new", "expires_in": 604800,
                                                          "refresh_token": "dy-r2"}}),
    ])
    expired = {"code": 40003, "sub_code": "isv.access-token-expired", "msg": "access_token已过期"}
    with respx.mock(assert_all_mocked=True) as mock:
        refresh = mock.post(f"{DY_BASE}/token/refresh").mock(side_effect=lambda request: next(answers))
        detail = mock.post(f"{DY_BASE}/order/orderDetail").mock(side_effect=lambda request: httpx.Response(
            200, json=expired if request.url.params["access_token"] == "dy-old" else {
                "code": 10000, "data": {"shop_order_detail": None}}))
        async with db.read() as session:
            row = await session.get(Store, store["id"])
        adapter = await connect(db, row)
        adapter._keeper.adapter.client.sleep = _no_sleep
        await adapter.fetch_order("6920000000000000001")
    assert refresh.call_count == 2 and detail.call_count == 2
    async with db.read() as session:
        row = await session.get(Store, store["id"])
    assert row.credentials["access_token"] == "dy-new" and row.auth_status == "ok"


async def _no_sleep(_seconds: float) -> None:
    return None


async def test_douyin_revoked_authorisation_marks_the_store_revoked(client, db):
    store = await create_store(client, "douyin", external_shop_id="12345",
                               credentials={**DY_CREDS, "access_token": "dy-old", "refresh_token": "dy-r1"},
                               settings={"base_url": DY_BASE, "poll_interval_s": 0})
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        refresh = mock.post(f"{DY_BASE}/token/refresh").mock(return_value=httpx.Response(500))
        mock.post(f"{DY_BASE}/order/orderDetail").mock(return_value=httpx.Response(200, json={
            "code": 30001, "sub_code": "dop.authorization-closed", "msg": "商家关闭授权开关"}))
        async with db.read() as session:
            row = await session.get(Store, store["id"])
        adapter = await connect(db, row)
        with pytest.raises(Exception):
            await adapter.fetch_order("6920000000000000001")
    assert refresh.call_count == 0  # no refresh can undo a withdrawn authorisation
    r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
    assert r.json()["auth"]["status"] == "revoked"


# --- Shopify ---------------------------------------------------------------------------------------

SHOP = "qinba.myshopify.com"
SHOPIFY_APP = {"client_id": "shp-client", "client_secret": "shp-secret"}


def _signed(params: dict) -> dict:
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {**params, "hmac": hmac.new(b"shp-secret", message.encode(), hashlib.sha256).hexdigest()}


async def test_shopify_oauth_keeps_expiring_tokens_and_replaces_the_refresh_token_on_each_use(client, db):
    store = await create_store(client, "shopify", external_shop_id=SHOP, credentials=SHOPIFY_APP,
                               settings={"poll_interval_s": 0})
    r = await client.post(f"/v1/stores/{store['id']}/authorize", headers=ADMIN)
    url = urlparse(r.json()["authorize_url"])
    query = parse_qs(url.query)
    assert url.netloc == SHOP and url.path == "/admin/oauth/authorize"
    assert "read_orders" in query["scope"][0] and "read_shopify_payments_payouts" in query["scope"][0]
    state = query["state"][0]
    with respx.mock(assert_all_mocked=True) as mock:
        token = mock.post(f"https://{SHOP}/admin/oauth/access_token").mock(side_effect=[
            httpx.Response(200, json={"access_token": "shpat_1", "scope": "read_orders", "expires_in": 3600,
                                      "refresh_token": "shprt_1", "refresh_token_expires_in": 7776000}),
            httpx.Response(200, json={"access_token": "shpat_2", "expires_in": 3600, "refresh_token": "shprt_2"}),
        ])
        unsigned = {"code": "c1", "shop": SHOP, "state": state, "timestamp": "1700000000"}
        r = await client.get("/oauth/shopify/callback", params={**unsigned, "hmac": "0" * 64})
        assert r.status_code == 400 and token.call_count == 0  # a forged redirect does not spend the state
        r = await client.get("/oauth/shopify/callback", params=_signed(unsigned))
        assert r.status_code == 200, r.text
        assert token.calls[0].request.content and b'"expiring":1' in token.calls[0].request.content.replace(b" ", b"")
        async with db.read() as session:
            row = await session.get(Store, store["id"])
        assert row.credentials["access_token"] == "shpat_1" and row.credentials["refresh_token"] == "shprt_1"
        assert timedelta(minutes=55) < row.auth_expires_at - utcnow() <= timedelta(minutes=60)
        # 60-minute tokens: inside the 5-minute margin the next connect refreshes first.
        async with db.transaction() as session:
            row = await session.get(Store, store["id"])
            row.auth_expires_at = utcnow() + timedelta(minutes=2)
        async with db.read() as session:
            row = await session.get(Store, store["id"])
        await connect(db, row)
    assert b'"refresh_token":"shprt_1"' in token.calls[1].request.content.replace(b" ", b"")
    async with db.read() as session:
        row = await session.get(Store, store["id"])
    assert row.credentials["access_token"] == "shpat_2" and row.credentials["refresh_token"] == "shprt_2"


# --- Taobao ----------------------------------------------------------------------------------------


async def test_taobao_session_that_cannot_be_refreshed_shows_expiring_then_expired(client, db):
    ends = datetime.now(timezone.utc) + timedelta(hours=20)
    store = await create_store(client, "taobao", external_shop_id="tb-1",
                               credentials={"app_key": "12345678", "app_secret": "s", "session": "tb-session",
                                            "expires_at": ends.isoformat()}, settings={"poll_interval_s": 0})
    assert store["auth"]["status"] == "expiring"
    assert store["auth"]["expires_at"].startswith(ends.strftime("%Y-%m-%dT%H:%M"))
    async with db.transaction() as session:
        row = await session.get(Store, store["id"])
        row.auth_expires_at = utcnow() - timedelta(minutes=1)
    r = await client.get(f"/v1/stores/{store['id']}", headers=ADMIN)
    assert r.json()["auth"]["status"] == "expired"


async def test_woocommerce_needs_no_authorisation(client):
    store = await create_store(client, "woocommerce", credentials={"consumer_key": "ck_1", "consumer_secret": "cs_1"},
                               settings={"base_url": "https://woo.test", "poll_interval_s": 0})
    assert store["auth"]["status"] == "not_required"
    r = await client.post(f"/v1/stores/{store['id']}/authorize", headers=ADMIN)
    assert r.status_code == 422
