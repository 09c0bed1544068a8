"""The FastAPI application: routers, error handlers, middleware, and the in-process workers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.routing import Match, Route

from app.api import oauth, orders, resyncs, settlements, stock, stores, tokens, webhooks
from app.api import aftersales
from app.api import shipments as shipments_api
from app.api import bills as bills_api
from app.api.health import router as health_router
from app.api.middleware import RequestContextMiddleware
from app.api.openapi import install_openapi
from app.config import Settings, get_settings
from app.console import install as install_console
from app.crypto import configure_keyring
from app.db import Database
from app.errors import Problem, allow_header, allowed_methods, install_error_handlers
from app.logging import configure_logging
from app.services import push
from app.services.platforms import close_shared_http, registry
from app.services.intake import GroupCommitter
from app.services.channels import Channels
from app.workers.flows import default_handlers
from app.workers.runner import Runner
from app.workers.schedule import Scheduler

log = logging.getLogger("coopsync")


class CoopsyncApp(FastAPI):
    """FastAPI, with webhook deliveries handed to ``WebhookFastPath`` before FastAPI's own layers:
    at a burst those layers cost more per request than storing the delivery does."""

    webhook_fast_path = None

    async def __call__(self, scope, receive, send):
        if self.webhook_fast_path is not None and webhooks.WebhookFastPath.matches(scope):
            return await self.webhook_fast_path(scope, receive, send)
        return await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> FastAPI:
    settings = settings or get_settings()
    # No start without the key that store credentials and webhook secrets are encrypted with:
    # SecretKeyMissing (or SecretKeyInvalid) says what to set.
    configure_keyring(settings.secret_key)
    if configure_logs:
        configure_logging(settings.log_format, settings.log_level)
    registry()  # a broken adapter stops start-up here, with a message naming it
    push.configure(settings.stock_push_debounce_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
        engine = app.state.db.engine
        app.state.committer = GroupCommitter(app.state.db, window_ms=settings.inbox_group_commit_ms)
        app.state.committer.start()
        app.state.runner = None
        app.state.scheduler = None
        if settings.workers:
            app.state.runner = Runner(app.state.db, settings, default_handlers())
            await app.state.runner.start()
            app.state.scheduler = Scheduler(app.state.db, settings)
            await app.state.scheduler.start()
        # Push channels run beside the workers (none unless configured); the lease picks one replica per app.
        app.state.channels = Channels(app.state.db, settings, committer=app.state.committer)
        if settings.workers:
            app.state.channels.start()
        from app.workers.gauges import refresh_gauges

        async def _refresh() -> None:
            await refresh_gauges(app.state.db)

        app.state.refresh_gauges = _refresh
        log.info("coopsync started", extra={"database": engine.url.render_as_string(hide_password=True),
                                            "workers": settings.workers})
        try:
            yield
        finally:
            await app.state.channels.stop()
            if app.state.scheduler is not None:
                await app.state.scheduler.stop()
            if app.state.runner is not None:
                await app.state.runner.stop()
            await app.state.committer.stop()
            await close_shared_http()
            await engine.dispose()

    app = CoopsyncApp(title="coopsync", version="0.1.0", lifespan=lifespan,
                  description="Store integration service of a producer cooperative.")
    app.state.settings = settings
    app.state.store_cache = {}
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(webhooks.router)
    app.include_router(stock.router)
    app.include_router(stores.router)
    app.include_router(orders.router)
    app.include_router(shipments_api.router)
    app.include_router(aftersales.router)
    app.include_router(resyncs.router)
    app.include_router(settlements.router)
    app.include_router(bills_api.router)
    app.include_router(tokens.router)
    app.include_router(oauth.router)
    install_console(app)  # /console: the operator's pages
    # Last: OPTIONS on any route answers the methods it serves (no token needed, as for CORS).
    app.router.routes.append(OptionsRoute("/{path:path}", answer_options, methods=["OPTIONS"],
                                          include_in_schema=False))
    install_openapi(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.webhook_fast_path = RequestContextMiddleware(webhooks.WebhookFastPath(app),
                                                     max_body_bytes=settings.max_body_bytes)
    return app


class OptionsRoute(Route):
    """Takes OPTIONS requests only: to any other method it is no route at all (not a 405)."""

    def matches(self, scope):
        if scope.get("method") != "OPTIONS":
            return Match.NONE, {}
        return super().matches(scope)


async def answer_options(request: Request) -> Response:
    methods = allowed_methods(request.app.router.routes, request.scope)
    if not methods:
        raise Problem(404, "no such route or resource")
    return Response(status_code=204, headers={"Allow": allow_header(methods)})


def app_factory() -> FastAPI:
    """``uvicorn app.main:app_factory --factory``."""
    return create_app()
