"""DEX audits over HTTP: devices and handhelds upload, users read audits and sales.

Uploading by hand (a file pulled with a handheld) is OPERATOR work, as sending commands
is: reading a machine is an operational task, not configuration; a driver may upload for
the machines of their routes. Accepting or rejecting a held audit changes the books:
MANAGER. Drivers read the audits and sales of their machines (vending.scope).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.datastructures import UploadFile

from fleetcore.auth.deps import AnyPrincipalDep, PrincipalDep, rate_limit_headers
from fleetcore.body_limit import body_limit, read_body
from fleetcore.deps import SessionDep
from fleetcore.device_messages import http as device_http
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.devices.deps import MULTIPART_OVERHEAD, CurrentDevice
from fleetcore.errors import Invalid, PayloadTooLarge
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.vending import audits
from fleetcore.vending.audit_schemas import (
    AuditDetailOut,
    AuditOut,
    AuditOutcomeOut,
    DexUploadOut,
    SalesOut,
    SalesRowOut,
)
from fleetcore.vending.sales import SalesGroup, machine_sales

router = APIRouter(prefix="/api/v1", tags=["vending audits"])


def _series_pipeline(request: Request) -> IngestPipeline | None:
    """The pipeline for the audit's telemetry; none on an app bound to a test transaction
    (background writers stay out of it, as the rules engine and presence do)."""
    if not request.app.state.database.background_writes_allowed:
        return None
    pipeline: IngestPipeline = request.app.state.pipeline
    return pipeline


SeriesPipeline = Annotated[IngestPipeline | None, Depends(_series_pipeline)]


async def _dex_file(request: Request) -> bytes:
    """The multipart field `file`, at most MAX_DEX_BYTES (413 beyond)."""
    limit = audits.MAX_DEX_BYTES
    too_large = PayloadTooLarge(f"a DEX file is at most {limit} bytes", code="DEX_TOO_LARGE")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise too_large
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Invalid(
                "upload the DEX file as the multipart/form-data file field 'file'",
                code="FILE_REQUIRED",
                details={"field": "file"},
            )
        content = await upload.read(limit + 1)
    if len(content) > limit:
        raise too_large
    return content


def _answer(result: audits.IngestResult) -> DexUploadOut:
    return DexUploadOut(
        stored=result.stored,
        duplicates=result.duplicates,
        warnings=result.warnings,
        audits=[AuditOutcomeOut.model_validate(a) for a in result.audits],
    )


_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_FILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "maxProperties": 4,
                }
            }
        },
    }
}


@router.post(
    "/devices/me/dex",
    summary="Send a DEX/EVA-DTS audit file (device token; the file is the body)",
    openapi_extra=_RAW_BODY,
)
@body_limit(audits.MAX_DEX_BYTES)
async def post_device_dex(
    request: Request, session: SessionDep, device: CurrentDevice, pipeline: SeriesPipeline
) -> DexUploadOut:
    """Any content type; a file sent again is answered as duplicates, not stored twice."""
    # An upload is the device's traffic, as telemetry is: online, last seen (noted as it
    # arrives, through the device-message layer as over MQTT).
    layer: DeviceMessages = request.app.state.device_messages
    layer.note_traffic(IngestDevice(device.id, device.organization_id, profile=None))
    await device_http.take_message(layer, device.organization_id)  # the plan's rate
    raw = await read_body(request, audits.MAX_DEX_BYTES)
    result = await audits.ingest_dex(
        session,
        organization_id=device.organization_id,
        device_id=device.id,
        raw=raw,
        source="http",
        pipeline=pipeline,
    )
    return _answer(result)


@router.post(
    "/devices/{device_id:uuid}/dex",
    summary="Upload a DEX file pulled with a handheld (operator, or the machine's driver)",
    openapi_extra=_FILE_BODY,
)
@body_limit(audits.MAX_DEX_BYTES + MULTIPART_OVERHEAD)
async def post_handheld_dex(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPrincipalDep,
    pipeline: SeriesPipeline,
    raw: Annotated[bytes, Depends(_dex_file)],
) -> DexUploadOut:
    """multipart/form-data with the file in `file`; the device becomes a vending machine."""
    result = await audits.upload_dex(session, principal, device_id, raw, pipeline=pipeline)
    return _answer(result)


@router.get("/vending/machines/{device_id:uuid}/audits", summary="A machine's DEX audits")
async def list_machine_audits(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[AuditOut]:
    """Newest read first, with status and warnings."""
    rows, next_cursor = await audits.list_audits(
        session, principal, device_id, cursor=cursor, limit=limit
    )
    return Page(items=[AuditOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/vending/audits/{audit_id:int}", summary="A DEX audit: counters and warnings")
async def get_audit(
    audit_id: int, session: SessionDep, principal: AnyPrincipalDep
) -> AuditDetailOut:
    """The parsed counters and how the audit was accounted (summary.accounting)."""
    return AuditDetailOut.model_validate(await audits.get_audit(session, principal, audit_id))


@router.get(
    "/vending/audits/{audit_id:int}/raw",
    summary="The audit's file as received",
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        }
    },
)
async def get_audit_raw(
    request: Request, audit_id: int, session: SessionDep, principal: AnyPrincipalDep
) -> Response:
    """A download of the bytes received (the whole file, for every set of it)."""
    audit = await audits.get_audit(session, principal, audit_id)
    return Response(
        content=audit.raw,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="audit-{audit.id}.dex"',
            **(rate_limit_headers(request) or {}),
        },
    )


@router.post("/vending/audits/{audit_id:int}/accept", summary="Accept a damaged audit (manager)")
async def accept_audit(
    audit_id: int, session: SessionDep, principal: PrincipalDep, pipeline: SeriesPipeline
) -> AuditDetailOut:
    """The audit is accounted (in read-time order: see vending.ledger)."""
    audit = await audits.review_audit(session, principal, audit_id, accept=True, pipeline=pipeline)
    return AuditDetailOut.model_validate(audit)


@router.post(
    "/vending/audits/{audit_id:int}/reject", summary="Reject a damaged or foreign audit (manager)"
)
async def reject_audit(
    audit_id: int, session: SessionDep, principal: PrincipalDep, pipeline: SeriesPipeline
) -> AuditDetailOut:
    """The audit stays stored, never accounted."""
    audit = await audits.review_audit(session, principal, audit_id, accept=False, pipeline=pipeline)
    return AuditDetailOut.model_validate(audit)


@router.get("/vending/machines/{device_id:uuid}/sales", summary="A machine's sales")
async def get_machine_sales(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPrincipalDep,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    group: SalesGroup = SalesGroup.SLOT,
) -> SalesOut:
    """Units, revenue, cash / cashless, test and free vends per slot, product or UTC day,
    of the intervals whose closing read falls in [since, until)."""
    rows = await machine_sales(session, principal, device_id, since=since, until=until, group=group)
    return SalesOut(
        group=group.value,
        since=since,
        until=until,
        items=[SalesRowOut.model_validate(r) for r in rows],
    )
