#!/bin/sh
# Migrations first, then the API (with its workers unless COOPSYNC_WORKERS=false).
set -eu
alembic upgrade head
exec uvicorn app.main:app_factory --factory --host "${COOPSYNC_HOST}" --port "${COOPSYNC_PORT}" --no-access-log
