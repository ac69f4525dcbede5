"""Packages and signing keys: upload (streamed, hashed, verified), list, read, delete.

An upload is checked before a byte reaches the store: the fields, the uniqueness of
(organization, kind, title, version), and the signature when the organization has keys.
Then the file is copied to the store in parts, hashed on the way (ota/store.py), and the
row is committed; if that fails (two uploads of one version racing) the parts are deleted.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.body_limit import BodyTooLarge, parse_form
from fleetcore.config import Settings
from fleetcore.devices.models import DeviceProfile
from fleetcore.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from fleetcore.media.store import MediaStore
from fleetcore.ota import chunk_cache, signing
from fleetcore.ota import store as parts
from fleetcore.ota.models import OtaKey, OtaPackage, OtaRollout, RolloutStatus
from fleetcore.ota.schemas import KeyIn, PackageMeta
from fleetcore.pagination import page_of, paginate

log = structlog.get_logger(__name__)

FILE_PART = "file"
MAX_FIELD_BYTES = 4096
FRAMING_BYTES = 64 * 1024  # boundaries and the small fields around the file
MIB = 1024 * 1024


# -- keys ------------------------------------------------------------------------------


async def add_key(session: AsyncSession, principal: Principal, data: KeyIn) -> OtaKey:
    """Register an Ed25519 public key (admins); from then on uploads must be signed."""
    principal.require(Role.ADMIN)
    raw = signing.parse_public_key(data.public_key)
    exists = await session.scalar(
        select(OtaKey.id).where(
            OtaKey.organization_id == principal.org_id, OtaKey.public_key == raw
        )
    )
    if exists is not None:
        raise Conflict("this key is registered already", code="OTA_KEY_EXISTS")
    key = OtaKey(organization_id=principal.org_id, name=data.name, public_key=raw)
    session.add(key)
    await session.flush()
    audit.record(
        session,
        action="ota.key.create",
        actor=principal,
        organization_id=principal.org_id,
        target_type="ota_key",
        target_id=key.id,
        details={"name": data.name},
    )
    await session.commit()
    return key


async def list_keys(session: AsyncSession, principal: Principal) -> list[OtaKey]:
    """The organization's keys (viewers)."""
    principal.require(Role.VIEWER)
    rows = await session.scalars(
        select(OtaKey).where(OtaKey.organization_id == principal.org_id).order_by(OtaKey.created_at)
    )
    return list(rows.all())


async def delete_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> None:
    """Remove a key (admins); packages it verified keep their signature."""
    principal.require(Role.ADMIN)
    key = await session.scalar(
        select(OtaKey).where(OtaKey.id == key_id, OtaKey.organization_id == principal.org_id)
    )
    if key is None:
        raise NotFound("key not found", code="OTA_KEY_NOT_FOUND")
    await session.delete(key)
    audit.record(
        session,
        action="ota.key.delete",
        actor=principal,
        organization_id=principal.org_id,
        target_type="ota_key",
        target_id=key_id,
    )
    await session.commit()


# -- upload ----------------------------------------------------------------------------


def _too_large(max_mb: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a package may be at most {max_mb} MiB (FLEETCORE_OTA_MAX_PACKAGE_MB)",
        code="OTA_PACKAGE_TOO_LARGE",
        details={"max_bytes": max_mb * MIB},
    )


async def read_upload(request: Request, max_mb: int) -> FormData:
    """The multipart body, parsed as it streams: 413 past `max_mb`, 422 if malformed."""
    # Checked here: starlette's parser reads the header unguarded (a KeyError, a 500).
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise Invalid(
            "send the package as multipart/form-data (fields title, version, kind, optional "
            "profile_id and signature, and one file part 'file')",
            code="MULTIPART_REQUIRED",
        )
    try:
        return await parse_form(
            request,
            max_mb * MIB + FRAMING_BYTES,
            max_files=1,
            max_fields=8,
            max_part_size=MAX_FIELD_BYTES,
        )
    except BodyTooLarge:
        raise _too_large(max_mb) from None
    except MultiPartException as exc:
        raise Invalid(
            f"the multipart body is not valid: {exc.message} (fields title, version, kind, "
            "optional profile_id and signature, and one file part 'file')",
            code="MULTIPART_INVALID",
        ) from None


def _fields(form: FormData) -> tuple[PackageMeta, UploadFile]:
    fields: dict[str, Any] = {}
    upload: UploadFile | None = None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != FILE_PART or upload is not None:
                raise Invalid(
                    "send the package as the one file part 'file'",
                    code="MULTIPART_INVALID",
                    details={"part": name[:64]},
                )
            upload = value
        elif value != "":
            fields[name] = value
    if upload is None:
        raise Invalid(
            "the file part 'file' is missing", code="FILE_REQUIRED", details={"field": "file"}
        )
    try:
        meta = PackageMeta.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise Invalid(
            f"{field}: {first['msg']}", code="VALIDATION_ERROR", details={"field": field}
        ) from None
    return meta, upload


async def _check_unique(session: AsyncSession, org_id: uuid.UUID, meta: PackageMeta) -> None:
    exists = await session.scalar(
        select(OtaPackage.id).where(
            OtaPackage.organization_id == org_id,
            OtaPackage.kind == meta.kind,
            OtaPackage.title == meta.title,
            OtaPackage.version == meta.version,
        )
    )
    if exists is not None:
        raise _duplicate(meta)


def _duplicate(meta: PackageMeta) -> Conflict:
    return Conflict(
        f"{meta.kind} {meta.title!r} version {meta.version!r} exists already",
        code="OTA_PACKAGE_EXISTS",
        details={"title": meta.title, "version": meta.version, "kind": meta.kind},
    )


async def _verify(
    session: AsyncSession, org_id: uuid.UUID, meta: PackageMeta, upload: UploadFile
) -> uuid.UUID | None:
    """The key that verifies the signature; None for an unsigned package without keys."""
    keys = (await session.scalars(select(OtaKey).where(OtaKey.organization_id == org_id))).all()
    if not keys:
        if meta.signature is not None:
            signing.decode_signature(meta.signature)  # well-formed at least
        return None
    if meta.signature is None:
        raise Invalid(
            "this organization signs its packages: send the Ed25519 signature of the file "
            "(base64) as the field 'signature'",
            code="OTA_SIGNATURE_REQUIRED",
            details={"field": "signature"},
        )
    signature = signing.decode_signature(meta.signature)
    # Ed25519 signs the whole message at once: the file is read whole, off the event loop.
    await upload.seek(0)
    data = await upload.read()
    for key in keys:
        if await asyncio.to_thread(signing.verifies, key.public_key, signature, data):
            return key.id
    raise Invalid(
        "the signature does not verify with any of the organization's keys (a changed file, "
        "or another key)",
        code="OTA_SIGNATURE_MISMATCH",
        details={"field": "signature"},
    )


async def upload_package(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    *,
    settings: Settings,
    store: MediaStore,
) -> OtaPackage:
    """Check, store and record an uploaded package (managers); audited."""
    principal.require(Role.MANAGER)
    form = await read_upload(request, settings.ota_max_package_mb)
    try:
        return await store_upload(form, session, principal, store=store)
    finally:
        await form.close()


async def store_upload(
    form: FormData, session: AsyncSession, principal: Principal, *, store: MediaStore
) -> OtaPackage:
    """Check, store and record the package of a parsed upload (managers); audited."""
    principal.require(Role.MANAGER)
    meta, upload = _fields(form)
    if meta.profile_id is not None:
        profile = await session.scalar(
            select(DeviceProfile.id).where(
                DeviceProfile.id == meta.profile_id,
                DeviceProfile.organization_id == principal.org_id,
            )
        )
        if profile is None:
            raise NotFound(
                "device profile not found",
                code="PROFILE_NOT_FOUND",
                details={"field": "profile_id"},
            )
    await _check_unique(session, principal.org_id, meta)
    key_id = await _verify(session, principal.org_id, meta, upload)
    await session.commit()  # end the read: the write below starts its own transaction
    package_id = uuid.uuid4()
    prefix = parts.package_prefix(principal.org_id, package_id)
    await upload.seek(0)
    written: list[str] = []
    try:
        size, sha256, written = await parts.write_parts(store, prefix, upload.file)
        package = OtaPackage(
            id=package_id,
            organization_id=principal.org_id,
            kind=meta.kind,
            title=meta.title,
            version=meta.version,
            profile_id=meta.profile_id,
            file_name=(upload.filename or "package.bin")[:255],
            size=size,
            sha256=sha256,
            signature="".join(meta.signature.split()) if meta.signature else None,
            key_id=key_id,
            storage_prefix=prefix,
            part_bytes=parts.PART_BYTES,
        )
        session.add(package)
        await session.flush()
        audit.record(
            session,
            action="ota.package.create",
            actor=principal,
            organization_id=principal.org_id,
            target_type="ota_package",
            target_id=package_id,
            details={
                "kind": meta.kind,
                "title": meta.title,
                "version": meta.version,
                "size": size,
                "sha256": sha256,
                "signed": key_id is not None,
            },
        )
        await session.commit()
    except IntegrityError:
        await session.rollback()
        await parts.delete_parts(store, written)
        raise _duplicate(meta) from None
    except BaseException:
        await session.rollback()
        await parts.delete_parts(store, written)
        raise
    return package


# -- reading and deleting --------------------------------------------------------------


async def get_package(
    session: AsyncSession, principal: Principal, package_id: uuid.UUID
) -> OtaPackage:
    """A package of the caller's organization (viewers)."""
    principal.require(Role.VIEWER)
    package = await session.scalar(
        select(OtaPackage).where(
            OtaPackage.id == package_id, OtaPackage.organization_id == principal.org_id
        )
    )
    if package is None:
        raise NotFound("package not found", code="OTA_PACKAGE_NOT_FOUND")
    return package


async def list_packages(
    session: AsyncSession,
    principal: Principal,
    *,
    kind: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[OtaPackage], str | None]:
    """The organization's packages, newest first (viewers)."""
    principal.require(Role.VIEWER)
    query = select(OtaPackage).where(OtaPackage.organization_id == principal.org_id)
    if kind is not None:
        query = query.where(OtaPackage.kind == kind)
    query = paginate(
        query,
        sort=OtaPackage.created_at,
        id_column=OtaPackage.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


async def delete_package(
    session: AsyncSession, principal: Principal, package_id: uuid.UUID, store: MediaStore
) -> None:
    """Delete a package and its bytes (managers); 409 while an open rollout uses it.

    The row goes first (its foreign key refuses while any rollout names it: a rollout
    created meanwhile makes the delete fail, never a rollout without its package), then the
    parts; a failure in between leaves parts no row names.
    """
    principal.require(Role.MANAGER)
    package = await get_package(session, principal, package_id)
    open_rollout = await session.scalar(
        select(OtaRollout.id)
        .where(OtaRollout.package_id == package.id, OtaRollout.status.in_(RolloutStatus.OPEN))
        .limit(1)
    )
    if open_rollout is not None:
        raise Conflict(
            "an active rollout uses this package: abort it first",
            code="OTA_PACKAGE_IN_USE",
            details={"rollout_id": str(open_rollout)},
        )
    # Finished rollouts keep their history; they go with the package.
    await session.execute(
        delete(OtaRollout).where(
            OtaRollout.package_id == package.id, OtaRollout.status.not_in(RolloutStatus.OPEN)
        ),
        execution_options={"synchronize_session": False},
    )
    keys = [
        parts.part_key(package.storage_prefix, index)
        for index in range(max(1, -(-package.size // package.part_bytes)))
    ]
    await session.execute(
        delete(OtaPackage).where(OtaPackage.id == package.id),
        execution_options={"synchronize_session": False},
    )
    audit.record(
        session,
        action="ota.package.delete",
        actor=principal,
        organization_id=principal.org_id,
        target_type="ota_package",
        target_id=package_id,
        details={"title": package.title, "version": package.version, "kind": package.kind},
    )
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            "a rollout uses this package", code="OTA_PACKAGE_IN_USE", details={}
        ) from None
    chunk_cache.assignments_changed()  # a device assigned it by hand: its chunks look again
    try:
        await parts.delete_parts(store, keys)
    except Exception:
        log.warning("ota_part_delete_failed", package_id=str(package_id), exc_info=True)
