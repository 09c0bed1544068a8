"""Group-committed webhook intake: batching, twins in one batch, failures answered 503 with nothing
stored, the SQLite writer turn, and the PostgreSQL connection coming back after it was cut."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from app.models import InboxItem, Job, Store
from app.models.base import utcnow
from app.services.intake import APPLICATION_NAME, PendingRow
from tests.helpers import count_rows
from tests.shops import stock_of



def _count_batches(app) -> list[int]:
    """Record the size of each batch the real writer is given."""
    writer = app.state.committer.writer
    sizes: list[int] = []
    real = writer.write

    async def counting(rows, now):
        sizes.append(len(rows))
        return await real(rows, now)

    writer.write = counting
    return sizes


async def test_concurrent_deliveries_are_committed_together_each_with_its_job(shop, app, client, db, runner):
    sizes = _count_batches(app)
    for _ in range(40):
        shop.market.sell("tea-250", 1)
    deliveries = shop.market.take_deliveries()
    before = utcnow()
    answers = await asyncio.gather(*(client.post(shop.url, content=d.body, headers=d.headers) for d in deliveries))
    assert [a.status_code for a in answers] == [200] * 40
    assert {a.json()["status"] for a in answers} == {"accepted"}
    assert sum(sizes) == 40 and len(sizes) < 40  # some shared a commit
    async with db.read() as session:
        items = (await session.execute(select(InboxItem))).scalars().all()
        jobs = (await session.execute(select(Job).where(Job.name == "inbox.apply"))).scalars().all()
        store = await session.get(Store, shop.store["id"])
    assert len(items) == 40
    assert sorted(j.payload["inbox_id"] for j in jobs) == sorted(i.id for i in items)
    assert all(j.status == "queued" and j.priority == 100 and j.max_attempts == 20 for j in jobs)
    # Times written by the driver read back through the ORM as aware UTC.
    assert all(before - timedelta(seconds=1) <= i.received_at <= utcnow() for i in items)
    assert all(j.run_after == j.created_at for j in jobs)
    assert store.last_webhook_at is not None and store.last_webhook_at >= before - timedelta(seconds=1)
    assert {bytes(i.body) for i in items} == {d.body for d in deliveries}
    await runner.run_until_idle()
    assert await stock_of(client) == (100, 40)


async def test_a_delivery_and_its_twins_in_one_batch_are_one_accepted_the_rest_duplicates(shop, app, db, runner,
                                                                                          client):
    sizes = _count_batches(app)
    shop.market.sell("tea-250", 2)
    [delivery] = shop.market.take_deliveries()
    rows = [PendingRow(store_id=shop.store["id"], platform="sandbox", dedupe_key="evt-twin", topic="order.created",
                       headers=dict(delivery.headers), body=delivery.body) for _ in range(3)]
    assert await app.state.committer.write(rows) == ["accepted", "duplicate", "duplicate"]
    assert sizes == [1]  # folded before the write
    # Concurrent requests for what is already stored: every one a duplicate, nothing more stored.
    answers = await asyncio.gather(*(client.post(shop.url, content=delivery.body, headers=delivery.headers)
                                     for _ in range(3)))
    assert sorted(a.json()["status"] for a in answers) == ["accepted", "duplicate", "duplicate"]
    assert await count_rows(db, InboxItem) == 2 and await count_rows(db, Job) == 2  # evt-twin and the platform's own id
    await runner.run_until_idle()
    assert await stock_of(client) == (100, 2)  # one order, however many copies


@pytest.fixture
async def failing_inbox(db):
    """A trigger that makes every insert into the inbox fail, as a full disk would."""
    async with db.transaction() as session:
        if db.is_sqlite:
            await session.execute(text("CREATE TRIGGER inbox_refuses BEFORE INSERT ON inbox "
                                       "BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
        else:
            await session.execute(text("CREATE FUNCTION inbox_refuses() RETURNS trigger LANGUAGE plpgsql AS "
                                       "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"))
            await session.execute(text("CREATE TRIGGER inbox_refuses BEFORE INSERT ON inbox "
                                       "FOR EACH ROW EXECUTE FUNCTION inbox_refuses()"))

    async def repair() -> None:
        async with db.transaction() as session:
            await session.execute(text("DROP TRIGGER IF EXISTS inbox_refuses" + ("" if db.is_sqlite else " ON inbox")))
            if not db.is_sqlite:
                await session.execute(text("DROP FUNCTION IF EXISTS inbox_refuses()"))

    yield repair
    await repair()


async def test_a_delivery_that_could_not_be_stored_is_503_leaves_nothing_and_is_taken_on_redelivery(
        shop, client, db, failing_inbox):
    shop.market.sell("tea-250", 1)
    [delivery] = shop.market.take_deliveries()
    r = await client.post(shop.url, content=delivery.body, headers=delivery.headers)
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == "5"
    assert await count_rows(db, InboxItem) == 0 and await count_rows(db, Job) == 0
    async with db.read() as session:
        assert (await session.get(Store, shop.store["id"])).last_webhook_at is None
    await failing_inbox()
    r = await client.post(shop.url, content=delivery.body, headers=delivery.headers)
    assert r.status_code == 200 and r.json() == {"status": "accepted"}
    assert await count_rows(db, InboxItem) == 1 and await count_rows(db, Job) == 1


async def test_on_sqlite_a_delivery_is_not_acknowledged_while_its_row_cannot_be_written(shop, app, client, db):
    if not db.is_sqlite:
        pytest.skip("the writer turn is SQLite's: PostgreSQL writes concurrently")
    shop.market.sell("tea-250", 1)
    [delivery] = shop.market.take_deliveries()
    async with app.state.db.transaction() as session:
        await session.execute(text("UPDATE store SET name = name"))  # holds SQLite's write lock
        post = asyncio.create_task(client.post(shop.url, content=delivery.body, headers=delivery.headers))
        await asyncio.sleep(0.3)
        assert not post.done()  # not acknowledged while its row cannot be written
    r = await asyncio.wait_for(post, 10)
    assert r.status_code == 200 and r.json() == {"status": "accepted"}
    assert await count_rows(db, InboxItem) == 1


async def test_on_postgresql_a_cut_intake_connection_is_replaced_without_a_lost_delivery(shop, client, db):
    if db.is_sqlite:
        pytest.skip("the intake holds a PostgreSQL connection of its own")
    shop.market.sell("tea-250", 1)
    shop.market.sell("tea-250", 1)
    first, second = shop.market.take_deliveries()
    assert (await client.post(shop.url, content=first.body, headers=first.headers)).status_code == 200
    async with db.transaction() as session:
        cut = (await session.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :name AND datname = current_database()"), {"name": APPLICATION_NAME})).scalar_one()
    assert cut == 1
    r = await client.post(shop.url, content=second.body, headers=second.headers)
    assert r.status_code == 200 and r.json() == {"status": "accepted"}, r.text
    assert await count_rows(db, InboxItem) == 2 and await count_rows(db, Job) == 2


async def test_an_unexpected_error_at_intake_is_a_500_problem_with_a_request_id(shop, client, monkeypatch):
    import app.api.webhooks as webhooks

    async def broken(state, store_id):
        raise RuntimeError("bug")

    monkeypatch.setattr(webhooks, "_store_entry", broken)
    r = await client.post(shop.url, content=b"{}", headers={"X-Request-ID": "req-intake-1"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["x-request-id"] == "req-intake-1"


async def test_an_in_memory_sqlite_database_is_refused_at_start_up():
    from app.main import create_app
    from tests.conftest import test_settings

    app = create_app(test_settings("sqlite+aiosqlite://"), configure_logs=False)
    with pytest.raises(ValueError, match="in-memory"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_row_that_cannot_be_stored_does_not_fail_its_batch_neighbours(shop, app, db):
    sizes = _count_batches(app)
    committer = app.state.committer

    def row(store_id: int, key: str) -> PendingRow:
        return PendingRow(store_id=store_id, platform="sandbox", dedupe_key=key, topic="order.created",
                          headers={}, body=b"{}")

    good_1, orphan, good_2 = row(shop.store["id"], "evt-1"), row(987654, "evt-orphan"), row(shop.store["id"], "evt-2")
    results = await asyncio.gather(*(committer.submit(r) for r in (good_1, orphan, good_2)), return_exceptions=True)
    assert results[0] == "accepted" and results[2] == "accepted"
    assert isinstance(results[1], Exception)  # no such store: that request alone answers 503
    assert sizes == [3, 1, 1, 1]
    async with db.read() as session:
        keys = sorted((await session.execute(select(InboxItem.dedupe_key))).scalars())
    assert keys == ["evt-1", "evt-2"]
    assert await count_rows(db, Job) == 2


async def test_a_request_waiting_on_its_commit_is_answered_when_the_service_stops(shop, app, db):
    committer = app.state.committer
    row = PendingRow(store_id=shop.store["id"], platform="sandbox", dedupe_key="evt-stop", topic=None,
                     headers={}, body=b"{}")
    async with app.state.db.transaction() as session:
        # Hold what the write needs: SQLite's write lock, or the store row the statement touches.
        await session.execute(text("UPDATE store SET name = name WHERE id = :id"), {"id": shop.store["id"]})
        waiting = asyncio.create_task(committer.submit(row))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await asyncio.wait_for(committer.stop(), 10)
        with pytest.raises(RuntimeError, match="stopped"):
            await asyncio.wait_for(waiting, 5)
    assert await count_rows(db, InboxItem) == 0


async def test_postgresql_url_options_for_the_engine_reach_the_intake_connection(database_url, db):
    if not database_url.startswith("postgresql"):
        pytest.skip("asyncpg connection options")
    from tests.conftest import running_app, test_settings
    from tests.helpers import ADMIN

    url = database_url + ("&" if "?" in database_url else "?") + "prepared_statement_cache_size=0&ssl=disable"
    async with running_app(test_settings(url)) as application:
        import httpx

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as client:
            r = await client.post("/v1/stores", headers=ADMIN, json={
                "platform": "sandbox", "name": "opts", "external_shop_id": "opts", "webhook_secret": "s",
                "settings": {"base_url": "inproc://opts"}})
            assert r.status_code == 201, r.text
            store_id = r.json()["id"]
        row = PendingRow(store_id=store_id, platform="sandbox", dedupe_key="evt-opts", topic=None, headers={},
                         body=b"{}")
        assert await application.state.committer.submit(row) == "accepted"
    assert application.state.committer.writer.connect_args["statement_cache_size"] == 0


async def test_a_client_gone_before_its_body_arrived_counts_as_499_not_as_a_server_error(shop, app):
    from app.metrics import HTTP_REQUESTS

    def count(status: str) -> float:
        return HTTP_REQUESTS.labels("POST", "/webhooks/{platform}/{store_id}", status)._value.get()

    before_499, before_500 = count("499"), count("500")
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": shop.url, "headers": [], "query_string": b"",
             "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": ""}
    await app(scope, receive, send)
    assert sent == []
    assert count("499") == before_499 + 1 and count("500") == before_500


async def test_when_the_database_is_unreachable_a_batch_fails_at_once_not_row_by_row(shop, app, db):
    sizes = _count_batches(app)
    writer = app.state.committer.writer
    await writer.close()  # the next write opens a new connection, to nowhere
    if db.is_sqlite:
        writer.path = "/nonexistent-dir/coopsync.db"
    else:
        writer.connect_args = {**writer.connect_args, "host": "127.0.0.1", "port": 1}
    rows = [PendingRow(store_id=shop.store["id"], platform="sandbox", dedupe_key=f"evt-{i}", topic=None, headers={},
                       body=b"{}") for i in range(3)]
    results = await asyncio.gather(*(app.state.committer.submit(r) for r in rows), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    assert sizes == [3]  # one attempt for the lot: each request answers 503 without waiting on the others
