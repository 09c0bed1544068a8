"""``Idempotency-Key`` for write routes, after the IETF httpapi idempotency-key draft.

Same key and body: the first answer again, nothing written. Same key, other body: 422.
Same key while the first request is still running: 409. The answer is stored in the same
transaction as the write it describes, so a crash can never leave one without the other.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Awaitable, Callable

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.errors import Problem
from app.models import IdempotencyRecord
from app.models.base import utcnow
from app.security import Principal

MAX_KEY_LENGTH = 255
IN_FLIGHT_STALE_AFTER = timedelta(seconds=120)  # a request that died mid-way frees its key after this

Work = Callable[[AsyncSession], Awaitable[tuple[int, dict]]]


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


async def run_idempotent(request: Request, db: Database, principal: Principal, work: Work) -> JSONResponse:
    key = request.headers.get("idempotency-key")
    if key is None:
        async with db.transaction() as session:
            status, body = await work(session)
        return JSONResponse(body, status_code=status)
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Problem(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    body_bytes = await request.body()
    fingerprint = request_fingerprint(request.method, request.url.path, body_bytes)

    replay = await _claim(db, principal.name, key, request, fingerprint)
    if replay is not None:
        return replay
    try:
        async with db.transaction() as session:
            status, body = await work(session)
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.principal == principal.name, IdempotencyRecord.key == key)
                .values(status="completed", response_status=status,
                        response_body=orjson.dumps(body).decode(), updated_at=utcnow())
            )
    except BaseException:
        # Nothing was written, so the key is free for a retry (as Stripe does for failed validation).
        async with db.transaction() as session:
            await session.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal.name, IdempotencyRecord.key == key,
                IdempotencyRecord.status == "in_flight"))
        raise
    return JSONResponse(body, status_code=status, headers={"Idempotency-Key": key})


async def _claim(db: Database, principal: str, key: str, request: Request, fingerprint: str) -> JSONResponse | None:
    """Insert an in-flight record, or answer from the one already there."""
    try:
        async with db.transaction() as session:
            session.add(IdempotencyRecord(principal=principal, key=key, method=request.method,
                                          path=request.url.path, request_hash=fingerprint, status="in_flight"))
        return None
    except IntegrityError:
        pass
    async with db.transaction() as session:
        record = (await session.execute(select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.key == key))).scalar_one_or_none()
        if record is None:  # freed between our insert and this read: try once more
            session.add(IdempotencyRecord(principal=principal, key=key, method=request.method,
                                          path=request.url.path, request_hash=fingerprint, status="in_flight"))
            return None
        if record.request_hash != fingerprint:
            raise Problem(422, "this Idempotency-Key was used with a different request",
                          type_="https://coopsync.dev/problems/idempotency-key-reused")
        if record.status == "completed":
            return JSONResponse(orjson.loads(record.response_body or "null"), status_code=record.response_status or 200,
                                headers={"Idempotency-Key": key, "Idempotent-Replayed": "true"})
        if utcnow() - record.updated_at < IN_FLIGHT_STALE_AFTER:
            raise Problem(409, "a request with this Idempotency-Key is still in flight",
                          type_="https://coopsync.dev/problems/idempotency-key-in-flight")
        # The first request died (crash) without writing anything: take the key over.
        record.updated_at = utcnow()
        return None
