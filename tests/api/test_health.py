"""Liveness, readiness, metrics, and the request id on answers and log lines."""

from __future__ import annotations

import logging

from sqlalchemy import text

from tests.helpers import ADMIN, create_sku


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_readyz_needs_migrations_at_head(client, app):
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    async with app.state.db.transaction() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        r = await client.get("/readyz")
        assert r.status_code == 503
    finally:
        from app.api.health import head_revision

        async with app.state.db.transaction() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()})


async def test_metrics_count_requests_by_route_and_status(client):
    await create_sku(client, "TEA-M")
    await client.get("/v1/stock/NOPE", headers=ADMIN)
    body = (await client.get("/metrics")).text
    assert 'coopsync_http_requests_total{method="POST",route="/v1/skus",status="201"}' in body
    assert 'route="/v1/stock/{sku}",status="404"' in body
    assert "coopsync_http_request_duration_seconds_bucket" in body


async def test_request_id_is_echoed_and_logged(client, caplog):
    from app.logging import JsonFormatter, _RequestIdFilter

    caplog.set_level(logging.INFO)
    r = await client.get("/v1/stock/NOPE", headers={**ADMIN, "X-Request-ID": "rid-123"})
    assert r.headers["x-request-id"] == "rid-123"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", (), None)
    from app.logging import request_id_var

    token = request_id_var.set("rid-xyz")
    try:
        _RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert '"request_id":"rid-xyz"' in JsonFormatter().format(record)
