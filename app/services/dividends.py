"""Deliver each statement to the dividend endpoint with an exactly-once *effect*: at-least-once POSTs
carrying one stable key (``Idempotency-Key`` = ``webhook-id`` = statement id) that the receiver dedupes.

Why at-least-once and not exactly-once: the POST and the database are two systems. A worker that
dies after the receiver accepted the statement but before it recorded the answer (the "crash after
publishing, before recording" window of the outbox pattern) cannot know what happened; the statement
is sent again with the same key and body, and the receiver, deduping by key, applies it once.

What we do guarantee on our side:
- the job is unique per statement while queued (dedupe key) and while running (lock key);
- before each POST an ``in_flight`` attempt is committed under a row lock on the statement, so a
  second worker (a re-run after a lease expired, an operator re-queue) sees it and waits instead of
  sending in parallel; an ``in_flight`` attempt older than the timeout plus a grace is a worker that
  died mid-POST: it is marked ``interrupted`` and the statement is sent again, same key;
- the HTTP call runs outside any transaction, bounded by ``dividend_timeout_s`` as a total deadline,
  and every attempt stays on record (status, duration, an excerpt of the answer, error kind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.http import parse_retry_after
from app.config import Settings
from app.domain.settlement import body_bytes
from app.domain.signing import sign
from app.jobs.catalogue import job
from app.jobs.outcomes import Dead, Done, JobContext, Outcome, Retry
from app.jobs.queue import backoff_s
from app.models import DeliveryAttempt, Settlement
from app.models.base import utcnow
from app.services.errors import Conflict, NotFound
from app.services.platforms import shared_http

log = logging.getLogger("coopsync.dividends")

IN_FLIGHT = "in_flight"  # committed before the POST; replaced by the outcome after it
INTERRUPTED = "interrupted"  # the worker died (or stalled) during the POST: the answer is unknown
IN_FLIGHT_GRACE_S = 2.0  # seconds beyond the POST deadline before an in-flight attempt counts as abandoned
EXCERPT_CHARS = 500
RETRY_AFTER_MAX_S = 86400.0  # a Retry-After beyond a day is taken as a day
NOT_CONFIGURED_WAIT_S = 300.0  # seconds between checks while no dividend URL/secret is configured
RETRYABLE = frozenset({408, 425, 429})
DEFAULT_JOB_MAX_ATTEMPTS = 32  # the delivery handler gives up (dead) on its own cap before this


class AlreadyDelivered(Conflict):
    """The statement was delivered already; nothing is to be sent."""


@dataclass(frozen=True)
class Verdict:
    outcome: str  # delivered, retry, dead
    error_kind: str | None = None
    retry_after_s: float | None = None


def classify(status_code: int | None, error_kind: str | None = None, retry_after: str | None = None) -> Verdict:
    """2xx and 409 (the receiver holds this key already) are delivered; network errors, 408, 425,
    429 and 5xx are retried; any other 4xx is dead. 1xx/3xx are failures worth retrying (a
    redirect is never followed: the signed body goes only where it was configured to go)."""
    if status_code is None:
        return Verdict("retry", error_kind or "network")
    if 200 <= status_code < 300 or status_code == 409:
        return Verdict("delivered")
    wait = parse_retry_after(retry_after)
    if status_code in RETRYABLE or status_code >= 500:
        return Verdict("retry", "throttled" if status_code == 429 else "http_status", wait)
    if 400 <= status_code < 500:
        return Verdict("dead", "rejected")
    return Verdict("retry", "http_status", wait)


def statement_headers(secret: str, settlement_id: str, payload: bytes, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": settlement_id,
        "webhook-id": settlement_id,  # stable across retries: the receiver's dedupe key
        "webhook-timestamp": str(timestamp),  # this attempt's time, for the receiver's replay window
        "webhook-signature": sign(secret, settlement_id, timestamp, payload),
    }


async def _lock_statement(session: AsyncSession, settlement_id: str) -> Settlement | None:
    return (await session.execute(
        select(Settlement).where(Settlement.id == settlement_id).with_for_update()
        .execution_options(populate_existing=True)
    )).scalar_one_or_none()


def delivery_key(payload: dict) -> str:
    """The job dedupe and lock key of a statement's delivery: one queued and one running per statement."""
    return f"dividend:{payload['settlement_id']}"


@job("dividend.deliver", max_attempts=DEFAULT_JOB_MAX_ATTEMPTS, dedupe=delivery_key, lock=delivery_key)
async def deliver(ctx: JobContext) -> Outcome:
    """The ``dividend.deliver`` handler: claim an attempt, POST outside any transaction, record."""
    settings = ctx.settings
    settlement_id = str(ctx.job.payload["settlement_id"])
    attempts_before = int(ctx.job.payload.get("attempts_before", 0))
    if not settings.dividend_url or settings.dividend_secret is None:
        return Retry(NOT_CONFIGURED_WAIT_S, "COOPSYNC_DIVIDEND_URL / COOPSYNC_DIVIDEND_SECRET not set", counts=False)
    deadline_s = settings.dividend_timeout_s

    # 1. Claim, under the statement's row lock: nobody else may be sending it right now.
    async with ctx.db.transaction() as session:
        statement = await _lock_statement(session, settlement_id)
        if statement is None:
            return Dead(f"no statement {settlement_id}")
        if statement.delivery_status == "delivered":
            return Done("delivered already")
        if statement.delivery_status == "dead":
            return Done("dead: an operator re-queues it")
        now = utcnow()
        last = (await session.execute(
            select(DeliveryAttempt).where(DeliveryAttempt.settlement_id == settlement_id)
            .order_by(DeliveryAttempt.attempt_no.desc()).limit(1)
        )).scalar_one_or_none()
        if last is not None and last.outcome == IN_FLIGHT:
            age = (now - last.started_at).total_seconds()
            abandon_after = deadline_s + IN_FLIGHT_GRACE_S
            if age < abandon_after:
                # Another worker is inside its POST: sending now would be a second, parallel POST.
                return Retry(abandon_after - age + 0.1, "another worker is sending this statement", counts=False)
            last.outcome = INTERRUPTED
            last.error_kind = "interrupted"
            last.response_excerpt = ("the worker stopped during the POST; the answer is unknown, so the "
                                     "statement is sent again with the same key")
        attempt_no = statement.delivery_attempts + 1
        statement.delivery_attempts = attempt_no
        attempt = DeliveryAttempt(settlement_id=settlement_id, attempt_no=attempt_no, started_at=now,
                                  outcome=IN_FLIGHT)
        session.add(attempt)
        await session.flush()
        attempt_id = attempt.id
        payload = body_bytes(statement.body)

    # 2. The POST, outside any transaction, with a total deadline (httpx's timeouts are per phase).
    client: httpx.AsyncClient = ctx.services.get("http") or shared_http()
    headers = statement_headers(settings.dividend_secret.get_secret_value(), settlement_id, payload, int(time.time()))
    status_code: int | None = None
    excerpt: str | None = None
    error_kind: str | None = None
    retry_after: str | None = None
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline_s):
            response = await client.post(settings.dividend_url, content=payload, headers=headers,
                                         timeout=deadline_s, follow_redirects=False)
        status_code = response.status_code
        excerpt = response.text[:EXCERPT_CHARS]
        retry_after = response.headers.get("Retry-After")
    except (TimeoutError, httpx.TimeoutException) as exc:
        error_kind, excerpt = "timeout", repr(exc)[:EXCERPT_CHARS]
    except httpx.HTTPError as exc:
        error_kind, excerpt = "network", repr(exc)[:EXCERPT_CHARS]
    except Exception as exc:  # noqa: BLE001 - whatever broke, the attempt is recorded and retried
        log.exception("dividend POST failed unexpectedly", extra={"settlement_id": settlement_id})
        error_kind, excerpt = "error", repr(exc)[:EXCERPT_CHARS]
    duration_ms = int((time.monotonic() - started) * 1000)
    verdict = classify(status_code, error_kind, retry_after)
    used = attempt_no - attempts_before
    if verdict.outcome == "retry" and used >= settings.dividend_max_attempts:
        verdict = Verdict("dead", verdict.error_kind or "http_status")

    # 3. Record, whatever happened.
    async with ctx.db.transaction() as session:
        statement = await _lock_statement(session, settlement_id)
        row = await session.get(DeliveryAttempt, attempt_id, with_for_update=True)
        row.duration_ms = duration_ms
        row.status_code = status_code
        row.outcome = verdict.outcome
        row.error_kind = verdict.error_kind
        row.response_excerpt = excerpt
        if verdict.outcome == "delivered" and statement.delivery_status != "delivered":
            statement.delivery_status = "delivered"
            statement.delivered_at = utcnow()
        elif verdict.outcome == "dead" and statement.delivery_status == "pending":
            statement.delivery_status = "dead"
    log.info("dividend delivery attempt", extra={"settlement_id": settlement_id, "attempt": attempt_no,
                                                 "status_code": status_code, "outcome": verdict.outcome,
                                                 "duration_ms": duration_ms})
    if verdict.outcome == "delivered":
        return Done(f"delivered (HTTP {status_code})")
    what = f"HTTP {status_code}" if status_code is not None else error_kind
    if verdict.outcome == "dead":
        return Dead(f"dividend endpoint answered {what}: {(excerpt or '')[:200]}")
    delay = backoff_s(used, base_s=settings.dividend_backoff_base_s, cap_s=settings.dividend_backoff_cap_s)
    if verdict.retry_after_s is not None:
        delay = max(delay, min(verdict.retry_after_s, RETRY_AFTER_MAX_S))  # never earlier than asked
    return Retry(delay, f"dividend endpoint answered {what}")


def job_max_attempts(settings: Settings | None) -> int:
    """The job runner's own cap stays above the delivery cap, so that the handler (which marks the
    statement dead) decides; the margin covers re-runs after crashes."""
    if settings is None:
        return DEFAULT_JOB_MAX_ATTEMPTS
    return max(DEFAULT_JOB_MAX_ATTEMPTS, settings.dividend_max_attempts + 10)


async def queue_delivery(session: AsyncSession, settlement_id: str, settings: Settings | None,
                         attempts_before: int = 0) -> None:
    """The outbox: the delivery job commits or rolls back with the caller's change to the statement."""
    await deliver.enqueue(session, {"settlement_id": settlement_id, "attempts_before": attempts_before},
                          max_attempts=job_max_attempts(settings))


async def requeue_delivery(session: AsyncSession, settlement_id: str, settings: Settings) -> Settlement:
    """Queue a delivery again with the same key (the statement id) and a fresh attempt budget.

    Raises ``NotFound`` for an unknown statement and ``AlreadyDelivered`` for a delivered one."""
    statement = await _lock_statement(session, settlement_id)
    if statement is None:
        raise NotFound(f"no statement {settlement_id}")
    if statement.delivery_status == "delivered":
        raise AlreadyDelivered(f"statement {settlement_id} was delivered already")
    statement.delivery_status = "pending"
    await queue_delivery(session, settlement_id, settings, statement.delivery_attempts)
    return statement
