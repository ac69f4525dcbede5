"""Committed telemetry to the live hub: one message per device and timestamp."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from fleetcore.live.hub import LiveEvent, LiveHub
from fleetcore.telemetry.pipeline import AfterCommit
from fleetcore.telemetry.writer import Stored


def telemetry_publisher(hub: LiveHub) -> AfterCommit:
    """An after-commit handler: {"type": "telemetry", "device_id", "ts", "values"}."""

    async def publish(stored: Sequence[Stored]) -> None:
        if not hub.listening("telemetry"):
            return  # (the writer builds Stored rows only when they are read)
        groups: dict[tuple[uuid.UUID, uuid.UUID, int], dict[str, Any]] = {}
        wanted: dict[uuid.UUID, bool] = {}
        for reading in stored:
            org = reading.organization_id
            if org not in wanted:
                wanted[org] = hub.wanted(org, "telemetry")
            if wanted[org]:
                groups.setdefault((org, reading.device_id, reading.ts), {})[reading.key] = (
                    reading.value
                )
        for (org, device_id, ts), values in groups.items():
            message = {"type": "telemetry", "device_id": str(device_id), "ts": ts, "values": values}
            hub.publish(LiveEvent(org, "telemetry", device_id, message))

    return publish
