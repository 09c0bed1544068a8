"""Dividend delivery: Standard Webhooks signatures, retries and dead letters, and the exactly-once effect
(racing workers, a SIGKILL between the POST and its record, an endpoint down for an hour)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import respx
from sqlalchemy import select, update

from app.services.dividends import INTERRUPTED, deliver
from app.domain.signing import WebhookVerificationError, sign, verify
from app.domain.settlement import body_bytes
from app.services.dividends import deliver as DELIVER_SPEC
from app.services.settlement import handle_settlement as SETTLEMENT_SPEC

DELIVER_JOB = DELIVER_SPEC.name
SETTLEMENT_JOB = SETTLEMENT_SPEC.name
from app.models import DeliveryAttempt, Job, Settlement
from app.models.base import utcnow
from app.workers.flows import default_handlers
from app.jobs.outcomes import Done, JobContext, Retry
from app.workers.runner import Runner
from tests.conftest import ADMIN_TOKEN, test_settings as settings_for
from tests.domain.test_settlement import T0, deliver_order, make_sku, make_store, settle

ROOT = Path(__file__).resolve().parents[2]
URL = "http://dividends.test/statements"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- signing -----------------------------------------------------------------------------------------
VECTOR = dict(msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330, body=b'{"test": 2432232314}')
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(signature: str = VECTOR_SIGNATURE, timestamp: int = 1614265330) -> dict[str, str]:
    return {"webhook-id": VECTOR["msg_id"], "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_standard_webhooks_published_vector():
    assert sign(SECRET, **VECTOR) == VECTOR_SIGNATURE
    assert sign(SECRET.removeprefix("whsec_"), **VECTOR) == VECTOR_SIGNATURE  # with or without the prefix
    verify(SECRET, _headers(), VECTOR["body"], now=1614265330)
    verify(SECRET.removeprefix("whsec_"), _headers(), VECTOR["body"], now=1614265330)


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_a_missing_header(drop):
    headers = _headers()
    del headers[drop]
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, VECTOR["body"], now=1614265330)


def test_verify_rejects_bad_timestamps_and_bodies_and_accepts_one_good_signature_among_several():
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, _headers() | {"webhook-timestamp": "yesterday"}, VECTOR["body"], now=1614265330)
    with pytest.raises(WebhookVerificationError):  # tolerance + 1 s too old
        verify(SECRET, _headers(), VECTOR["body"], now=1614265330 + 301)
    with pytest.raises(WebhookVerificationError):  # tolerance + 1 s in the future
        verify(SECRET, _headers(), VECTOR["body"], now=1614265330 - 301)
    with pytest.raises(WebhookVerificationError):  # a re-serialised body is not the signed body
        verify(SECRET, _headers(), b'{"test":2432232314}', now=1614265330)
    noisy = f"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc {VECTOR_SIGNATURE} v1,bm90IGl0"
    verify(SECRET, _headers(noisy), VECTOR["body"], now=1614265330)
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", _headers(), VECTOR["body"], now=1614265330)


# -- helpers -------------------------------------------------------------------------------------------
async def one_statement(db, currency: str = "CNY", external_id: str = "D-1") -> Settlement:
    store = await make_store(db, return_window_days=0, name=f"shop-{external_id}")
    await make_sku(db, f"SKU-{external_id}", [("m-01", 5), ("m-02", 5)])
    await deliver_order(db, store, external_id, [(f"SKU-{external_id}", 4, 4000)], currency=currency)
    (statement,) = await settle(db, T0)
    return statement


async def make_due(db) -> int:
    """Bring every queued job's back-off to now (the test skips the wait, not the attempt)."""
    async with db.transaction() as session:
        result = await session.execute(update(Job).where(Job.status == "queued").values(run_after=utcnow()))
        return result.rowcount


async def drain(runner: Runner, db, rounds: int = 20) -> None:
    for _ in range(rounds):
        await runner.run_until_idle()
        async with db.read() as session:
            queued = (await session.execute(select(Job.id).where(Job.status == "queued"))).first()
        if queued is None:
            return
        await make_due(db)


async def attempts_of(db, settlement_id: str) -> list[DeliveryAttempt]:
    async with db.read() as session:
        return list((await session.execute(select(DeliveryAttempt).where(
            DeliveryAttempt.settlement_id == settlement_id).order_by(DeliveryAttempt.attempt_no))).scalars())


async def reload(db, settlement_id: str) -> Settlement:
    async with db.read() as session:
        return await session.get(Settlement, settlement_id)


async def job_of(db, settlement_id: str) -> Job:
    async with db.read() as session:
        return (await session.execute(select(Job).where(Job.dedupe_key == f"dividend:{settlement_id}")
                                      .order_by(Job.id.desc()).limit(1))).scalar_one()


def assert_signed(request: httpx.Request, statement: Settlement) -> None:
    assert request.headers["Idempotency-Key"] == statement.id == request.headers["webhook-id"]
    assert request.content == body_bytes(statement.body)
    verify(SECRET, dict(request.headers), request.content)


# -- outcomes ------------------------------------------------------------------------------------------
async def test_503_503_200_delivers_one_signed_statement_and_records_every_attempt(db, runner):
    statement = await one_statement(db)
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(side_effect=[httpx.Response(503, text="busy"), httpx.Response(503, text="busy"),
                                                 httpx.Response(200, json={"ok": True})])
        await drain(runner, db)
    assert route.call_count == 3
    for call in route.calls:
        assert_signed(call.request, statement)
    assert json.loads(route.calls[0].request.content) == statement.body
    attempts = await attempts_of(db, statement.id)
    assert [(a.attempt_no, a.status_code, a.outcome) for a in attempts] == [
        (1, 503, "retry"), (2, 503, "retry"), (3, 200, "delivered")]
    assert attempts[0].response_excerpt == "busy" and all(a.duration_ms >= 0 for a in attempts)
    after = await reload(db, statement.id)
    assert (after.delivery_status, after.delivery_attempts) == ("delivered", 3) and after.delivered_at is not None
    assert after.body == statement.body
    assert (await job_of(db, statement.id)).status == "done"


async def test_409_means_the_receiver_has_it_already(db, runner):
    statement = await one_statement(db)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(return_value=httpx.Response(409, json={"detail": "duplicate key"}))
        await drain(runner, db)
    assert (await reload(db, statement.id)).delivery_status == "delivered"


async def test_400_is_dead_and_the_retry_endpoint_requeues_with_the_same_key(db, runner, client):
    statement = await one_statement(db)
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(side_effect=[httpx.Response(400, json={"detail": "unknown member m-02"}),
                                                 httpx.Response(201, json={"ok": True})])
        await drain(runner, db)
        assert route.call_count == 1
        dead = await reload(db, statement.id)
        assert dead.delivery_status == "dead"
        assert (await job_of(db, statement.id)).status == "dead"
        r = await client.get("/v1/dividend-deliveries", params={"status": "dead"}, headers=ADMIN)
        assert [(i["id"], i["last_attempt"]["status_code"], i["last_attempt"]["outcome"]) for i in r.json()["items"]] == [
            (statement.id, 400, "dead")]

        r = await client.post(f"/v1/dividend-deliveries/{statement.id}/retry", headers=ADMIN)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending"
        await drain(runner, db)
        assert route.call_count == 2
        assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [statement.id, statement.id]
        assert route.calls[0].request.content == route.calls[1].request.content
        assert (await reload(db, statement.id)).delivery_status == "delivered"

        r = await client.post(f"/v1/dividend-deliveries/{statement.id}/retry", headers=ADMIN)
        assert r.status_code == 409
        r = await client.post("/v1/dividend-deliveries/no-such-statement/retry", headers=ADMIN)
        assert r.status_code == 404


async def test_retry_after_is_honoured(db, runner):
    statement = await one_statement(db)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
        before = utcnow()
        await runner.run_until_idle()
    job = await job_of(db, statement.id)
    assert job.status == "queued"
    assert job.run_after >= before + timedelta(seconds=119)  # back-off alone would be about a second
    (attempt,) = await attempts_of(db, statement.id)
    assert (attempt.status_code, attempt.outcome, attempt.error_kind) == (429, "retry", "throttled")


async def test_network_errors_and_timeouts_are_retried(db, runner):
    statement = await one_statement(db)
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(side_effect=[httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                                 httpx.Response(200)])
        await drain(runner, db)
    assert route.call_count == 3
    attempts = await attempts_of(db, statement.id)
    assert [(a.status_code, a.error_kind, a.outcome) for a in attempts] == [
        (None, "network", "retry"), (None, "timeout", "retry"), (200, None, "delivered")]
    assert (await reload(db, statement.id)).delivery_status == "delivered"


async def test_the_attempt_cap_puts_it_in_dead(db, app, database_url):
    settings = settings_for(database_url, dividend_max_attempts=3)
    runner = Runner(app.state.db, settings, default_handlers())
    statement = await one_statement(db)
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(502))
        await drain(runner, db)
    assert route.call_count == 3
    after = await reload(db, statement.id)
    assert (after.delivery_status, after.delivery_attempts) == ("dead", 3)
    assert [a.outcome for a in await attempts_of(db, statement.id)] == ["retry", "retry", "dead"]


# -- exactly-once effect -------------------------------------------------------------------------------
def _slow_receiver(posts: list[str]):
    """A receiver that records each POST's key and answers 200 after 0.3 s (racers overlap)."""

    async def receive(request: httpx.Request) -> httpx.Response:
        posts.append(request.headers["Idempotency-Key"])
        await asyncio.sleep(0.3)
        return httpx.Response(200)

    return receive


async def test_two_workers_racing_on_one_delivery_make_one_post(db, app, settings, engine_name):
    if engine_name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the race needs PostgreSQL")
    statement = await one_statement(db)
    posts: list[str] = []
    slow_receiver = _slow_receiver(posts)

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=slow_receiver)
        # Two runner processes (different worker ids) claim at once: the job goes to one of them.
        a = Runner(app.state.db, settings, default_handlers(), worker_id="worker-a")
        b = Runner(app.state.db, settings, default_handlers(), worker_id="worker-b")
        await asyncio.gather(a.run_one(), b.run_one(), a.run_one(), b.run_one())
        assert posts == [statement.id]
    assert (await reload(db, statement.id)).delivery_status == "delivered"


async def test_handlers_racing_past_the_job_lock_make_one_post(db, app, settings):
    # Harder than two runners: several handlers for one statement at once, past the job lock (as after
    # an operator re-queue while a lease expired). The in-flight attempt, committed under the
    # statement's row lock before the POST, lets exactly one of them send.
    statement = await one_statement(db)
    posts: list[str] = []
    slow_receiver = _slow_receiver(posts)

    job = await job_of(db, statement.id)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=slow_receiver)
        outcomes = await asyncio.gather(*[
            deliver(JobContext(db=app.state.db, settings=settings, job=job, worker_id=f"w{n}")) for n in range(4)])
    assert posts == [statement.id]
    assert sum(isinstance(o, Done) for o in outcomes) >= 1
    assert all(isinstance(o, Done) or (isinstance(o, Retry) and not o.counts) for o in outcomes)
    after = await reload(db, statement.id)
    assert (after.delivery_status, after.delivery_attempts) == ("delivered", 1)


class _Receiver:
    """A real HTTP endpoint on 127.0.0.1 that counts distinct Idempotency-Keys; the first request is
    held (never answered) until the test has killed the sender."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.first_seen = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if len(receiver.requests) == 1:
                    receiver.first_seen.set()
                    receiver.release.wait(30)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}')
                except OSError:
                    pass  # the sender is gone

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/statements"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def distinct_keys(self) -> set[str]:
        return {headers["idempotency-key"] for headers, _ in self.requests}


def _wait_for_post(receiver: _Receiver, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if receiver.first_seen.wait(0.05):
            return True
        if proc.poll() is not None:  # it ended without POSTing: no need to wait out the timeout
            return False
    return False


def _tail(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return "(still running)"
    return (proc.stderr.read() or b"").decode(errors="replace")[-3000:]


_DOOMED_WORKER = """
import asyncio, sys
from app.db import Database
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.workers.flows import default_handlers
from app.workers.runner import Runner

async def main():
    settings = Settings(database_url=sys.argv[1], dividend_url=sys.argv[2], dividend_secret=sys.argv[3],
                        job_lease_s=1.0, dividend_timeout_s=1.5, workers=False)
    engine = make_engine(settings.database_url, pool_size=2)
    runner = Runner(Database(engine, make_sessionmaker(engine)), settings, default_handlers(),
                    worker_id="doomed-worker", names=["dividend.deliver"])
    await runner.run_until_idle()

asyncio.run(main())
"""


async def test_sigkill_after_the_post_redelivers_with_the_same_key(db, database_url, engine_name):
    if engine_name != "postgresql":
        pytest.skip("the crash test runs a second process against the same database: PostgreSQL")
    statement = await one_statement(db)
    with _Receiver() as receiver:
        proc = subprocess.Popen([sys.executable, "-c", _DOOMED_WORKER, database_url, receiver.url, SECRET],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            seen = await asyncio.to_thread(_wait_for_post, receiver, proc, 30)
            assert seen, "the worker process never POSTed: " + _tail(proc)
            # The receiver has the statement; the sender has not recorded the answer: kill it now.
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL, _tail(proc)
        receiver.release.set()

        (attempt,) = await attempts_of(db, statement.id)
        assert attempt.outcome == "in_flight"  # the POST went out; its answer was never recorded
        assert (await reload(db, statement.id)).delivery_status == "pending"

        # A surviving worker, same settings: once the lease and the POST deadline ran out, it sends again.
        survivor_settings = settings_for(database_url, dividend_url=receiver.url, job_lease_s=1.0,
                                          dividend_timeout_s=1.5)
        survivor = Runner(db, survivor_settings, default_handlers(), worker_id="survivor")
        deadline = time.monotonic() + 20
        while (await reload(db, statement.id)).delivery_status != "delivered":
            assert time.monotonic() < deadline, "the statement was never redelivered"
            await survivor.run_until_idle()
            await asyncio.sleep(0.2)

    keys = [headers["idempotency-key"] for headers, _ in receiver.requests]
    assert keys == [statement.id, statement.id]
    assert receiver.distinct_keys == {statement.id}  # a receiver deduping by key applies it once
    assert receiver.requests[0][1] == receiver.requests[1][1] == body_bytes(statement.body)
    for headers, body in receiver.requests:
        verify(SECRET, headers, body)
    attempts = await attempts_of(db, statement.id)
    assert [(a.attempt_no, a.outcome) for a in attempts] == [(1, INTERRUPTED), (2, "delivered")]


async def test_endpoint_down_for_an_hour_loses_nothing_and_delivers_once(db, app, database_url):
    # Production back-off (5 s doubling to an hour, 12 attempts); simulated time is the sum of the
    # back-offs the worker chose, skipped by moving each job's run_after to now.
    settings = settings_for(database_url, dividend_backoff_base_s=5.0, dividend_backoff_cap_s=3600.0,
                             dividend_max_attempts=12)
    runner = Runner(app.state.db, settings, default_handlers())
    statement = await one_statement(db)
    clock = {"elapsed_s": 0.0}
    delivered: list[str] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        if clock["elapsed_s"] < 3600:
            raise httpx.ConnectError("connection refused: the dividend system is down")
        delivered.append(request.headers["Idempotency-Key"])
        return httpx.Response(200)

    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(side_effect=endpoint)
        for _ in range(30):
            await runner.run_until_idle()
            if (await reload(db, statement.id)).delivery_status != "pending":
                break
            job = await job_of(db, statement.id)
            assert job.status == "queued", job.last_error
            clock["elapsed_s"] += max(0.0, (job.run_after - utcnow()).total_seconds())
            await make_due(db)
    after = await reload(db, statement.id)
    assert clock["elapsed_s"] >= 3600
    assert after.delivery_status == "delivered"
    assert delivered == [statement.id]
    attempts = await attempts_of(db, statement.id)
    assert len(attempts) == route.call_count == after.delivery_attempts
    assert [a.outcome for a in attempts] == ["retry"] * (len(attempts) - 1) + ["delivered"]
    assert all(a.error_kind == "network" for a in attempts[:-1])


async def test_scheduled_settlement_job_settles_and_its_outbox_job_delivers(db, runner):
    from app.jobs.queue import insert_job as enqueue

    store = await make_store(db, return_window_days=0)
    await deliver_order(db, store, "SCH-1", [("NOT-BOUND", 1, 1234)])
    async with db.transaction() as session:
        await enqueue(session, SETTLEMENT_JOB, {"interval": 1}, dedupe_key=f"{SETTLEMENT_JOB}:1",
                      lock_key=SETTLEMENT_JOB)
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(204))
        await runner.run_until_idle()
    (request,) = [c.request for c in route.calls]
    async with db.read() as session:
        (statement,) = (await session.execute(select(Settlement))).scalars().all()
        jobs = {j.name: j.status for j in (await session.execute(select(Job))).scalars()}
    assert_signed(request, statement)
    assert statement.delivery_status == "delivered" and statement.net_minor == 1234
    assert jobs[SETTLEMENT_JOB] == "done" and jobs[DELIVER_JOB] == "done"
