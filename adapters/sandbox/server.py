"""The sandbox market over HTTP (a Starlette ASGI app) for other processes, and a webhook sender.

Routes: GET /orders, GET /orders/{id}, GET /refunds, GET /refunds/{id} (lists take updated_min,
updated_max, cursor, limit and answer {"items", "next_cursor"}), POST /stock, GET /stock,
POST /orders/{id}/shipments.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.errors import PayloadError
from adapters.sandbox.market import DEFAULT_PAGE_SIZE, Delivery, SandboxError, SandboxMarket
from adapters.units import from_iso

MAX_STOCK_BATCH = 500  # items per POST /stock


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"title": "sandbox error", "status": status, "detail": detail}, status_code=status,
                        media_type="application/problem+json")


def _time(request: Request, name: str) -> datetime:
    value = request.query_params.get(name)
    if not value:
        raise SandboxError(f"{name} is required")
    try:
        return from_iso(value)
    except PayloadError as exc:  # unreadable or without an offset: the caller's request is wrong
        raise SandboxError(f"{name}: {exc.message}") from exc


def create_app(market: SandboxMarket) -> Starlette:
    """An ASGI app serving ``market``."""

    def listing(page_of):
        async def endpoint(request: Request) -> JSONResponse:
            try:
                limit = int(request.query_params.get("limit", DEFAULT_PAGE_SIZE))
                items, next_cursor = page_of(_time(request, "updated_min"), _time(request, "updated_max"),
                                             request.query_params.get("cursor") or None, limit)
            except (SandboxError, ValueError) as exc:
                return _problem(400, str(exc))
            return JSONResponse({"items": items, "next_cursor": next_cursor})
        return endpoint

    def single(get):
        async def endpoint(request: Request) -> JSONResponse:
            row = get(request.path_params["id"])
            return JSONResponse(row) if row is not None else _problem(404, "not found")
        return endpoint

    async def post_stock(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
        except ValueError:
            return _problem(400, "body is not JSON")
        if not isinstance(payload, list) or len(payload) > MAX_STOCK_BATCH:
            return _problem(400, f"body must be a list of at most {MAX_STOCK_BATCH} {{sku_key, quantity}}")
        items: list[tuple] = []
        for entry in payload:
            quantity = entry.get("quantity") if isinstance(entry, dict) else None
            expected = entry.get("expected") if isinstance(entry, dict) else None
            if (not isinstance(entry, dict) or not isinstance(entry.get("sku_key"), str)
                    or not isinstance(quantity, int) or isinstance(quantity, bool)
                    or (expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)))):
                return _problem(400, "each item needs a string sku_key, an integer quantity and "
                                     "optionally an integer expected")
            items.append((entry["sku_key"], quantity, expected))
        errors = market.set_stock_batch(items)
        return JSONResponse({"results": [{"sku_key": item[0], "ok": error is None, "error": error}
                                         for item, error in zip(items, errors)]})

    async def get_stock(request: Request) -> JSONResponse:
        wanted = request.query_params.getlist("sku_key")
        levels = market.stock_levels()
        if wanted:
            levels = {key: levels[key] for key in wanted if key in levels}
        return JSONResponse({"items": [{"sku_key": key, "quantity": qty} for key, qty in levels.items()]})

    async def post_shipment(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
        except ValueError:
            return _problem(400, "body is not JSON")
        lines = payload.get("lines") if isinstance(payload, dict) else None
        if (not isinstance(payload, dict) or not isinstance(payload.get("tracking_number"), str)
                or not isinstance(payload.get("carrier"), str) or not isinstance(lines, dict)
                or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                           for k, v in lines.items())):
            return _problem(400, "body needs tracking_number, carrier and lines {line id: quantity}")
        try:
            order = market.upload_shipment(request.path_params["id"], payload["tracking_number"],
                                           payload["carrier"], lines)
        except SandboxError as exc:
            return _problem(409, str(exc))
        return JSONResponse(order)

    return Starlette(routes=[
        Route("/orders", listing(market.orders_page), methods=["GET"]),
        Route("/orders/{id}/shipments", post_shipment, methods=["POST"]),
        Route("/orders/{id}", single(market.get_order), methods=["GET"]),
        Route("/refunds", listing(market.refunds_page), methods=["GET"]),
        Route("/refunds/{id}", single(market.get_refund), methods=["GET"]),
        Route("/stock", post_stock, methods=["POST"]),
        Route("/stock", get_stock, methods=["GET"]),
    ])


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    statuses: dict[str, int]  # event id -> HTTP status (0 when the request itself failed)


async def deliver_pending(market: SandboxMarket, url: str, client: httpx.AsyncClient, *,
                          concurrency: int = 8) -> DeliveryReport:
    """POST every queued delivery to ``url``, up to ``concurrency`` at a time, so deliveries about one
    order may arrive out of order, as on real platforms. Non-2xx answers and network errors are put back
    in the queue (oldest first) so a later call retries them."""
    deliveries = market.take_deliveries()
    gate = asyncio.Semaphore(max(1, concurrency))
    statuses: dict[str, int] = {}

    async def post(delivery: Delivery) -> bool:
        async with gate:
            try:
                response = await client.post(url, content=delivery.body, headers=delivery.headers)
            except httpx.HTTPError:
                statuses[delivery.event_id] = 0
                return False
            statuses[delivery.event_id] = response.status_code
            return response.is_success

    outcomes = await asyncio.gather(*(post(d) for d in deliveries))
    failed = [d for d, ok in zip(deliveries, outcomes) if not ok]
    if failed:
        market.requeue(failed)
    return DeliveryReport(sent=len(deliveries) - len(failed), failed=len(failed), statuses=statuses)


class ServerThread:
    """Serve an ASGI app (a market, or a mount of several) on a free 127.0.0.1 port from a thread of
    this process, so that another process (the service under test) can reach it over HTTP."""

    def __init__(self, app) -> None:
        import socket
        import threading
        import time

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

