"""DEX files over MQTT on the embedded broker: stored before the PUBACK, garbage dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore_protocol.dex.model import Counter
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write
from tests.support.devices import new_device, port_of
from tests.support.mqtt_raw import RawClient
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

T0 = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0, tzinfo=None)


def dex(hours: int, vends: int, slots: int = 1) -> bytes:
    """A one-audit file read `hours` after T0, `vends` paid vends in each of `slots` slots."""
    paid = Counter(value_init=Decimal("1.50") * vends, count_init=vends)
    selections = [Selection(f"A{n + 1}", Decimal("1.50"), paid=paid) for n in range(slots)]
    read_at = T0 + timedelta(hours=hours)
    return write(MachineAudit("SN-MQTT", selections=selections, read_at=read_at))


async def audits_of(http: httpx.AsyncClient, org: Tenant, device_id: str) -> list[Any]:
    """The machine's audits (404 while it is no vending machine yet: none)."""
    response = await http.get(
        f"/api/v1/vending/machines/{device_id}/audits", headers=org.headers(Role.VIEWER)
    )
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def dead_letters(http: httpx.AsyncClient, org: Tenant, device_id: str) -> list[Any]:
    """The device's dead letters."""
    response = await http.get(
        "/api/v1/dead-letters", headers=org.headers(), params={"device_id": device_id}
    )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_a_dex_file_on_either_topic_is_stored_before_the_puback(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "vm-1", username=token)
    await client.publish(f"devices/{device_id}/dex", dex(0, 10), qos=1)
    # No wait: the PUBACK says the audit is committed.
    assert [a["source"] for a in await audits_of(http, org, device_id)] == ["mqtt"]
    await client.publish("v1/devices/me/dex", dex(1, 14), qos=1)
    await client.publish("v1/devices/me/dex", dex(1, 14), qos=1)  # a resend: stored once
    audits = await audits_of(http, org, device_id)
    assert [(a["status"], a["accounted"]) for a in audits] == [("accepted", True)] * 2
    sales = await http.get(
        f"/api/v1/vending/machines/{device_id}/sales", headers=org.headers(Role.VIEWER)
    )
    assert [(r["key"], r["units"]) for r in sales.json()["items"]] == [("A1", 4)]
    latest = await http.get(f"/api/v1/devices/{device_id}/telemetry/latest", headers=org.headers())
    assert latest.json()["values"]["vend_units"]["value"] == 4


async def test_a_payload_that_is_not_dex_is_a_dead_letter(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "vm-2", username=token)
    await client.publish(f"devices/{device_id}/dex", b'{"temperature": 21}', qos=1)
    await client.publish(f"devices/{device_id}/dex", dex(0, 1), qos=0)  # the connection lives

    async def stored() -> bool:
        return len(await audits_of(http, org, device_id)) == 1

    await wait_until(stored)

    async def dead_lettered() -> bool:  # the sink writes in batches, a moment later
        return bool(await dead_letters(http, org, device_id))

    await wait_until(dead_lettered)
    letters = await dead_letters(http, org, device_id)
    assert [(d["reason"], d["topic"]) for d in letters] == [
        ("dex_invalid", f"devices/{device_id}/dex")
    ]


async def test_the_profile_payload_limit_applies(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    profile = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.ADMIN),
        json={"name": "small payloads", "max_payload_bytes": 256},
    )
    assert profile.status_code == 201, profile.text
    device_id, token = await new_device(http, org, profile_id=profile.json()["id"])
    client = await RawClient.connected(port_of(mqtt_app), "vm-3", username=token)
    raw = dex(0, 1, slots=20)
    assert len(raw) > 256
    await client.publish("v1/devices/me/dex", raw, qos=1)

    async def dead_lettered() -> bool:
        return bool(await dead_letters(http, org, device_id))

    await wait_until(dead_lettered)
    assert [d["reason"] for d in await dead_letters(http, org, device_id)] == ["oversize"]
    assert await audits_of(http, org, device_id) == []
