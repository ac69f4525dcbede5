"""What the platform answers a device: attribute values, RPC replies, credentials, config."""

from __future__ import annotations

import uuid

from fleetcore.attributes import service as attributes
from fleetcore.attributes.schemas import AttributeScope
from fleetcore.db import Database
from fleetcore.device_messages.sessions import DeviceSession
from fleetcore.devices.provisioning import provision
from fleetcore.devices.schemas import ProvisionIn
from fleetcore.errors import DomainError
from fleetcore_protocol.messages import (
    AttributeReply,
    AttributeRequest,
    DesiredConfig,
    ProvisionReply,
    ProvisionRequest,
    RpcReply,
    RpcRequest,
)

MAX_INFLIGHT = 100  # what getSessionLimits announces


async def attribute_reply(
    database: Database, device_id: uuid.UUID, request: AttributeRequest
) -> AttributeReply:
    """ThingsBoard: the values of the scopes and keys asked for."""
    async with database.session() as session:
        client = shared = None
        if request.client:
            client = await attributes.device_values(
                session, device_id, AttributeScope.CLIENT, _keys(request.client_keys)
            )
        if request.shared:
            shared = await attributes.device_values(
                session, device_id, AttributeScope.SHARED, _keys(request.shared_keys)
            )
    return AttributeReply(request.request_id, client, shared)


def _keys(keys: frozenset[str] | None) -> set[str] | None:
    return None if keys is None else set(keys)


def rpc_reply(sender: DeviceSession, request: RpcRequest) -> tuple[RpcReply, bool]:
    """ThingsBoard client-side RPC: (the reply, whether the method is known)."""
    if request.method == "getSessionLimits":
        bucket = sender.bucket
        rate = f"{bucket.burst}:{max(1, round(bucket.burst / bucket.rate))}"
        limits = {
            "maxPayloadSize": sender.max_payload,
            "maxInflightMessages": MAX_INFLIGHT,
            "rateLimits": {"messages": rate, "telemetryMessages": rate, "telemetryDataPoints": ""},
        }
        return RpcReply(request.request_id, limits), True
    error = {"error": f"unknown method {request.method!r}"}
    return RpcReply(request.request_id, error), False


def provision_in(request: ProvisionRequest) -> ProvisionIn:
    """The provisioning service's input; raises ValueError when a field is unusable."""
    return ProvisionIn(
        provision_key=request.provision_key,
        provision_secret=request.provision_secret,
        serial_number=request.device_name,
        name=request.device_name or None,
    )


async def provision_reply(database: Database, data: ProvisionIn) -> ProvisionReply:
    """ThingsBoard device provisioning: the new device's access token, or why not."""
    try:
        async with database.session(write=True) as session:
            _, token, _ = await provision(session, data=data)
            await session.commit()
    except DomainError as exc:
        return ProvisionReply(error=exc.message)
    return ProvisionReply(token=token)


async def desired_config(database: Database, device_id: uuid.UUID) -> DesiredConfig:
    """The device's shared attributes and their version."""
    async with database.session() as session:
        desired = await attributes.desired_state(session, device_id)
    return DesiredConfig(desired["shared"], desired["shared_version"])
