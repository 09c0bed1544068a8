"""Liveness, readiness (database reachable and migrated to head) and Prometheus metrics."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])

ROOT = Path(__file__).resolve().parents[2]


@lru_cache
def head_revision() -> str | None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    return ScriptDirectory.from_config(config).get_current_head()


@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


UNREADY = {"description": "the database is unreachable, or not migrated to head", "content": {"application/json": {
    "schema": {"type": "object", "required": ["status", "detail"],
               "properties": {"status": {"type": "string", "enum": ["unavailable"]}, "detail": {"type": "string"}}}}}}


@router.get("/readyz", responses={503: UNREADY})
async def readyz(request: Request):
    try:
        async with request.app.state.db.read() as session:
            current = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status_code=503)
    head = head_revision()
    if current != head:
        return JSONResponse({"status": "unavailable", "detail": f"migrations at {current}, head is {head}"},
                            status_code=503)
    return {"status": "ready", "migration": current}


@router.get("/metrics", response_class=PlainTextResponse,
            response_description="the Prometheus text exposition format")
async def metrics(request: Request):
    refresh = getattr(request.app.state, "refresh_gauges", None)
    if refresh is not None:
        await refresh()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
