"""What the route sweeps share: one object of every kind, and minimal valid requests.

The sweeps (tenant isolation, OWASP, API properties) walk the OpenAPI schema; a route whose
path parameter has no object here fails them until `create_objects` makes one.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import func, select

from fleetcore.alerts.models import Alert
from fleetcore.analytics.models import AnalyticsFinding, DeviceHealth, Recommendation
from fleetcore.archive.models import TelemetryArchive
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.deadletters.sink import DeadLetterSink
from fleetcore.notifications.models import Notification
from fleetcore.plans.models import Plan
from fleetcore_protocol.dex.writer import MachineAudit, write
from tests.support.images import png as png_image
from tests.support.tenants import Tenant

# Path parameters that are not object ids, with a value valid in form.
NON_ID_PARAMS = {"scope": "server", "key": "some_key", "kind": "firmware"}


async def create_objects(app: FastAPI, client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """One object of every kind in organization A; maps path parameter name -> its id."""
    headers = tenant.headers(Role.ADMIN)
    tag = uuid.uuid4().hex[:8]  # names are unique per organization; a test may need two sets

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.post(path, headers=headers, json=body)
        assert response.status_code == 201, f"{path}: {response.text}"
        data: dict[str, Any] = response.json()
        return data

    profile = await post("/api/v1/device-profiles", {"name": f"sweep profile {tag}"})
    asset = await post("/api/v1/assets", {"name": f"sweep site {tag}", "type": "site"})
    device = await post(
        "/api/v1/devices",
        {"name": "sweep device", "serial_number": f"SWEEP-{tag}", "profile_id": profile["id"]},
    )
    device_id = device["id"]
    relation = await post(
        "/api/v1/relations",
        {
            "from_type": "asset",
            "from_id": asset["id"],
            "to_type": "device",
            "to_id": device_id,
            "type": "contains",
        },
    )
    key = await post("/api/v1/api-keys", {"name": f"sweep key {tag}"})
    invitation = await post("/api/v1/invitations", {"email": f"sweep-{tag}@example.com"})
    events = await client.post(
        "/api/v1/devices/me/events",
        headers={"X-Device-Token": device["access_token"]},
        json={"type": "sweep", "data": {"device": device_id}},
    )
    assert events.status_code == 201, events.text
    command = await post(
        f"/api/v1/devices/{device_id}/commands", {"method": "sweep", "persistent": True}
    )
    sink: DeadLetterSink = app.state.dead_letters
    sink.record(
        organization_id=tenant.org_id,
        device_id=uuid.UUID(device_id),
        transport="mqtt",
        topic=f"devices/{device_id}/events",  # a uuid the list sweep looks for
        reason="bad_json",
        detail="sweep",
        payload=b"{",
    )
    await sink.flush()
    letters = await client.get("/api/v1/dead-letters", headers=headers)
    assert letters.status_code == 200, letters.text
    rule = await post(
        "/api/v1/rules",
        {
            "name": f"sweep rule {tag}",
            "device_id": device_id,
            "condition": {"key": "t", "op": ">", "value": 1},
        },
    )
    # The engine does not run on the test transaction: the alert the rule would open.
    now = datetime.now(UTC)
    alert = Alert(
        organization_id=tenant.org_id,
        rule_id=uuid.UUID(rule["id"]),
        device_id=uuid.UUID(device_id),
        name="sweep rule",
        severity="major",
        opened_at=now,
        last_fired_at=now,
    )
    database: Database = app.state.database
    async with database.session(write=True) as session:
        session.add(alert)
        await session.commit()
    # The analytics engine does not run on the test transaction: a recommendation it would
    # make (an inspection: approving it sends nothing).
    recommendation = Recommendation(
        organization_id=tenant.org_id,
        device_id=uuid.UUID(device_id),
        kind="inspect",
        topic=f"sweep:{tag}",
        title="sweep inspection",
        evidence={},
        expires_at=now + timedelta(days=1),
    )
    async with database.session(write=True) as session:
        session.add(recommendation)
        await session.commit()
    # Analytics: the engine does not run on the test transaction; its finding and health row.
    finding = AnalyticsFinding(
        organization_id=tenant.org_id,
        device_id=uuid.UUID(device_id),
        key="t",
        method="spike",
        severity="warning",
        ts=1_700_000_000_000,
        score=9.0,
        threshold=4.0,
        evidence=[[1_700_000_000_000, 99.0]],
    )
    health = DeviceHealth(
        device_id=uuid.UUID(device_id),
        organization_id=tenant.org_id,
        score=0.5,
        score_day_ago=0.6,
        trend="worsening",
        contributors=[{"key": "t", "source": "findings", "reason": "sweep", "penalty": 0.5}],
        wear={},
        open_findings=1,
    )
    async with database.session(write=True) as session:
        session.add_all([finding, health])
        await session.commit()
    channel = await post(
        "/api/v1/notification-channels",
        {
            "name": f"sweep hook {tag}",
            "type": "webhook",
            "url": "http://127.0.0.1:9/hook",
            "secret": "sweep-secret-0123456789",
        },
    )
    test = await client.post(f"/api/v1/notification-channels/{channel['id']}/test", headers=headers)
    assert test.status_code == 202, test.text
    # The dispatcher does not run on the test transaction: the notification it would write.
    notification = Notification(
        organization_id=tenant.org_id,
        channel_id=uuid.UUID(channel["id"]),
        delivery_id=uuid.UUID(test.json()["id"]),
        event="notification.test",
        title="sweep",
        payload={},
    )
    async with database.session(write=True) as session:
        session.add(notification)
        await session.commit()
    # Vending catalogue: the sweep device as a machine, a product, a cabinet's planogram.
    product = await post(
        "/api/v1/vending/products", {"name": f"sweep product {tag}", "sku": f"SWEEP-{tag}"}
    )
    machine = await post("/api/v1/vending/machines", {"device_id": device_id})
    cabinet_id = machine["cabinets"][0]["id"]
    planogram = await client.put(
        f"/api/v1/vending/cabinets/{cabinet_id}/planogram",
        headers=headers,
        json={
            "slots": [{"slot": "A1", "product_id": product["id"], "capacity": 8, "par_level": 6}]
        },
    )
    assert planogram.status_code == 200, planogram.text
    catalog_ids = {
        "product_id": product["id"],
        "cabinet_id": cabinet_id,
        "planogram_id": planogram.json()["id"],
    }
    # -- vending service: a route with the sweep machine, and a service order ---------------
    route = await post("/api/v1/vending/routes", {"name": f"sweep route {tag}"})
    machines = await client.put(
        f"/api/v1/vending/routes/{route['id']}/machines",
        headers=headers,
        json={"device_ids": [device_id]},
    )
    assert machines.status_code == 200, machines.text
    order = await post(
        f"/api/v1/vending/routes/{route['id']}/service-orders", {"service_date": "2030-01-15"}
    )
    service_ids = {
        "route_id": route["id"],
        "order_id": order["id"],
        "line_id": str(order["stops"][0]["cabinets"][0]["lines"][0]["id"]),
    }
    # Vending accounting: the machine uploads a DEX audit.
    audit_file = write(MachineAudit(serial=f"SWEEP-{tag}", read_at=datetime(2025, 1, 1)))
    uploaded = await client.post(
        "/api/v1/devices/me/dex",
        headers={"X-Device-Token": device["access_token"]},
        content=audit_file,
    )
    assert uploaded.status_code == 200, uploaded.text
    # Plates: a camera read (the sweep device's), a watchlist with an entry.
    read = await client.post(
        "/api/v1/devices/me/events",
        headers={"X-Device-Token": device["access_token"]},
        json={"type": "plate_read", "data": {"plate": f"SW {tag[:4]}", "confidence": 0.9}},
    )
    assert read.status_code == 201, read.text
    reads = await client.get("/api/v1/plates/reads", headers=headers)
    watchlist = await post("/api/v1/watchlists", {"name": f"sweep list {tag}"})
    entries = await post(f"/api/v1/watchlists/{watchlist['id']}/entries", {"plate": "SWEEP1"})
    plate_ids = {
        "read_id": str(reads.json()["items"][0]["id"]),
        "plate": reads.json()["items"][0]["plate_norm"],
        "watchlist_id": watchlist["id"],
        "entry_id": entries["added"][0]["id"],
    }
    # Media: an event with an image (multipart).
    photo = await client.post(
        "/api/v1/devices/me/events",
        headers={"X-Device-Token": device["access_token"]},
        data={"event": '{"type": "sweep_photo"}'},
        files={"image": ("sweep.png", png_image(), "image/png")},
    )
    assert photo.status_code == 201, photo.text
    # Archives: a record of an archived day (the archive writer's, without files); a day of
    # its own each call (one record per organization-day).
    async with database.session(write=True) as session:
        taken = await session.scalar(
            select(func.count()).where(TelemetryArchive.organization_id == tenant.org_id)
        )
        day = datetime(2025, 1, 1, tzinfo=UTC).date() + timedelta(days=taken or 0)
        archive = TelemetryArchive(
            organization_id=tenant.org_id,
            day=day,
            rows=1,
            files=1,
            bytes=1,
            store="file",
            location=f"org={tenant.org_id}/day={day.isoformat()}",
            manifest_sha256="0" * 64,
        )
        session.add(archive)
        # A plan (platform-wide, superusers' own), on no organization: unlimited changes nothing.
        plan = Plan(name=f"sweep plan {tag}", max_devices=1000)
        session.add(plan)
        await session.commit()
    ota_ids = await _ota_objects(client, tenant, device_id, tag)
    return {
        **ota_ids,
        "plan_id": str(plan.id),
        "organization_id": str(tenant.org_id),
        "archive_id": str(archive.id),
        "media_id": photo.json()["media"][0]["id"],
        **catalog_ids,
        **plate_ids,
        **service_ids,
        "audit_id": str(uploaded.json()["audits"][0]["id"]),
        "channel_id": channel["id"],
        "delivery_id": test.json()["id"],
        "notification_id": str(notification.id),
        "rule_id": rule["id"],
        "alert_id": str(alert.id),
        "recommendation_id": str(recommendation.id),
        "finding_id": str(finding.id),
        "dead_letter_id": str(letters.json()["items"][0]["id"]),
        "device_id": device_id,
        "command_id": command["id"],
        "profile_id": profile["id"],
        "asset_id": asset["id"],
        "relation_id": relation["id"],
        "key_id": key["id"],
        "invitation_id": invitation["id"],
        "user_id": str(tenant.user_ids[Role.VIEWER]),
    }


async def _ota_objects(
    client: httpx.AsyncClient, tenant: Tenant, device_id: str, tag: str
) -> dict[str, str]:
    """A signing key, a package signed with it, and a rollout of it to the sweep's device.
    Signed: the organization may already hold keys (an earlier sweep's, or ones the property
    tests registered), and then only signed uploads are taken."""
    headers = tenant.headers(Role.ADMIN)
    signer = Ed25519PrivateKey.generate()
    key = await client.post(
        "/api/v1/ota/keys",
        headers=headers,
        json={
            "name": f"sweep-{tag}",
            "public_key": base64.b64encode(signer.public_key().public_bytes_raw()).decode(),
        },
    )
    assert key.status_code == 201, key.text
    firmware = b"sweep firmware"
    package = await client.post(
        "/api/v1/ota/packages",
        headers=headers,
        data={
            "title": f"sweep-{tag}",
            "version": "1.0",
            "kind": "firmware",
            "signature": base64.b64encode(signer.sign(firmware)).decode(),
        },
        files={"file": ("fw.bin", firmware)},
    )
    assert package.status_code == 201, package.text
    rollout = await client.post(
        "/api/v1/ota/rollouts",
        headers=headers,
        json={"package_id": package.json()["id"], "target": {"device_ids": [device_id]}},
    )
    assert rollout.status_code == 201, rollout.text
    return {
        "package_id": package.json()["id"],
        "rollout_id": rollout.json()["id"],
        "ota_key_id": key.json()["id"],
    }


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def example(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A minimal value that passes the schema, so validation does not answer before the lookup."""
    schema = _resolve(spec, schema)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            options = [s for s in schema[union] if _resolve(spec, s).get("type") != "null"]
            return example(spec, options[0])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: example(spec, props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    fmt = schema.get("format")
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "email":
        return "sweep@example.com"
    if fmt == "date-time":
        return "2030-01-01T00:00:00Z"
    if fmt == "date":
        return "2030-01-01"
    return "x" * max(int(schema.get("minLength", 1)), 1)


def minimal_body(spec: dict[str, Any], operation: dict[str, Any]) -> tuple[str, Any] | None:
    """The smallest valid body of `operation` as (httpx keyword, value), or None without one."""
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return "json", example(spec, content["application/json"]["schema"])
    if "multipart/form-data" in content:
        return "files", {"file": ("sweep.csv", b"name,serial_number\n")}
    return None
