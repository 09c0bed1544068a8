"""``POST /webhooks/{platform}/{store_id}``: verify on the raw bytes, store durably, acknowledge.

The route is served by ``WebhookFastPath``, a thin ASGI layer in front of FastAPI (a webhook burst
is the service's hottest path, and FastAPI's request machinery alone costs a third of what a bare
endpoint does per request here); the FastAPI route below shares ``accept`` and documents the
contract in the OpenAPI schema.
"""

from __future__ import annotations

import logging
import re
import time

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from adapters.base import Capability, WebhookIdentity
from adapters.errors import SignatureError
from app.errors import problem_body
from app.metrics import WEBHOOK_SIGNATURE_FAILURES, WEBHOOKS
from app.models import Store
from app.models.base import utcnow
from app.services.platforms import UnknownPlatform, adapter_class, make_adapter, registry
from app.services.intake import PendingRow, dedupe_key_for, kept_headers

log = logging.getLogger("coopsync.webhooks")
router = APIRouter(tags=["webhooks"])

STORE_CACHE_TTL_S = 5.0  # seconds a store's webhook settings are cached in this process
ROUTE = "/webhooks/{platform}/{store_id}"
_PATH = re.compile(r"^/webhooks/([a-z0-9_\-]{1,32})/([0-9]{1,18})/?$")
_PROBLEM_HEADERS = {"content-type": "application/problem+json"}
MAX_STORE_ID = 2**63 - 1  # ids are bigint: a larger one names no store (and would overflow the driver)


def _platform_label(platform: str) -> str:
    """Metric label: a known platform's name, else one shared label, so that random paths cannot
    grow the metric series without bound."""
    return platform if platform in registry() else "unknown"


def _receives_webhooks(platform: str) -> bool:
    try:
        return Capability.WEBHOOKS in adapter_class(platform).capabilities
    except UnknownPlatform:
        return False


def _identity(adapter, headers, body: bytes) -> WebhookIdentity:
    """The delivery's id and topic; a signed body the adapter cannot read (say, nested past the
    parser's depth) is still kept, under a hash of its bytes, to fail visibly when it is applied."""
    try:
        return adapter.webhook_identity(headers, body)
    except (ValueError, TypeError, KeyError, RecursionError):
        return WebhookIdentity(dedupe_key=None)


async def _store_entry(state, store_id: int):
    cache: dict = state.store_cache
    entry = cache.get(store_id)
    now = time.monotonic()
    if entry is not None and entry[0] > now:
        return entry
    async with state.db.read() as session:
        store = await session.get(Store, store_id)
        if store is None:
            cache.pop(store_id, None)
            return None
        session.expunge(store)
    try:
        adapter = make_adapter(store)
    except UnknownPlatform:
        return None
    entry = (now + STORE_CACHE_TTL_S, store.platform, store.webhook_secrets(utcnow()), adapter)
    cache[store_id] = entry
    return entry


async def accept(state, platform: str, store_id: int, headers, body: bytes) -> tuple[int, bytes, dict]:
    """(status, JSON body, headers) for one delivery. No outbound call is made here."""
    if not _receives_webhooks(platform):
        WEBHOOKS.labels(_platform_label(platform), "no_webhooks").inc()
        return 404, problem_body(404, f"{platform[:32]!r} has no webhooks here"), _PROBLEM_HEADERS
    entry = await _store_entry(state, store_id) if 0 < store_id <= MAX_STORE_ID else None
    if entry is None or entry[1] != platform:
        WEBHOOKS.labels(platform, "unknown_store").inc()
        return 404, problem_body(404, f"no {platform} store {store_id}"), _PROBLEM_HEADERS
    _, _, secrets, adapter = entry
    # Verify first, parse after: nothing reads an unauthenticated body but the ping check.
    try:
        adapter.verify_webhook(headers, body, secrets)
    except SignatureError as exc:
        if _identity(adapter, headers, body).is_ping:
            WEBHOOKS.labels(platform, "ping").inc()
            return 200, b'{"status":"ping"}', {}
        WEBHOOK_SIGNATURE_FAILURES.labels(platform).inc()
        WEBHOOKS.labels(platform, "bad_signature").inc()
        log.warning("webhook signature refused", extra={"store_id": store_id, "platform": platform})
        return 401, problem_body(401, f"signature did not verify: {exc.message}"), _PROBLEM_HEADERS
    identity = _identity(adapter, headers, body)
    if identity.is_ping:
        WEBHOOKS.labels(platform, "ping").inc()
        return 200, b'{"status":"ping"}', {}
    row = PendingRow(store_id=store_id, platform=platform, dedupe_key=dedupe_key_for(identity.dedupe_key, body),
                     topic=identity.topic[:128] if identity.topic else None, headers=kept_headers(headers), body=body)
    try:
        status = await state.committer.submit(row)
    except Exception:
        # Never acknowledge what is not stored: the platform will deliver it again.
        WEBHOOKS.labels(platform, "store_failed").inc()
        return 503, problem_body(503, "the delivery could not be stored; please retry"), \
            {**_PROBLEM_HEADERS, "retry-after": "5"}
    WEBHOOKS.labels(platform, status).inc()
    return 200, orjson.dumps(adapter.webhook_ack(status)), {}


@router.post(ROUTE)
async def receive_webhook(platform: str, store_id: int, request: Request) -> Response:
    status, body, headers = await accept(request.app.state, platform, store_id, request.headers,
                                         await request.body())
    if headers.get("content-type") == "application/problem+json":
        return Response(body, status_code=status, headers=headers)
    return JSONResponse(orjson.loads(body), status_code=status)


class WebhookFastPath:
    """Serves ``POST /webhooks/{platform}/{store_id}`` straight from ASGI, ahead of FastAPI's own
    request machinery (``CoopsyncApp`` sends deliveries here). Wrapped in the request-context
    middleware by the app, as every other route is (request id, metrics, size limit)."""

    def __init__(self, fastapi_app) -> None:
        self.fastapi_app = fastapi_app

    @staticmethod
    def matches(scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "POST" and _PATH.match(scope["path"]) is not None

    async def __call__(self, scope, receive, send):
        match = _PATH.match(scope["path"])
        scope["coopsync_route"] = ROUTE
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope["coopsync_status"] = 499  # the client went away before sending its body: no answer
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            status, body, extra = await accept(self.fastapi_app.state, match.group(1), int(match.group(2)), headers,
                                              b"".join(chunks))
        except Exception:
            log.exception("webhook intake failed")
            status, body, extra = 500, problem_body(500, "internal error"), _PROBLEM_HEADERS
        response_headers = [(b"content-type", extra.get("content-type", "application/json").encode()),
                            (b"content-length", str(len(body)).encode())]
        response_headers += [(k.encode(), v.encode()) for k, v in extra.items() if k != "content-type"]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
