"""Compare the database's devices with the broker's dynsec clients, and fix what can be fixed.

Only clients Fleetcore created are ever changed: a UUID username with our textname marker or
our role (apply.is_ours); the client named by a live device's id is that device's. A device
without a client cannot get one here: its token is stored only as a hash, so it needs a token
rotation (which stages a fresh upsert). Devices with outbox rows still pending are left to
the dispatcher.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from fleetcore.broker_sync import apply
from fleetcore.broker_sync.dynsec import ClientInfo, DynsecClient, DynsecError
from fleetcore.broker_sync.models import BrokerCredentialOutbox
from fleetcore.db import Database
from fleetcore.devices.models import Device, DeviceStatus

_CHUNK = 100  # commands per control message


class Difference(StrEnum):
    """What is wrong with one device (or client)."""

    MISSING = "missing in the broker"
    SHOULD_BE_DISABLED = "enabled in the broker, disabled here"
    SHOULD_BE_ENABLED = "disabled in the broker, enabled here"
    ROLE_MISSING = "role missing or incomplete"
    STALE = "client of a deleted or unknown device"
    PENDING = "changes pending in the outbox"


@dataclass(slots=True)
class Finding:
    """One difference and what became of it."""

    username: str
    difference: Difference
    fixed: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Live:
    id: uuid.UUID
    disabled: bool


async def _live_devices(database: Database) -> dict[str, _Live]:
    async with database.session() as session:
        rows = await session.execute(
            select(Device.id, Device.status).where(Device.deleted_at.is_(None))
        )
        return {str(i): _Live(i, status == DeviceStatus.DISABLED) for i, status in rows}


async def _pending_devices(database: Database) -> set[str]:
    async with database.session() as session:
        ids = await session.scalars(
            select(BrokerCredentialOutbox.device_id)
            .where(BrokerCredentialOutbox.done_at.is_(None))
            .distinct()
        )
        return {str(i) for i in ids}


async def _clients(dynsec: DynsecClient, usernames: list[str]) -> dict[str, ClientInfo]:
    """getClient for every UUID-named client, in batches."""
    found: dict[str, ClientInfo] = {}
    for start in range(0, len(usernames), _CHUNK):
        chunk = usernames[start : start + _CHUNK]
        answers = await dynsec.execute([{"command": "getClient", "username": u} for u in chunk])
        for username, answer in zip(chunk, answers, strict=True):
            data: dict[str, Any] = (answer.get("data") or {}).get("client") or {}
            found[username] = ClientInfo(
                username=username,
                textname=data.get("textname"),
                disabled=bool(data.get("disabled", False)),
                roles=tuple(str(r["rolename"]) for r in data.get("roles") or []),
            )
    return found


async def _role_complete(dynsec: DynsecClient, device_id: str) -> bool:
    """True when the device's role exists with every ACL; False when incomplete or gone."""
    try:
        acls = await dynsec.get_role(apply.role_name(device_id))
    except DynsecError as error:
        if error.not_found:
            return False
        raise
    have = {(a.acltype, a.topic) for a in acls}
    return all((a.acltype, a.topic) in have for a in apply.role_acls(device_id))


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


async def reconcile(database: Database, dynsec: DynsecClient, *, fix: bool) -> list[Finding]:
    """Every difference between the devices and the broker; fixed where possible if `fix`."""
    live = await _live_devices(database)
    pending = await _pending_devices(database)
    names = [n for n in await dynsec.list_clients() if _is_uuid(n)]
    clients = await _clients(dynsec, names)
    findings: list[Finding] = []
    for username, device in sorted(live.items()):
        if username in pending:
            findings.append(Finding(username, Difference.PENDING, note="the dispatcher applies"))
            continue
        client = clients.get(username)
        if client is None:
            findings.append(Finding(username, Difference.MISSING, note="needs a token rotation"))
            continue
        if client.disabled != device.disabled:
            wanted = (
                Difference.SHOULD_BE_ENABLED if client.disabled else Difference.SHOULD_BE_DISABLED
            )
            finding = Finding(username, wanted)
            if fix:
                finding.fixed = await apply.set_enabled(dynsec, device.id, not device.disabled)
            findings.append(finding)
        role = apply.role_name(username)
        if role not in client.roles or not await _role_complete(dynsec, username):
            finding = Finding(username, Difference.ROLE_MISSING)
            if fix:
                await apply.ensure_role(dynsec, username)
                if role not in client.roles:
                    await dynsec.add_client_role(username, role)
                finding.fixed = True
            findings.append(finding)
    for username, client in sorted(clients.items()):
        if username in live or username in pending:
            continue
        if not apply.is_ours(username, client.textname, client.roles):
            continue
        finding = Finding(username, Difference.STALE)
        if fix:
            await apply.delete(dynsec, username)
            finding.fixed = True
        findings.append(finding)
    return findings
