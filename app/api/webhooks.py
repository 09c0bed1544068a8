"""``POST /webhooks/{platform}/{store_id}``: verify on the raw bytes, store durably, acknowledge."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from adapters.errors import SignatureError
from app.errors import Problem
from app.metrics import WEBHOOK_SIGNATURE_FAILURES, WEBHOOKS
from app.models import Store
from app.sync.adapters import UnknownPlatform, make_adapter
from app.sync.intake import PendingRow, dedupe_key_for, kept_headers

log = logging.getLogger("coopsync.webhooks")
router = APIRouter(tags=["webhooks"])

STORE_CACHE_TTL_S = 5.0  # seconds a store's webhook settings are cached in this process


async def _store_entry(request: Request, store_id: int):
    cache: dict = request.app.state.store_cache
    entry = cache.get(store_id)
    now = time.monotonic()
    if entry is not None and entry[0] > now:
        return entry
    async with request.app.state.db.read() as session:
        store = await session.get(Store, store_id)
        if store is None:
            cache.pop(store_id, None)
            return None
        session.expunge(store)
    try:
        adapter = make_adapter(store)
    except UnknownPlatform:
        return None
    secrets = [s for s in (store.webhook_secret, store.webhook_secret_previous) if s]
    entry = (now + STORE_CACHE_TTL_S, store.platform, secrets, adapter)
    cache[store_id] = entry
    return entry


@router.post("/webhooks/{platform}/{store_id}")
async def receive_webhook(platform: str, store_id: int, request: Request) -> Response:
    entry = await _store_entry(request, store_id)
    if entry is None or entry[1] != platform:
        WEBHOOKS.labels(platform[:32], "unknown_store").inc()
        raise Problem(404, f"no {platform} store {store_id}")
    _, _, secrets, adapter = entry
    body = await request.body()
    headers = request.headers
    identity = adapter.webhook_identity(headers, body)
    if identity.is_ping:
        WEBHOOKS.labels(platform, "ping").inc()
        return JSONResponse({"status": "ping"})
    try:
        adapter.verify_webhook(headers, body, secrets)
    except SignatureError as exc:
        WEBHOOK_SIGNATURE_FAILURES.labels(platform).inc()
        WEBHOOKS.labels(platform, "bad_signature").inc()
        log.warning("webhook signature refused", extra={"store_id": store_id, "platform": platform})
        raise Problem(401, f"signature did not verify: {exc.message}") from None
    row = PendingRow(store_id=store_id, platform=platform, dedupe_key=dedupe_key_for(identity.dedupe_key, body),
                     topic=identity.topic, headers=kept_headers(headers), body=body)
    try:
        status = await request.app.state.committer.submit(row)
    except Exception:
        # Never acknowledge what is not stored: the platform will deliver it again.
        WEBHOOKS.labels(platform, "store_failed").inc()
        raise Problem(503, "the delivery could not be stored; please retry", headers={"Retry-After": "5"}) from None
    WEBHOOKS.labels(platform, status).inc()
    return JSONResponse(adapter.webhook_ack(status))
