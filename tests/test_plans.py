"""Plans with limits: superusers assign them; every limit answers clearly over HTTP and MQTT;
no plan means unlimited; soft limits notify once. Both databases (the `backend` fixture)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter
from tests.support.devices import new_device, port_of
from tests.support.mqtt_raw import PUBLISH, RawClient
from tests.support.paho_device import PahoDevice
from tests.support.tenants import Tenant, make_superuser
from tests.support.wait import wait_until


def _meter(app: FastAPI) -> UsageMeter:
    """The app's own usage meter, which the plans' readings quota asks."""
    meter: UsageMeter = app.state.usage_meter
    assert app.state.device_messages.quota.meter is meter
    return meter


async def put_on_plan(
    http: httpx.AsyncClient, su: dict[str, str], org: Tenant, **limits: int
) -> dict[str, Any]:
    created = await http.post(
        "/api/v1/plans", headers=su, json={"name": f"p-{uuid.uuid4().hex[:8]}", **limits}
    )
    assert created.status_code == 201, created.text
    assigned = await http.put(
        f"/api/v1/organizations/{org.org_id}/plan",
        headers=su,
        json={"plan_id": created.json()["id"]},
    )
    assert assigned.status_code == 200, assigned.text
    body: dict[str, Any] = assigned.json()
    return body


def _refused(response: httpx.Response, status: int, code: str, limit: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]["limit"]) == (code, limit)


async def test_without_a_plan_nothing_is_refused(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    # The live database: the pipeline's writer commits on a connection of its own, which a
    # test's rolled-back transaction would hold out (SQLite locked, PostgreSQL unseen rows).
    client, tenant = live_client, live_tenant
    meter = _meter(live_app)
    meter.count(tenant.org_id, UsageKind.READINGS, 10**9)  # no plan: not even asked
    for _ in range(3):
        await new_device(client, tenant)
    tokens = [(await new_device(client, tenant))[1] for _ in range(3)]
    for token in tokens:
        auth = {"X-Device-Token": token}
        for _ in range(3):  # several per second: no plan, no messages-per-second window
            posted = await client.post("/api/v1/devices/me/telemetry", headers=auth, json={"t": 1})
            assert posted.status_code == 200, posted.text
        reported = await client.post("/api/v1/devices/me/attributes", headers=auth, json={"a": 1})
        assert reported.status_code == 200, reported.text
    mine = await client.get("/api/v1/organizations/me/plan", headers=tenant.headers())
    assert mine.status_code == 200, mine.text
    assert mine.json()["plan"] is None
    used = {u["limit"]: u for u in mine.json()["usage"]}
    assert used["devices"] == {"limit": "devices", "max": None, "used": 6}


async def test_only_superusers_define_and_assign_plans(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, superuser: dict[str, str]
) -> None:
    refused = await client.post("/api/v1/plans", headers=tenant.headers(), json={"name": "x"})
    assert refused.status_code == 403
    plan = await client.post("/api/v1/plans", headers=superuser, json={"name": "small"})
    assert plan.status_code == 201
    own = await client.put(
        f"/api/v1/organizations/{tenant.org_id}/plan",
        headers=tenant.headers(),
        json={"plan_id": plan.json()["id"]},
    )
    assert own.status_code == 403
    other = await client.get(
        f"/api/v1/organizations/{other_tenant.org_id}/plan", headers=tenant.headers()
    )
    assert other.status_code == 404
    viewer = await client.get("/api/v1/organizations/me/plan", headers=tenant.headers(Role.VIEWER))
    assert viewer.status_code == 403
    # Another organization's plan cannot be set either, and answers as if it did not exist.
    theirs = await client.put(
        f"/api/v1/organizations/{other_tenant.org_id}/plan",
        headers=tenant.headers(),
        json={"plan_id": plan.json()["id"]},
    )
    assert theirs.status_code == 404
    # A plan is no organization's: the same 403 whether its id exists or not (no hint).
    for plan_id in (plan.json()["id"], str(uuid.uuid4())):
        read = await client.get(f"/api/v1/plans/{plan_id}", headers=tenant.headers())
        assert read.status_code == 403
        assert read.json()["error"]["code"] == "PERMISSION_DENIED"


async def test_devices_over_the_plan_are_refused_on_every_path_and_admins_told_once(
    client: httpx.AsyncClient, tenant: Tenant, superuser: dict[str, str]
) -> None:
    await put_on_plan(client, superuser, tenant, max_devices=2)
    await new_device(client, tenant)
    await new_device(client, tenant)  # 2 of 2: the 80% and 100% notices
    over = await client.post(
        "/api/v1/devices",
        headers=tenant.headers(Role.MANAGER),
        json={"name": "x", "serial_number": "OVER-1"},
    )
    _refused(over, 403, "PLAN_LIMIT", "devices")
    imported = await client.post(
        "/api/v1/devices/import",
        files={"file": ("d.csv", b"name,serial_number\nA,IMP-1\n", "text/csv")},
        headers=tenant.headers(Role.MANAGER),
    )
    _refused(imported, 403, "PLAN_LIMIT", "devices")
    profile = await client.post(
        "/api/v1/device-profiles",
        headers=tenant.headers(Role.ADMIN),
        json={"name": "self", "provisioning_enabled": True},
    )
    assert profile.status_code == 201, profile.text
    key, secret = profile.json()["provision_key"], profile.json()["provision_secret"]
    provisioned = await client.post(
        "/api/v1/provision",
        json={"provision_key": key, "provision_secret": secret, "serial_number": "PROV-1"},
    )
    _refused(provisioned, 403, "PLAN_LIMIT", "devices")
    await client.post(  # refused again: no new notice
        "/api/v1/devices",
        headers=tenant.headers(Role.MANAGER),
        json={"name": "x", "serial_number": "OVER-2"},
    )
    notices = (await client.get("/api/v1/notifications", headers=tenant.headers())).json()["items"]
    told = sorted(
        n["payload"]["threshold"] for n in notices if n["payload"].get("limit") == "devices"
    )
    assert told == [80, 100]


async def test_users_over_the_plan_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, superuser: dict[str, str]
) -> None:
    body = await put_on_plan(client, superuser, tenant, max_users=100)
    users = {u["limit"]: u for u in body["usage"]}["users"]["used"]
    await put_on_plan(client, superuser, tenant, max_users=users)
    created = await client.post(
        "/api/v1/users",
        headers=tenant.headers(),
        json={
            "email": f"{uuid.uuid4().hex[:8]}@example.com",
            "password": "a-long-password-1",
            "role": "viewer",
        },
    )
    _refused(created, 403, "PLAN_LIMIT", "users")


async def test_retention_is_capped_by_the_plan(
    client: httpx.AsyncClient, tenant: Tenant, superuser: dict[str, str]
) -> None:
    await put_on_plan(client, superuser, tenant, max_retention_days=30)
    longer = await client.put(
        "/api/v1/telemetry/retention",
        headers=tenant.headers(),
        json={"raw_days": 60, "rollup_1m_days": 60, "rollup_1h_days": 60},
    )
    _refused(longer, 403, "PLAN_LIMIT", "retention_days")
    within = await client.put(
        "/api/v1/telemetry/retention",
        headers=tenant.headers(),
        json={"raw_days": 7, "rollup_1m_days": 14, "rollup_1h_days": 30},
    )
    assert within.status_code == 200, within.text
    shown = await client.get("/api/v1/telemetry/retention", headers=tenant.headers())
    assert shown.json()["rollup_1h_days"] == 30


async def test_api_requests_per_minute_come_from_the_plan(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, superuser: dict[str, str]
) -> None:
    await put_on_plan(client, superuser, tenant, max_api_requests_per_minute=3)
    answers = [
        (await client.get("/api/v1/devices", headers=tenant.headers())).status_code
        for _ in range(4)
    ]
    assert answers == [200, 200, 200, 429]
    refused = await client.get("/api/v1/devices", headers=tenant.headers())
    _refused(refused, 429, "RATE_LIMITED", "organization")
    # Another organization, without a plan, is not limited.
    for _ in range(5):
        assert (await client.get("/api/v1/devices", headers=other_tenant.headers())).is_success


async def test_http_ingest_over_the_quotas_is_429_with_retry_after(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Any
) -> None:
    client, tenant = live_client, live_tenant
    superuser = await make_superuser(client, live_database)
    meter = _meter(live_app)
    await put_on_plan(client, superuser, tenant, max_readings_per_day=10)
    _, token = await new_device(client, tenant)
    auth = {"X-Device-Token": token}
    nine = {f"k{i}": i for i in range(9)}
    first = await client.post("/api/v1/devices/me/telemetry", headers=auth, json=nine)
    assert (first.status_code, first.json()["stored"]) == (200, 9), first.text
    assert meter.today(tenant.org_id, UsageKind.READINGS) == 9  # metered as committed
    ok = await client.post("/api/v1/devices/me/telemetry", headers=auth, json={"tenth": 1})
    assert ok.status_code == 200, ok.text
    over = await client.post("/api/v1/devices/me/telemetry", headers=auth, json={"more": 1})
    _refused(over, 429, "QUOTA_EXCEEDED", "readings_per_day")
    assert 1 <= int(over.headers["Retry-After"]) <= 86400
    await wait_until(lambda: _told(client, tenant, "readings_per_day", [80, 100]), within=5)
    await put_on_plan(client, superuser, tenant, max_messages_per_second=1)
    answers = [
        (await client.post("/api/v1/devices/me/telemetry", headers=auth, json={"a": 1}))
        for _ in range(2)
    ]
    assert answers[0].status_code == 200, answers[0].text
    _refused(answers[1], 429, "QUOTA_EXCEEDED", "messages_per_second")
    assert answers[1].headers["Retry-After"] == "1"


async def _told(client: httpx.AsyncClient, tenant: Tenant, limit: str, wanted: list[int]) -> bool:
    notices = (await client.get("/api/v1/notifications", headers=tenant.headers())).json()["items"]
    return (
        sorted(n["payload"]["threshold"] for n in notices if n["payload"].get("limit") == limit)
        == wanted
    )


async def _letters(http: httpx.AsyncClient, org: Tenant, device_id: str) -> list[dict[str, Any]]:
    response = await http.get(
        "/api/v1/dead-letters", headers=org.headers(), params={"device_id": device_id}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_mqtt_over_the_quotas_is_a_dead_letter_and_0x97(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant, live_database: Any
) -> None:
    su = await make_superuser(http, live_database)
    meter = _meter(mqtt_app)
    await put_on_plan(http, su, org, max_readings_per_day=5)
    device_id, token = await new_device(http, org)
    device = PahoDevice("quota-5")
    try:
        await device.connect(port_of(mqtt_app), username=token)
        topic = f"devices/{device_id}/telemetry"
        assert await device.publish(topic, b'{"t": 1}') == 0
        assert await device.publish(topic, b'{"a": 1, "b": 2, "c": 3, "d": 4}') == 0
        assert meter.today(org.org_id, UsageKind.READINGS) == 5  # the PUBACK follows the commit
        assert await device.publish(topic, b'{"t": 2}') == 0x97
        await put_on_plan(http, su, org, max_messages_per_second=1)  # readings: no limit now
        codes = [await device.publish(topic, b'{"t": 3}') for _ in range(3)]
        assert codes[0] == 0
        assert 0x97 in codes
    finally:
        device.stop()

    async def two_letters() -> bool:
        letters = await _letters(http, org, device_id)
        details = [d["detail"] for d in letters if d["reason"] == "quota_exceeded"]
        return any("readings per day" in d for d in details) and any(
            "messages per second" in d for d in details
        )

    await wait_until(two_letters, within=5)


async def test_every_http_device_message_counts_toward_messages_per_second(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Any
) -> None:
    client, tenant = live_client, live_tenant
    superuser = await make_superuser(client, live_database)
    await put_on_plan(client, superuser, tenant, max_messages_per_second=1)
    _, token = await new_device(client, tenant)
    auth = {"X-Device-Token": token}

    async def post(kind: str) -> httpx.Response:
        if kind == "attributes":
            return await client.post("/api/v1/devices/me/attributes", headers=auth, json={"a": 1})
        if kind == "events":
            return await client.post(
                "/api/v1/devices/me/events", headers=auth, json={"type": "door_open"}
            )
        if kind == "result":
            return await client.post(
                f"/api/v1/devices/me/commands/{uuid.uuid4()}/result",
                headers=auth,
                json={"status": "succeeded"},
            )
        return await client.post("/api/v1/devices/me/telemetry", headers=auth, json={"t": 1})

    # Each kind takes the second's one place (once the window has room again), and the
    # next message, of another kind, is refused within the same second.
    for first, second in [
        ("attributes", "telemetry"),
        ("events", "attributes"),
        ("telemetry", "events"),
        ("telemetry", "result"),
    ]:
        taken: list[httpx.Response] = []

        async def took(kind: str = first, into: list[httpx.Response] = taken) -> bool:
            answer = await post(kind)
            into.append(answer)
            return answer.status_code != 429

        await wait_until(took, within=5, every=0.1)
        assert taken[-1].is_success, (first, taken[-1].text)
        refused = await post(second)
        _refused(refused, 429, "QUOTA_EXCEEDED", "messages_per_second")
        assert refused.headers["Retry-After"] == "1"


async def test_mqtt_provisioning_over_the_devices_limit_is_refused(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant, live_database: Any
) -> None:
    su = await make_superuser(http, live_database)
    profile = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.ADMIN),
        json={"name": f"prov-{uuid.uuid4().hex[:8]}", "provisioning_enabled": True},
    )
    assert profile.status_code == 201, profile.text
    key, secret = profile.json()["provision_key"], profile.json()["provision_secret"]
    await put_on_plan(http, su, org, max_devices=2)
    await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "prov-plan", username="provision")
    try:
        assert await client.subscribe("/provision/response") == [1]

        async def provision(serial: str) -> dict[str, Any]:
            request = {"deviceName": serial, "provisionDeviceKey": key}
            request["provisionDeviceSecret"] = secret
            await client.publish("/provision/request", orjson.dumps(request), qos=1)
            answer: dict[str, Any] = orjson.loads((await client.expect(PUBLISH)).payload)
            return answer

        assert (await provision("SN-PLAN-1"))["status"] == "SUCCESS"  # 2 of 2
        refused = await provision("SN-PLAN-2")
    finally:
        await client.close()
    assert refused["status"] == "FAILURE"
    assert "plan allows 2 devices" in refused["errorMsg"]
    devices = await http.get("/api/v1/devices", headers=org.headers(), params={"limit": 100})
    serials = {d["serial_number"] for d in devices.json()["items"]}
    assert "SN-PLAN-1" in serials
    assert "SN-PLAN-2" not in serials
