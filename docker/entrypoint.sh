#!/bin/sh
# The secret key is required; migrations first, then the API (with its workers unless COOPSYNC_WORKERS=false).
set -eu
if [ -z "${COOPSYNC_SECRET_KEY:-}" ]; then
  echo "coopsync: COOPSYNC_SECRET_KEY is not set: store credentials and webhook secrets are encrypted with it;" \
       "pass one or more Fernet keys, newest first (docker run -e COOPSYNC_SECRET_KEY=...;" \
       "\`coopsync secrets generate-key\` prints a new one)" >&2
  exit 2
fi
alembic upgrade head
exec uvicorn app.main:app_factory --factory --host "${COOPSYNC_HOST}" --port "${COOPSYNC_PORT}" --no-access-log
