# syntax=docker/dockerfile:1
# Build stage: install coopsync and its dependencies into a virtual environment.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY adapters ./adapters
RUN /opt/venv/bin/pip install .

# Runtime stage: the virtual environment, the migrations, a non-root user.
# COOPSYNC_SECRET_KEY (the Fernet keys that encrypt store credentials and webhook secrets) is given when
# the container starts, never baked into the image: `docker run -e COOPSYNC_SECRET_KEY=…` or the
# orchestrator's secret store. Without it the container refuses to start.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COOPSYNC_HOST=0.0.0.0 \
    COOPSYNC_PORT=8000 \
    COOPSYNC_LOG_FORMAT=json \
    COOPSYNC_DATABASE_URL=sqlite+aiosqlite:////data/coopsync.db
RUN groupadd --system --gid 10001 coopsync && useradd --system --uid 10001 --gid coopsync --home-dir /app coopsync \
    && mkdir -p /app /data && chown 10001:10001 /data
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini ./
COPY alembic ./alembic
COPY docker/entrypoint.sh /usr/local/bin/coopsync-entrypoint
USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COOPSYNC_PORT','8000'), timeout=2)"]
ENTRYPOINT ["coopsync-entrypoint"]
