"""Pure ASGI middleware: request ids, metrics, and the request body size limit."""

from __future__ import annotations

import time
import uuid

from app.errors import problem_body
from app.logging import request_id_var
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS


class BodyTooLarge(Exception):
    """The body grew past the limit while it was being read (no Content-Length, or a lying one)."""


class RequestContextMiddleware:
    """Sets a request id (``X-Request-ID`` in and out), counts requests, and refuses bodies over
    ``max_body_bytes`` with 413 before the application reads them."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._children: dict[tuple, tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = (headers.get(b"x-request-id") or b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status_holder = {"status": 500}
        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._too_large(send, rid, status_holder)
                return
            received = 0
            limit = self.max_body_bytes

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge()
                return message

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status_holder["status"] = message["status"]
                    status_holder["started"] = True
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
                await send(message)

            try:
                await self.app(scope, limited_receive, send_with_id)
            except BodyTooLarge:
                await self._too_large(send, rid, status_holder)
        finally:
            route = scope.get("coopsync_route") or getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            if not status_holder.get("started"):
                status_holder["status"] = scope.get("coopsync_status", status_holder["status"])
            key = (scope["method"], route, status_holder["status"])
            children = self._children.get(key)
            if children is None:
                # Label lookups take a lock and build tuples: keep the children per (method, route, status).
                children = (HTTP_REQUESTS.labels(key[0], route, str(key[2])), HTTP_LATENCY.labels(key[0], route))
                self._children[key] = children
            children[0].inc()
            children[1].observe(elapsed)
            request_id_var.reset(token)

    async def _too_large(self, send, rid: str, status_holder: dict) -> None:
        status_holder["status"] = 413
        body = problem_body(413, f"the request body is larger than {self.max_body_bytes} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
