"""Push channels end to end, on both engines: a fake Pinduoduo message service (a real WebSocket server on
127.0.0.1) and a fake TOP gateway feed the service, whose messages become inbox rows, then orders fetched
through the adapter. The connection drops mid-stream without losing or doubling anything; of two replicas
only one consumes, and the other takes over once the lease runs out; nothing is acknowledged before it
is stored."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import timedelta
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from adapters.signing import sign_wrapped_md5, signatures_equal
from adapters.taobao.client import top_sign
from app.models import ChannelLease, InboxItem, Job, Order, StockMovement
from app.services.channels import ChannelConsumer, ChannelSpec, configured_channels
from app.models.base import utcnow
from app.services.intake import GroupCommitter
from tests.conftest import running_app
from tests.conftest import test_settings as make_settings
from tests.helpers import ADMIN, count_rows, create_sku, create_store, receive, wait_until
from tests.pdd_message_server import CLIENT_ID, CLIENT_SECRET, FakeMessageService
from tests.shops import stock_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PDD_GATEWAY = "https://pdd.test/api/router"
PDD_CREDS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "access_token": "token-123"}
MALL = "880001"
SKU = "QINBA-MAOJIAN"
PDD_SPEC = ChannelSpec("pinduoduo", CLIENT_ID, CLIENT_SECRET)

TEST_TIMEOUT_S = 60  # no test here waits longer than this, whatever goes wrong


class PddOrders:
    """PDD's gateway for the orders the messages name: checks the sign, answers pdd.order.information.get
    (an unknown order is an empty answer, as PDD's read side lagging behind its push would give) and takes
    stock pushes."""

    def __init__(self) -> None:
        template = json.loads((FIXTURES / "pinduoduo" / "order-240601-100000000000001.json").read_text())
        self.template = template
        self.orders: dict[str, dict] = {}
        self.fetches: dict[str, int] = {}
        self.bad_signs = 0

    def add(self, order_sn: str) -> None:
        order = copy.deepcopy(self.template)
        order.update(order_sn=order_sn, order_status=1, shipping_time="", pay_amount=34.0, goods_amount=34.0,
                     discount_amount=0, platform_discount=0, seller_discount=0)
        order["item_list"][0]["goods_count"] = 1
        self.orders[order_sn] = order

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if not signatures_equal(sign_wrapped_md5({k: v for k, v in params.items() if k != "sign"},
                                                 CLIENT_SECRET), params.get("sign")):
            self.bad_signs += 1
            return httpx.Response(200, json={"error_response": {"error_code": 10016, "error_msg": "签名错误"}})
        if params["type"] == "pdd.order.information.get":
            sn = params["order_sn"]
            self.fetches[sn] = self.fetches.get(sn, 0) + 1
            return httpx.Response(200, json={"order_info_get_response": {"order_info": self.orders.get(sn, {})}})
        if params["type"] == "pdd.goods.quantity.update":
            return httpx.Response(200, json={"goods_quantity_update_response": {"is_success": True}})
        return httpx.Response(200, json={"error_response": {"error_code": 10001, "error_msg": params["type"]}})


def channel_settings(database_url: str, server_url: str, **overrides):
    values = dict(workers=True, worker_poll_s=0.05, pdd_message_service=True, pdd_message_url=server_url,
                  apps={"pinduoduo": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}},
                  channel_lease_s=2.0, channel_renew_s=0.4, channel_heartbeat_s=0.5, channel_backoff_base_s=0.05,
                  channel_backoff_cap_s=0.2)
    values.update(overrides)
    return make_settings(database_url, **values)


@asynccontextmanager
async def pdd_shop(database_url: str, server: FakeMessageService, **overrides):
    """The service with its workers and channels running, a Pinduoduo store of mall ``MALL`` with its sku bound
    and 100 units received, PDD's gateway faked; yields (client, gateway, store id)."""
    gateway = PddOrders()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(PDD_GATEWAY).mock(side_effect=gateway)
        async with running_app(channel_settings(database_url, server.url, **overrides)) as application:
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://coopsync.test") as client:
                await create_sku(client, SKU)
                await receive(client, SKU, 100)
                store = await create_store(client, "pinduoduo", external_shop_id=MALL, credentials=PDD_CREDS,
                                           settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
                r = await client.put(f"/v1/stores/{store['id']}/listings", headers=ADMIN, json=[
                    {"external_sku_key": "1200000000001", "sku": SKU,
                     "listing_ref": {"goods_id": "388000000001", "sku_id": "1200000000001"}}])
                assert r.status_code == 200, r.text
                yield client, gateway, store["id"]


def _confirmed(order_sn: str) -> dict:
    return {"tid": order_sn, "mall_id": int(MALL)}


async def _orders(db, store_id: int) -> list[str]:
    async with db.read() as session:
        return list((await session.execute(select(Order.external_id).where(Order.store_id == store_id))).scalars())


async def _reserves(db) -> list[str]:
    async with db.read() as session:
        return list((await session.execute(select(StockMovement.cause_key)
                                           .where(StockMovement.kind == "reserve"))).scalars())


# --- Pinduoduo: messages become orders ------------------------------------------------------------


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()
    return predicate


def order_count_is(db, store_id: int, expected: int) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return len(await _orders(db, store_id)) == expected
    return predicate


async def test_messages_become_orders_within_a_second(db, database_url):
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server, \
            pdd_shop(database_url, server) as (client, gateway, store_id):
        assert await wait_until(holds(lambda: server.open == 1), timeout_s=10, interval_s=0.02)
        accepted_before = _metric("coopsync_channel_messages_total", outcome="accepted") or 0
        numbers = [f"240601-20000000000000{n}" for n in range(1, 4)]
        for sn in numbers:
            gateway.add(sn)
        started = time.monotonic()
        for sn in numbers:
            server.publish(MALL, "pdd_trade_TradeConfirmed", _confirmed(sn))
        assert await wait_until(order_count_is(db, store_id, 3), timeout_s=10, interval_s=0.02)
        took = time.monotonic() - started
        assert took < 1.0, f"messages took {took:.2f} s to become orders"
        assert await stock_of(client, SKU) == (100, 3)
        assert gateway.bad_signs == 0 and gateway.fetches == {sn: 1 for sn in numbers}
        assert await wait_until(holds(lambda: len(server.acked) == 3), timeout_s=5, interval_s=0.02)
        assert server.refused == 0 and len(server.connections) == 1
        assert _metric("coopsync_channel_connected") == 1
        assert _metric("coopsync_channel_messages_total", outcome="accepted") - accepted_before == 3


def _metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"channel": PDD_SPEC.name, **labels})


async def test_a_connection_dropped_mid_stream_loses_nothing_and_doubles_nothing(db, database_url):
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server:
        # The first connection drops once it sent 6 messages and heard 6 acks, of which the last three were
        # lost on the way (stored, not acknowledged); the second drops right after sending 5, with messages
        # in flight; the third stays up. PDD sends again whatever was not acknowledged.
        server.plan = [(6, True), (5, False)]
        async with pdd_shop(database_url, server) as (client, gateway, store_id):
            numbers = [f"240602-3000000000000{n:02d}" for n in range(1, 21)]
            for sn in numbers:
                gateway.add(sn)
            ids = [server.publish(MALL, "pdd_trade_TradeConfirmed", _confirmed(sn)) for sn in numbers]
            server.lost_acks = set(ids[3:6])
            assert await wait_until(holds(lambda: not server.pending), timeout_s=30, interval_s=0.05)
            assert await wait_until(order_count_is(db, store_id, 20), timeout_s=30, interval_s=0.05)
            assert len(server.connections) >= 3
            assert all(server.deliveries(i) >= 2 for i in ids[3:6])  # sent again after their acks were lost
            assert sorted(await _orders(db, store_id)) == sorted(numbers)
            assert len(await _reserves(db)) == 20
            assert await stock_of(client, SKU) == (100, 20)
            # One inbox row and one apply job per message, however often it came.
            assert await count_rows(db, InboxItem) == 20
            assert await count_rows(db, Job, Job.name == "inbox.apply") == 20


# --- one consumer per app across replicas -----------------------------------------------------------


class SpyCommitter:
    """The intake's group commit, failing the first ``failures`` writes (the database down), and noting
    which messages were committed, so an ack can be checked against it."""

    def __init__(self, inner: GroupCommitter, failures: int = 0) -> None:
        self.inner = inner
        self.failures = failures
        self.stored: set[str] = set()

    async def submit(self, row) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the database went away")
        outcome = await self.inner.submit(row)
        self.stored.add(row.dedupe_key.split(":")[1])  # the frame id (channel:frame id:digest)
        return outcome


def replica_settings(database_url: str, server_url: str = "ws://127.0.0.1:9", **overrides):
    values = dict(pdd_message_url=server_url, channel_lease_s=1.0, channel_renew_s=0.2, channel_heartbeat_s=0.5,
                  channel_backoff_base_s=0.05, channel_backoff_cap_s=0.2)
    values.update(overrides)
    return make_settings(database_url, **values)


@asynccontextmanager
async def replicas(db, settings, count: int = 2, *, spec: ChannelSpec = PDD_SPEC, failures: int = 0,
                   http: httpx.AsyncClient | None = None):
    """``count`` consumers of one app over one database, as ``count`` processes would run them."""
    committers = [GroupCommitter(db, window_ms=1.0) for _ in range(count)]
    spies = [SpyCommitter(c, failures) for c in committers]
    consumers = [ChannelConsumer(db, settings, spec, spy, holder=f"replica-{n}", http=http)  # type: ignore[arg-type]
                 for n, spy in enumerate(spies)]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        yield consumers, tasks, spies
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for committer in committers:
            await committer.stop()


async def stop_replica(consumer: ChannelConsumer, task: asyncio.Task, *, crash: bool) -> None:
    """Stop one replica; ``crash``: without giving the lease back, as a killed process would."""
    consumer.release_on_exit = not crash
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def lease_row(db, name: str = PDD_SPEC.name) -> ChannelLease | None:
    async with db.read() as session:
        return await session.get(ChannelLease, name)


async def pdd_store(client) -> int:
    store = await create_store(client, "pinduoduo", external_shop_id=MALL, credentials=PDD_CREDS,
                               settings={"base_url": PDD_GATEWAY, "poll_interval_s": 0})
    return store["id"]


async def test_of_two_replicas_one_consumes_and_the_other_takes_over_once_the_lease_ran_out(db, client, database_url):
    await pdd_store(client)
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server:
        settings = replica_settings(database_url, server.url)
        async with replicas(db, settings) as (consumers, tasks, _):
            assert await wait_until(holds(lambda: server.open == 1), timeout_s=10, interval_s=0.02)
            await asyncio.sleep(3 * settings.channel_lease_s)  # three leases long, the other replica only waits
            assert len(server.connections) == 1 and server.max_open == 1
            [holder] = [c for c in consumers if c.connected]
            [standby] = [c for c in consumers if c is not holder]
            row = await lease_row(db)
            assert row.holder == holder.holder and row.connected and row.heartbeat_at is not None
            first = server.publish(MALL, "pdd_trade_TradeConfirmed", _confirmed("240603-1"))
            assert await wait_until(holds(lambda: first in server.acked), timeout_s=10, interval_s=0.02)

            stopped = time.monotonic()
            await stop_replica(holder, tasks[consumers.index(holder)], crash=True)
            assert await wait_until(holds(lambda: len(server.connections) == 2), timeout_s=10, interval_s=0.02)
            took_over = time.monotonic() - stopped
            # The lease was renewed at most one renewal clock before the crash: the standby waited it out.
            assert took_over >= settings.channel_lease_s - 2 * settings.channel_renew_s, took_over
            assert standby.connected and server.max_open == 1
            assert (await lease_row(db)).holder == standby.holder
            second = server.publish(MALL, "pdd_trade_TradeConfirmed", _confirmed("240603-2"))
            assert await wait_until(holds(lambda: second in server.acked), timeout_s=10, interval_s=0.02)
            assert await count_rows(db, InboxItem) == 2


async def test_a_replica_that_stops_cleanly_hands_the_channel_over_at_once(db, client, database_url):
    await pdd_store(client)
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server:
        settings = replica_settings(database_url, server.url, channel_lease_s=5.0, channel_renew_s=0.2)
        async with replicas(db, settings) as (consumers, tasks, _):
            assert await wait_until(holds(lambda: server.open == 1), timeout_s=10, interval_s=0.02)
            [holder] = [c for c in consumers if c.connected]
            stopped = time.monotonic()
            await stop_replica(holder, tasks[consumers.index(holder)], crash=False)
            assert await wait_until(holds(lambda: len(server.connections) == 2 and server.open == 1),
                                    timeout_s=10, interval_s=0.02)
            assert time.monotonic() - stopped < settings.channel_lease_s - 1  # did not wait for the lease
            assert server.max_open == 1


async def test_a_replica_that_loses_its_lease_disconnects_and_stays_off(db, client, database_url):
    await pdd_store(client)
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server:
        settings = replica_settings(database_url, server.url)
        async with replicas(db, settings, count=1) as ([consumer], _, _):
            assert await wait_until(holds(lambda: server.open == 1), timeout_s=10, interval_s=0.02)
            # Another replica took the row (this one stalled past its lease, say).
            async with db.transaction() as session:
                await session.execute(update(ChannelLease).values(holder="replica-elsewhere",
                                                                  lease_until=utcnow() + timedelta(seconds=30)))
            assert await wait_until(holds(lambda: server.open == 0), timeout_s=2, interval_s=0.02)
            assert not consumer.connected and not consumer.holding
            await asyncio.sleep(5 * settings.channel_renew_s)
            assert len(server.connections) == 1  # it does not come back while the other holds the lease


async def test_nothing_is_acknowledged_before_it_is_stored(db, client, database_url):
    await pdd_store(client)
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server:
        settings = replica_settings(database_url, server.url)
        async with replicas(db, settings, count=1, failures=1) as (_, _, [spy]):
            early = []
            server.on_ack = lambda message_id: early.append(message_id) if str(message_id) not in spy.stored else None
            assert await wait_until(holds(lambda: server.open == 1), timeout_s=10, interval_s=0.02)
            message = server.publish(MALL, "pdd_trade_TradeConfirmed", _confirmed("240604-1"))
            assert await wait_until(holds(lambda: message in server.acked), timeout_s=10, interval_s=0.02)
        assert early == []
        # The first delivery's write failed: no ack on that connection; the message came again and was stored.
        assert server.connections[0].acks == [] and server.deliveries(message) == 2
        assert await count_rows(db, InboxItem) == 1


async def test_messages_of_unknown_shops_and_other_topics_are_acknowledged_without_a_row(db, client, database_url):
    await pdd_store(client)
    async with asyncio.timeout(TEST_TIMEOUT_S), FakeMessageService() as server:
        async with replicas(db, replica_settings(database_url, server.url), count=1):
            stray = server.publish("990099", "pdd_trade_TradeConfirmed", _confirmed("240605-1"))
            goods = server.publish(MALL, "pdd_goods_GoodsUpdate", {"goods_id": 388000000001})
            ours = server.publish(MALL, "pdd_refund_RefundCreated", {"tid": "240605-2", "refund_id": 9100000009})
            assert await wait_until(holds(lambda: not server.pending), timeout_s=10, interval_s=0.02)
        assert sorted(server.acked) == sorted([stray, goods, ours])
        async with db.read() as session:
            [row] = (await session.execute(select(InboxItem))).scalars()
        assert row.topic == "pdd_refund_RefundCreated" and row.dedupe_key.startswith(f"pdd-message-service:{ours}:")


def test_channels_are_off_unless_enabled_with_their_app(database_url):
    assert configured_channels(make_settings(database_url)) == []
    # Enabled, but the app is not set: nothing starts (a warning says what to set).
    assert configured_channels(make_settings(database_url, pdd_message_service=True, taobao_tmc=True)) == []
    both = configured_channels(make_settings(
        database_url, pdd_message_service=True, taobao_tmc=True,
        apps={"pinduoduo": {"client_id": "c", "client_secret": "s"}, "taobao": {"app_key": "k", "app_secret": "t"}}))
    assert [spec.name for spec in both] == ["pinduoduo:c", "taobao:k"]
    with pytest.raises(ValueError, match="channel_renew_s"):
        make_settings(database_url, channel_lease_s=5.0, channel_renew_s=5.0)


async def test_the_app_without_channels_starts_no_consumer(app):
    assert app.state.channels.consumers == []


async def test_an_http_delivery_cannot_pose_as_a_channel_message(client):
    store_id = await pdd_store(client)
    frame = json.dumps({"id": 1, "commandType": "Common", "message": {
        "type": "pdd_trade_TradeConfirmed", "mallID": int(MALL), "content": json.dumps({"tid": "x"})}})
    r = await client.post(f"/webhooks/pinduoduo/{store_id}", content=frame,
                          headers={"X-Coopsync-Channel": "pdd-message-service"})
    assert r.status_code == 404


# --- Taobao TMC ------------------------------------------------------------------------------------

TOP_GATEWAY = "https://top.test/router/rest"
TB_KEY, TB_SECRET = "12345678", "top-secret"
TB_USER = "2200000001"
TB_SPEC = ChannelSpec("taobao", TB_KEY, TB_SECRET)


class FakeTmc:
    """TOP's gateway: TMC's consume and confirm (what is not confirmed is handed out again) and the trade a
    message names; every call's sign is checked."""

    def __init__(self) -> None:
        self.trade = json.loads((FIXTURES / "taobao" / "trade-3300000000000001.json").read_text())
        self.unconfirmed: dict[str, dict] = {}
        self.confirmed: list[str] = []
        self.handed_out: list[str] = []
        self.on_confirm: Callable[[str], None] | None = None
        self.bad_signs = 0
        self._next = 9_000_000_000_000_000_001

    def publish(self, topic: str, content: dict, user_id: str = TB_USER) -> str:
        message_id = str(self._next)
        self._next += 1
        self.unconfirmed[message_id] = {"id": int(message_id), "topic": topic, "user_id": int(user_id),
                                        "user_nick": "秦巴茶叶", "pub_app_key": "12497914",
                                        "pub_time": "2024-06-10 20:16:31", "content": json.dumps(content)}
        return message_id

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if not signatures_equal(top_sign({k: v for k, v in params.items() if k != "sign"}, TB_SECRET,
                                         params["sign_method"]), params.get("sign")):
            self.bad_signs += 1
            return httpx.Response(200, json={"error_response": {"code": 25, "msg": "Invalid signature"}})
        method = params["method"]
        if method == "taobao.tmc.messages.consume":
            batch = list(self.unconfirmed.values())[:int(params["quantity"])]
            self.handed_out += [str(m["id"]) for m in batch]
            return httpx.Response(200, json={"tmc_messages_consume_response": {"messages": {"tmc_message": batch}}})
        if method == "taobao.tmc.messages.confirm":
            for message_id in params["s_message_ids"].split(","):
                if self.on_confirm is not None:
                    self.on_confirm(message_id)
                if self.unconfirmed.pop(message_id, None) is not None:
                    self.confirmed.append(message_id)
            return httpx.Response(200, json={"tmc_messages_confirm_response": {"is_success": True}})
        if method == "taobao.trade.fullinfo.get" and params["tid"] == self.trade["tid_str"]:
            return httpx.Response(200, json={"trade_fullinfo_get_response": {"trade": self.trade}})
        return httpx.Response(200, json={"error_response": {"code": 22, "msg": f"Invalid method {method}"}})


async def test_tmc_messages_become_orders_and_are_confirmed_only_once_stored(db, client, runner, database_url):
    store = await create_store(client, "taobao", external_shop_id=TB_USER, credentials={
        "app_key": TB_KEY, "app_secret": TB_SECRET, "session": "session-abc"},
        settings={"base_url": TOP_GATEWAY, "poll_interval_s": 0})
    tmc_fake = FakeTmc()
    settings = replica_settings(database_url, taobao_tmc_url=TOP_GATEWAY, taobao_tmc_idle_s=0.02)
    async with asyncio.timeout(TEST_TIMEOUT_S), httpx.AsyncClient() as http:
        with respx.mock(assert_all_mocked=True) as mock:
            mock.post(TOP_GATEWAY).mock(side_effect=tmc_fake)
            paid = tmc_fake.publish("taobao_trade_TradeBuyerPay", {"tid": 3300000000000001, "status": "WAIT_SELLER_SEND_GOODS"})
            rated = tmc_fake.publish("taobao_trade_TradeRated", {"tid": 3300000000000001})
            stray = tmc_fake.publish("taobao_trade_TradeBuyerPay", {"tid": 1}, user_id="2209999999")
            async with replicas(db, settings, count=1, spec=TB_SPEC, failures=1, http=http) as (_, _, [spy]):
                early = []
                tmc_fake.on_confirm = lambda message_id: early.append(message_id) if message_id not in spy.stored \
                    and message_id == paid else None
                assert await wait_until(holds(lambda: not tmc_fake.unconfirmed), timeout_s=10, interval_s=0.02)
            await runner.run_until_idle()
    assert early == [] and tmc_fake.bad_signs == 0
    # The first write failed: that message was not confirmed with the others, was handed out again, stored.
    assert tmc_fake.handed_out.count(paid) == 2 and sorted(tmc_fake.confirmed) == sorted([paid, rated, stray])
    assert await _orders(db, store["id"]) == ["3300000000000001"]
    async with db.read() as session:
        [row] = (await session.execute(select(InboxItem))).scalars()
    assert (row.status, row.topic, row.dedupe_key) == ("done", "taobao_trade_TradeBuyerPay", f"taobao-tmc:{paid}")
