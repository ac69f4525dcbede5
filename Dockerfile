# syntax=docker/dockerfile:1.7
# The Fleetcore server image: one image for every role (api, ingest, worker), see
# deploy/compose.yaml. Multi-stage: uv builds /app/.venv from the lock in a builder; the
# runtime stage gets the venv only, runs as an unprivileged user and writes nothing outside
# /data and /tmp (compose runs it with read_only: true and a tmpfs on /tmp).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer changes only with the lock.
COPY pyproject.toml uv.lock ./
COPY packages/server/pyproject.toml packages/server/pyproject.toml
COPY packages/protocol/pyproject.toml packages/protocol/pyproject.toml
COPY packages/agent/pyproject.toml packages/agent/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package fleetcore
# Then the server and the protocol package, installed (not linked) into the venv.
COPY packages packages
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package fleetcore

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 fleetcore \
    && useradd --system --uid 10001 --gid fleetcore --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin fleetcore \
    && mkdir /data && chown fleetcore:fleetcore /data
COPY --from=builder /app/.venv /app/.venv
# Bytecode was compiled in the builder: nothing is written next to the code at run time.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLEETCORE_DATA_DIR=/data \
    FLEETCORE_HOST=0.0.0.0 \
    FLEETCORE_PORT=8000 \
    FLEETCORE_LOG_FORMAT=json
USER fleetcore:fleetcore
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# /health answers in every role; no curl in the image, Python's urllib does it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FLEETCORE_PORT', '8000'), timeout=2)"]
# The role comes from FLEETCORE_ROLE or `--role` (compose's command); other commands:
# docker run --entrypoint fleetcore IMAGE db upgrade
ENTRYPOINT ["fleetcore", "serve"]
