"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fleetcore import __version__
from fleetcore.metrics import exposition
from fleetcore.ops.metrics_access import require_metrics_access
from fleetcore.ops.readiness import DEGRADED, WARN_PREFIX, passing, run_checks
from fleetcore.web.errors import ErrorEnvelope, error_response

router = APIRouter(tags=["ops"])


class HealthOut(BaseModel):
    """Liveness: the process answers."""

    status: str = Field(examples=["ok"])
    version: str


class ReadyOut(BaseModel):
    """Every check's result: ok, degraded, or "warn: ..." (still ready)."""

    status: str = Field(description="ready, degraded or warn", examples=["ready"])
    checks: dict[str, str] = Field(examples=[{"database": "ok", "disk.data": "warn: 7.5% free"}])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> HealthOut:
    """Alive; says nothing about dependencies (no database or disk work: probes are cheap)."""
    return HealthOut(status="ok", version=__version__)


@router.get(
    "/ready",
    summary="Readiness: database reachable, schema current, broker up, disk space",
    response_model=ReadyOut,
    responses={503: {"model": ErrorEnvelope, "description": "a check failed (details.checks)"}},
)
async def ready(request: Request) -> JSONResponse:
    """200 when every check passes, else 503 naming each failing check. A "degraded" check
    (Redis unreachable) keeps the process in rotation: 200, status "degraded"; so does a
    warning (a disk under 10% free): 200, status "warn", the check saying how much is free."""
    results = await run_checks(request.app.state.readiness_checks)
    failing = sorted(name for name, result in results.items() if not passing(result))
    if failing:
        return error_response(
            503,
            "NOT_READY",
            "not ready: " + ", ".join(f"{name} ({results[name]})" for name in failing),
            {"checks": results},
        )
    status = "ready"
    if DEGRADED in results.values():
        status = "degraded"
    elif any(result.startswith(WARN_PREFIX) for result in results.values()):
        status = "warn"
    return JSONResponse({"status": status, "checks": results})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_access)],
    responses={
        401: {"description": "FLEETCORE_METRICS_TOKEN is set and not given"},
        403: {"description": "production, no token set, not a loopback client"},
    },
)
async def metrics() -> Response:
    """Request counts and latencies by route template, process metrics, and more; with
    FLEETCORE_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
