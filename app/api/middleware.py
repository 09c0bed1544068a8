"""Pure ASGI middleware: request ids, metrics, the request body size limit, and the one answer
(and one log line) for an unexpected error."""

from __future__ import annotations

import logging
import time
import uuid

from app.errors import problem_body
from app.logging import request_id_var
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = logging.getLogger("coopsync.errors")


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

            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                # A chunked body is read whole first: past the limit it is a 413 here, not a 400
                # from whichever parser inside happened to be reading it.
                try:
                    limited_receive = await self._buffered(limited_receive)
                except BodyTooLarge:
                    await self._too_large(send, rid, status_holder)
                    return
            try:
                await self.app(scope, limited_receive, send_with_id)
            except BodyTooLarge:
                await self._too_large(send, rid, status_holder)
            except Exception:
                # Answered and logged here, once: left to propagate, the server would log it again
                # and drop the client's keep-alive connection.
                log.exception("unhandled error", extra={"path": scope.get("path")})
                if not status_holder.get("started"):
                    await self._unexpected(send, rid, status_holder)
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

    @staticmethod
    async def _buffered(receive):
        """Read the whole body now (``receive`` enforces the limit) and hand it on in one message."""
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive if not chunks else _replay(b"".join(chunks), receive)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        return _replay(b"".join(chunks), receive)

    async def _unexpected(self, send, rid: str, status_holder: dict) -> None:
        status_holder["status"] = 500
        body = problem_body(500, "an unexpected error occurred; it was logged")
        await send({"type": "http.response.start", "status": 500, "headers": [
            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _too_large(self, send, rid: str, status_holder: dict) -> None:
        status_holder["status"] = 413
        body = problem_body(413, f"the request body is larger than {self.max_body_bytes} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay
