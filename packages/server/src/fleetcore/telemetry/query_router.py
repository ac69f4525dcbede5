"""Telemetry read API for users: raw and aggregated readings, latest values, export, import."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.types import Message

from fleetcore.auth.deps import PrincipalDep, rate_limit_headers
from fleetcore.body_limit import body_limit
from fleetcore.deps import DatabaseDep, SessionDep
from fleetcore.errors import Invalid, PayloadTooLarge
from fleetcore.telemetry import chart, export, importing, queries
from fleetcore.telemetry.query_schemas import (
    Agg,
    Aggregates,
    Chart,
    DeviceLatest,
    ExportFormat,
    ImportAnswer,
    Interval,
    ManyLatest,
    Order,
    ReadingsPage,
    parse_ids,
    parse_keys,
)

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_RAW_PAGE = 100_000  # a day of 1-second readings of one key in one page
_MULTIPART_OVERHEAD = 16 * 1024

KeysQuery = Annotated[
    str | None, Query(max_length=8192, description="comma-separated keys (default: all)")
]
StartQuery = Annotated[
    str | None,
    Query(max_length=64, description="ISO 8601 or epoch ms, inclusive (default: 24 h before end)"),
]
EndQuery = Annotated[
    str | None, Query(max_length=64, description="ISO 8601 or epoch ms, exclusive (default: now)")
]

_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    # The form parser refuses more parts (max_fields=4, max_files=1): 400.
                    "maxProperties": 4,
                }
            }
        },
    }
}


@router.get(
    "/devices/{device_id:uuid}/telemetry",
    summary="Read a device's telemetry",
    response_model=ReadingsPage | Aggregates,
)
async def read_telemetry(
    request: Request,
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    keys: KeysQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RAW_PAGE, description="raw page size")] = 1000,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    order: Order = "asc",
    interval: Annotated[
        Interval | None, Query(description="aggregate numeric keys per interval")
    ] = None,
    agg: Annotated[Agg | None, Query(description="with interval; default avg")] = None,
) -> Response | Aggregates:
    """Raw readings in (ts, key) order a page at a time (a page holds up to a day of
    1-second readings); with `interval`, numeric keys aggregated from the roll-ups, every
    bucket of the range present (null when empty)."""
    names = parse_keys(keys)
    if interval is None:
        if agg is not None:
            raise Invalid(
                "agg needs an interval", code="AGG_WITHOUT_INTERVAL", details={"field": "agg"}
            )
        page = await queries.read_readings(
            session,
            principal,
            device_id=device_id,
            keys=names,
            start=start,
            end=end,
            limit=limit,
            cursor=cursor,
            descending=order == "desc",
        )
        return Response(  # a ReadingsPage, serialized once
            page.json(), media_type="application/json", headers=rate_limit_headers(request)
        )
    return await queries.read_aggregates(
        session,
        principal,
        device_id=device_id,
        keys=names,
        start=start,
        end=end,
        interval=interval,
        agg=agg or "avg",
    )


@router.get(
    "/devices/{device_id:uuid}/telemetry/chart", summary="A device's numeric keys for a chart"
)
async def read_chart(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    keys: KeysQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    width: Annotated[
        int, Query(ge=1, le=chart.MAX_WIDTH, description="the chart's width in pixels")
    ] = chart.DEFAULT_WIDTH,
) -> Chart:
    """Numeric keys downsampled to at most `width` buckets whatever the range (a round step,
    from raw readings under a minute, else the roll-ups), each with min, max and mean so a
    one-reading spike stays visible; buckets without data are left out."""
    return await chart.read_chart(
        session,
        principal,
        device_id=device_id,
        keys=parse_keys(keys),
        start=start,
        end=end,
        width=width,
    )


@router.get("/devices/{device_id:uuid}/telemetry/latest", summary="Latest values of a device")
async def device_latest(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> DeviceLatest:
    """The newest value of every key."""
    return await queries.latest_of_device(session, principal, device_id=device_id)


@router.get("/telemetry/latest", summary="Latest values of several devices")
async def many_latest(
    session: SessionDep,
    principal: PrincipalDep,
    device_ids: Annotated[
        str, Query(max_length=20_000, description="comma-separated device ids (at most 500)")
    ],
) -> ManyLatest:
    """Ids that are unknown or of another organization are simply absent."""
    ids = parse_ids(device_ids, limit=queries.MAX_DEVICE_IDS)
    return await queries.latest_of_devices(session, principal, device_ids=ids)


@router.get(
    "/devices/{device_id:uuid}/telemetry/export",
    summary="Export a device's telemetry as CSV or Parquet",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            }
        }
    },
)
async def export_telemetry(
    request: Request,
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    database: DatabaseDep,
    keys: KeysQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    fmt: Annotated[ExportFormat, Query(alias="format")] = "csv",
) -> StreamingResponse:
    """Streamed in (ts, key) order; CSV columns ts (ISO 8601 UTC), ts_ms, key, value. Parquet
    needs the `parquet` extra (pyarrow)."""
    plan = await export.prepare_export(
        session,
        principal,
        device_id=device_id,
        keys=parse_keys(keys),
        start=start,
        end=end,
        fmt=fmt,
    )
    return StreamingResponse(
        plan.body(database),
        media_type=plan.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{plan.filename}"',
            **(rate_limit_headers(request) or {}),
        },
    )


@asynccontextmanager
async def upload_file(request: Request, limit: int = MAX_UPLOAD_BYTES) -> AsyncIterator[BinaryIO]:
    """The multipart field `file`, spooled to disk as it arrives; 413 past `limit` bytes."""
    too_large = PayloadTooLarge(f"the file exceeds {limit} bytes", code="FILE_TOO_LARGE")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + _MULTIPART_OVERHEAD:
        raise too_large
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit + _MULTIPART_OVERHEAD:
            raise too_large
        return message

    async with Request(request.scope, receive).form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Invalid(
                "upload the CSV as the multipart/form-data file field 'file'",
                code="FILE_REQUIRED",
                details={"field": "file"},
            )
        if upload.size is not None and upload.size > limit:
            raise too_large
        yield upload.file


@router.post(
    "/devices/{device_id:uuid}/telemetry/import",
    summary="Import historical readings from CSV",
    openapi_extra=_CSV_BODY,
)
@body_limit(MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD)
async def import_telemetry(
    device_id: uuid.UUID, request: Request, session: SessionDep, principal: PrincipalDep
) -> ImportAnswer:
    """Managers. Columns ts,key,value[,kind]; at most 50 MiB. Stored like live data
    (de-duplicated, so importing a file twice stores it once); bad lines are listed."""
    return await importing.import_upload(
        session,
        principal,
        device_id=device_id,
        upload=lambda: upload_file(request),
        pipeline=request.app.state.pipeline,
    )
