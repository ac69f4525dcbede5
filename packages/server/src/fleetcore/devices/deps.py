"""Device-facing request dependencies: the device behind a token, and CSV uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from fleetcore.auth.security import token_hash
from fleetcore.db import utcnow
from fleetcore.deps import SessionDep
from fleetcore.devices.models import (
    CREDENTIALS_UNCHANGED,
    Device,
    DeviceCredential,
    DeviceStatus,
)
from fleetcore.errors import Invalid, PayloadTooLarge, Unauthorized

MAX_TOKEN_LENGTH = 256
MAX_CSV_BYTES = 1024 * 1024
# Multipart framing around the file: boundaries, part headers, a short file name.
MULTIPART_OVERHEAD = 16 * 1024

_token_header = APIKeyHeader(
    name="X-Device-Token",
    auto_error=False,
    scheme_name="DeviceToken",
    description="a device access token",
)
_token_bearer = HTTPBearer(
    auto_error=False, scheme_name="DeviceBearer", description="a device access token"
)


def _invalid() -> Unauthorized:
    return Unauthorized("the device token is not valid", code="INVALID_DEVICE_TOKEN")


async def authenticate_device(session: AsyncSession, token: str) -> Device:
    """The live, enabled device whose current token this is; the first use makes it active.

    Labels are not loaded (reading them raises): device-facing calls are the hot path.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise _invalid()
    device = await session.scalar(
        select(Device)
        .join(DeviceCredential, DeviceCredential.device_id == Device.id)
        .where(
            DeviceCredential.token_hash == token_hash(token),
            DeviceCredential.revoked_at.is_(None),
            Device.deleted_at.is_(None),
        )
        .options(raiseload(Device.label_rows))
    )
    if device is None or device.status == DeviceStatus.DISABLED:
        raise _invalid()
    if device.status == DeviceStatus.PROVISIONED:
        # Once in a device's life: a conditional UPDATE, so concurrent first calls agree.
        # End the read first: SQLite refuses (rather than waits) to upgrade a read
        # transaction to a write while another writer holds the lock.
        await session.commit()
        now = utcnow()
        await session.execute(
            update(Device)
            .where(Device.id == device.id, Device.status == DeviceStatus.PROVISIONED)
            .values(status=DeviceStatus.ACTIVE, last_seen_at=now)
            # Provisioned and active devices authenticate alike: nothing cached is stale.
            .execution_options(synchronize_session=False, **{CREDENTIALS_UNCHANGED: True})
        )
        await session.commit()
        device.status = DeviceStatus.ACTIVE
        device.last_seen_at = now
    return device


async def device_from_headers(
    session: SessionDep,
    header_token: Annotated[str | None, Depends(_token_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_token_bearer)],
) -> Device:
    """The device of X-Device-Token (or Authorization: Bearer); 401 otherwise."""
    token = header_token or (bearer.credentials if bearer is not None else None)
    if not token:
        raise Unauthorized(
            "send the device token as X-Device-Token or Authorization: Bearer",
            code="DEVICE_TOKEN_REQUIRED",
        )
    return await authenticate_device(session, token)


async def device_from_path(token: str, session: SessionDep) -> Device:
    """The device of the {token} path segment (ThingsBoard-style /api/v1/{token}/... routes)."""
    return await authenticate_device(session, token)


CurrentDevice = Annotated[Device, Depends(device_from_headers)]
PathTokenDevice = Annotated[Device, Depends(device_from_path)]


async def csv_upload(request: Request) -> bytes:
    """The bytes of the multipart field `file`, at most MAX_CSV_BYTES (413 beyond)."""
    too_large = PayloadTooLarge(f"the file exceeds {MAX_CSV_BYTES} bytes", code="FILE_TOO_LARGE")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_CSV_BYTES + MULTIPART_OVERHEAD:
        raise too_large
    try:
        form = await request.form(max_files=1, max_fields=4)
    except HTTPException as exc:  # the form parser's refusal: too many parts, a broken body
        raise Invalid(
            f"the multipart body cannot be used: {exc.detail}",
            code="MULTIPART_INVALID",
            details={"field": "file"},
        ) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Invalid(
                "upload the CSV as the multipart/form-data file field 'file'",
                code="FILE_REQUIRED",
                details={"field": "file"},
            )
        content = await upload.read(MAX_CSV_BYTES + 1)
    finally:
        await form.close()
    if len(content) > MAX_CSV_BYTES:
        raise too_large
    return content


CsvUpload = Annotated[bytes, Depends(csv_upload)]
