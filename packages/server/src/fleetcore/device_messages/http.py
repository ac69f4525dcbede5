"""Device messages that arrive over HTTP: the routes decode the request, the layer does the
rest, with the same checks as MQTT and HTTP's own answers (counts, the error envelope).

HTTP answers the sender directly, so nothing becomes a dead letter here: a refusal is a 4xx
(over the organization's plan: 429 QUOTA_EXCEEDED with Retry-After, naming the limit). Every
device message counts toward the plan's messages per second, as over MQTT: telemetry,
attributes, events, command results and DEX uploads (`take_message`).
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.attributes import service as attributes
from fleetcore.attributes.schemas import ScopeOut
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.device_messages.ports import RecordedResult
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.devices.models import Device
from fleetcore.errors import Unavailable
from fleetcore.events import service as events
from fleetcore.plans.quota import IngestQuota
from fleetcore.telemetry.ingest import ingest
from fleetcore_protocol import messages as m


async def telemetry(
    layer: DeviceMessages, device: IngestDevice, message: m.Telemetry
) -> dict[str, Any]:
    """Readings stored (answered after the commit), with every refused one named. The
    route has noted the device's traffic already, as the request arrived."""
    quota = layer.quota
    if quota is None:
        return await ingest(
            layer.pipeline, device=device, payload=message.payload, transport="http"
        )
    await take_message(layer, device.organization_id)
    return await ingest(
        layer.pipeline,
        device=device,
        payload=message.payload,
        transport="http",
        admit=partial(_admit_readings, quota),
    )


async def take_message(layer: DeviceMessages, organization_id: uuid.UUID) -> None:
    """One device message against the organization's plan: 429 QUOTA_EXCEEDED when its
    messages per second are spent. No plan, or none setting it: one dict miss."""
    quota = layer.quota
    if quota is None or not quota.rated(organization_id):
        return
    if refused := await quota.take_message(organization_id):
        raise refused.error()


def _admit_readings(quota: IngestQuota, organization_id: uuid.UUID, count: int) -> None:
    """429 QUOTA_EXCEEDED unless `count` more readings fit in today's quota."""
    if refused := quota.check_readings(organization_id, count):
        raise refused.error()


async def command_result(
    layer: DeviceMessages,
    device: IngestDevice,
    *,
    command_id: uuid.UUID | None = None,
    rpc_id: int | None = None,
    succeeded: bool,
    result: Any = None,
    error: str | None = None,
) -> RecordedResult:
    """A device's answer to one of its commands, by id (native) or RPC id (ThingsBoard)."""
    if layer.http_results is None:
        raise Unavailable("commands are not served here", code="COMMANDS_UNAVAILABLE")
    await take_message(layer, device.organization_id)
    return await layer.http_results(
        device,
        command_id=command_id,
        rpc_id=rpc_id,
        succeeded=succeeded,
        result=result,
        error=error,
    )


async def device_events(
    layer: DeviceMessages, session: AsyncSession, device: Device, message: m.Event
) -> int:
    """Every event stored, or Invalid naming the bad one and none stored (as over MQTT)."""
    await take_message(layer, device.organization_id)
    return await events.ingest_payload(session, device, message.payload, layer.event_hooks)


async def client_attributes(
    layer: DeviceMessages, session: AsyncSession, device: Device, message: m.ClientAttributes
) -> ScopeOut:
    """The device's reported attributes merged into its client scope (as over MQTT)."""
    await take_message(layer, device.organization_id)
    return await attributes.report_client_attributes(session, device, values=message.values)
