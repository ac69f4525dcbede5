"""What a device is in dynamic security, and how each credential change is applied.

One client per device (username = the device id, password = its token) holding one role of
its own, `fleetcore-device-{id}`. Mosquitto 2.0.11's dynsec does not substitute `%u` or `%c`
in ACL topics (measured: a shared role on `devices/%u/#` refused the device's own publishes
and subscriptions), so a role shared by every device cannot confine each to its topics; the
role is per device. `subscribeLiteral` only matches the exact filter string, so subscriptions
use `subscribePattern` (a device's `devices/{id}/cmd` matches `devices/{id}/#`).

Every operation is idempotent: applying a row twice (a dispatcher that died before recording
it) or after an operator's change leaves the same state.
"""

from __future__ import annotations

import uuid

from fleetcore.broker_sync.dynsec import Acl, DynsecClient, DynsecError

ROLE_PREFIX = "fleetcore-device-"
# The textname of every client and role Fleetcore creates: `fleetcore mqtt sync` touches
# no client without it (an operator's own clients stay theirs).
TEXTNAME = "fleetcore device"


def role_name(device_id: uuid.UUID | str) -> str:
    """The device's own role."""
    return f"{ROLE_PREFIX}{device_id}"


def role_acls(device_id: uuid.UUID | str) -> list[Acl]:
    """Publish, subscribe and receive on the device's native and ThingsBoard topics (its
    OTA chunk topics too: the mount plugin keeps each client's v2/... to itself)."""
    topics = (f"devices/{device_id}/#", "v1/devices/me/#", "v2/fw/#", "v2/sw/#")
    return [
        Acl(acltype, topic)
        for topic in topics
        for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]


def is_ours(username: str, textname: str | None, roles: tuple[str, ...]) -> bool:
    """A client Fleetcore created: a UUID username with our marker or our role."""
    try:
        uuid.UUID(username)
    except ValueError:
        return False
    return textname == TEXTNAME or role_name(username) in roles


async def ensure_role(dynsec: DynsecClient, device_id: uuid.UUID | str) -> bool:
    """Create the device's role, or complete its ACLs; True if anything was missing."""
    name = role_name(device_id)
    wanted = role_acls(device_id)
    try:
        await dynsec.create_role(name, textname=TEXTNAME, acls=wanted)
        return True
    except DynsecError as error:
        if not error.exists:
            raise
    have = {(acl.acltype, acl.topic) for acl in await dynsec.get_role(name)}
    missing = [acl for acl in wanted if (acl.acltype, acl.topic) not in have]
    for acl in missing:
        await dynsec.add_role_acl(name, acl)
    return bool(missing)


async def upsert(dynsec: DynsecClient, device_id: uuid.UUID, token: str) -> None:
    """The device's client with this password, its role, enabled."""
    username = str(device_id)
    await ensure_role(dynsec, device_id)
    try:
        await dynsec.create_client(username, token, textname=TEXTNAME, roles=[role_name(device_id)])
        return
    except DynsecError as error:
        if not error.exists:
            raise
    await dynsec.set_client_password(username, token)
    client = await dynsec.get_client(username)
    if role_name(device_id) not in client.roles:
        # Only when missing: 2.0.11 answers a duplicate addClientRole with "Internal error".
        await dynsec.add_client_role(username, role_name(device_id))
    if client.disabled:
        await dynsec.enable_client(username)


async def set_enabled(dynsec: DynsecClient, device_id: uuid.UUID, enabled: bool) -> bool:
    """Enable or disable the client; False if it does not exist (it needs a token)."""
    try:
        if enabled:
            await dynsec.enable_client(str(device_id))
        else:
            await dynsec.disable_client(str(device_id))
    except DynsecError as error:
        if error.not_found:
            return False
        raise
    return True


async def delete(dynsec: DynsecClient, device_id: uuid.UUID | str) -> None:
    """Delete the client and its role (either may be gone already)."""
    for remove, name in (
        (dynsec.delete_client, str(device_id)),
        (dynsec.delete_role, role_name(device_id)),
    ):
        try:
            await remove(name)
        except DynsecError as error:
            if not error.not_found:
                raise
