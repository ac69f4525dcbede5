"""The HTTP endpoints EMQX 5 and mosquitto-go-auth call: who connects, what they may touch."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from fleetcore.auth.principal import Role
from fleetcore_protocol import topics
from tests.conftest import BROKER_SECRET
from tests.support.tenants import Tenant

BROKER = {"Authorization": f"Bearer {BROKER_SECRET}"}
AUTHN = "/api/v1/broker/emqx/authn"
AUTHZ = "/api/v1/broker/emqx/authz"


async def _device(client: httpx.AsyncClient, tenant: Tenant, name: str = "dev") -> dict[str, Any]:
    response = await client.post(
        "/api/v1/devices",
        headers=tenant.headers(Role.MANAGER),
        json={"name": name, "serial_number": f"BRK-{name}-{tenant.org_id}"},
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def _authn(
    client: httpx.AsyncClient, username: str, password: str = "", clientid: str = "c1"
) -> dict[str, Any]:
    body = {
        "username": username,
        "password": password,
        "clientid": clientid,
        "peerhost": "10.0.0.9",
    }
    response = await client.post(AUTHN, headers=BROKER, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _authz(client: httpx.AsyncClient, username: str, topic: str, action: str) -> str:
    body = {"username": username, "clientid": "c1", "topic": topic, "action": action}
    response = await client.post(AUTHZ, headers=BROKER, json=body)
    assert response.status_code == 200, response.text
    result: str = response.json()["result"]
    return result


async def test_devices_authenticate_by_token_or_id_and_token(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device = await _device(client, tenant)
    token, device_id = device["access_token"], device["id"]
    by_token = await _authn(client, token)
    assert by_token == {
        "result": "allow",
        "is_superuser": False,
        "client_attrs": {"device_id": device_id},
    }
    assert (await _authn(client, device_id, token))["result"] == "allow"
    assert (await _authn(client, device_id, "fcd_wrong"))["result"] == "deny"
    assert (await _authn(client, "fcd_wrong"))["result"] == "deny"
    other = await _device(client, tenant, "other")
    assert (await _authn(client, other["id"], token))["result"] == "deny"  # another's token
    assert (await _authn(client, "provision"))["client_attrs"] == {"role": "provisioner"}
    # The platform's client ids are its own: a device using one could take a worker's session.
    for reserved in ("fleetcore-lane-fleetcore", "fleetcore-ingest-host-8101"):
        assert (await _authn(client, token, clientid=reserved))["result"] == "deny"
        assert (await _authn(client, "provision", clientid=reserved))["result"] == "deny"
    assert (await _authn(client, token, clientid="sensor-fleetcore-1"))["result"] == "allow"


async def test_disabled_rotated_and_deleted_devices_are_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    manager = tenant.headers(Role.MANAGER)
    device = await _device(client, tenant)
    url = f"/api/v1/devices/{device['id']}"
    old = device["access_token"]
    assert (await _authn(client, old))["result"] == "allow"  # now cached
    assert await _authz(client, old, f"devices/{device['id']}/telemetry", "publish") == "allow"
    rotated = await client.post(f"{url}/credentials/rotate", headers=manager)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["access_token"]
    # The change cleared the cache in this process: the old token is refused at once.
    assert (await _authn(client, old))["result"] == "deny"
    assert await _authz(client, old, f"devices/{device['id']}/telemetry", "publish") == "deny"
    assert (await _authn(client, new))["result"] == "allow"
    disabled = await client.patch(url, json={"status": "disabled"}, headers=manager)
    assert disabled.status_code == 200, disabled.text
    assert (await _authn(client, new))["result"] == "deny"
    assert await _authz(client, device["id"], f"devices/{device['id']}/telemetry", "publish") == (
        "deny"
    )
    enabled = await client.patch(url, json={"status": "active"}, headers=manager)
    assert enabled.status_code == 200, enabled.text
    assert (await _authn(client, new))["result"] == "allow"
    deleted = await client.delete(url, headers=manager)
    assert deleted.status_code == 204, deleted.text
    assert (await _authn(client, new))["result"] == "deny"
    assert await _authz(client, new, f"devices/{device['id']}/telemetry", "publish") == "deny"


async def test_a_device_touches_only_its_own_topics(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device = await _device(client, tenant)
    neighbour = await _device(client, tenant, "neighbour")
    stranger = await _device(client, other_tenant, "stranger")
    own, token = device["id"], device["access_token"]
    for username in (token, own):
        allowed = [
            (f"devices/{own}/telemetry", "publish"),
            (f"devices/{own}/commands/7/result", "publish"),
            (f"devices/{own}/commands", "subscribe"),
            (f"devices/{own}/#", "subscribe"),
            ("v1/devices/me/telemetry", "publish"),
            ("v1/devices/me/rpc/request/+", "subscribe"),
        ]
        denied = [
            (f"devices/{own}/commands", "publish"),  # flows to the device
            (f"devices/{neighbour['id']}/telemetry", "publish"),  # same organization
            (f"devices/{neighbour['id']}/commands", "subscribe"),
            (f"devices/{stranger['id']}/telemetry", "publish"),  # another organization
            (f"devices/{stranger['id']}/#", "subscribe"),
            ("devices/+/commands", "subscribe"),  # wildcards over other devices
            ("devices/#", "subscribe"),
            ("#", "subscribe"),
            (f"$share/g/devices/{own}/commands", "subscribe"),
            ("/provision/response", "subscribe"),
        ]
        for topic, action in allowed:
            assert await _authz(client, username, topic, action) == "allow", (topic, action)
        for topic, action in denied:
            assert await _authz(client, username, topic, action) == "deny", (topic, action)
    assert await _authz(client, "fcd_unknown", f"devices/{own}/telemetry", "publish") == "deny"


async def test_the_platform_client_and_the_provisioning_client(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device = await _device(client, tenant)
    platform = await _authn(client, "fleetcore", BROKER_SECRET, clientid="fleetcore-lane-g")
    assert platform == {
        "result": "allow",
        "is_superuser": False,
        "client_attrs": {"role": "platform"},
    }
    assert (await _authn(client, "fleetcore", "guess"))["result"] == "deny"
    topic = f"devices/{device['id']}"
    assert await _authz(
        client, "fleetcore", "$share/fleetcore/devices/+/telemetry", "subscribe"
    ) == ("allow")
    assert await _authz(client, "fleetcore", f"{topic}/commands", "publish") == "allow"
    assert await _authz(client, "fleetcore", f"{topic}/telemetry", "publish") == "deny"
    assert await _authz(client, "fleetcore", "devices/+/telemetry", "subscribe") == "deny"
    for lane_filter in topics.ordered_filters():  # the ordered lane's, without $share
        assert await _authz(client, "fleetcore", lane_filter, "subscribe") == "allow"
    assert await _authz(client, "fleetcore", "devices/+/attributes/#", "subscribe") == "deny"
    assert await _authz(client, "provision", "/provision/request", "publish") == "allow"
    assert await _authz(client, "provision", f"{topic}/telemetry", "publish") == "deny"


async def test_go_auth_answers_by_status_in_json_and_form(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device = await _device(client, tenant)
    token, own = device["access_token"], device["id"]
    base = "/api/v1/broker/go-auth"
    user = {"username": own, "password": token, "clientid": "c1"}
    assert (await client.post(f"{base}/user", headers=BROKER, json=user)).status_code == 200
    assert (await client.post(f"{base}/user", headers=BROKER, data=user)).status_code == 200
    wrong = {**user, "password": "fcd_wrong"}
    refused = await client.post(f"{base}/user", headers=BROKER, json=wrong)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "BROKER_DENIED"
    superuser = await client.post(f"{base}/superuser", headers=BROKER, json={"username": own})
    assert superuser.status_code == 403
    acl = {"username": token, "clientid": "c1", "topic": f"devices/{own}/telemetry", "acc": 2}
    assert (await client.post(f"{base}/acl", headers=BROKER, json=acl)).status_code == 200
    form = {**acl, "acc": "2"}
    assert (await client.post(f"{base}/acl", headers=BROKER, data=form)).status_code == 200
    read = {**acl, "topic": f"devices/{own}/commands", "acc": 4}
    assert (await client.post(f"{base}/acl", headers=BROKER, json=read)).status_code == 200
    both = {**acl, "acc": 3}  # read-write of a topic the device only writes
    assert (await client.post(f"{base}/acl", headers=BROKER, json=both)).status_code == 200
    other = {**acl, "topic": "devices/+/telemetry", "acc": 4}
    assert (await client.post(f"{base}/acl", headers=BROKER, json=other)).status_code == 403
    bad = await client.post(f"{base}/acl", headers=BROKER, json={**acl, "acc": 9})
    assert bad.status_code == 422


async def test_the_broker_secret_is_required(client: httpx.AsyncClient) -> None:
    body = {"username": "x", "password": "y", "clientid": "c"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        response = await client.post(AUTHN, headers=headers, json=body)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "BROKER_SECRET_REQUIRED"
    basic = httpx.BasicAuth("mosquitto", BROKER_SECRET)
    assert (await client.post(AUTHN, auth=basic, json=body)).status_code == 200


async def test_without_a_secret_the_endpoints_do_not_exist(app: FastAPI) -> None:
    app.state.settings = app.state.settings.model_copy(update={"broker_auth_secret": None})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as bare:
        body = {"username": "x", "password": "y", "clientid": "c"}
        response = await bare.post(AUTHN, headers=BROKER, json=body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_answers_are_cached_and_tokens_never_logged(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device = await _device(client, tenant)
    token = device["access_token"]
    hits = _sample("fleetcore_broker_auth_cache_total", outcome="hit")
    with capture_logs() as logs:
        assert (await _authn(client, token))["result"] == "allow"
        assert (await _authn(client, token))["result"] == "allow"
        assert (await _authn(client, token + "x"))["result"] == "deny"
        topic = f"devices/{device['id']}/telemetry"
        assert await _authz(client, token, topic, "publish") == "allow"
        assert await _authz(client, token, topic, "publish") == "allow"
    assert _sample("fleetcore_broker_auth_cache_total", outcome="hit") >= hits + 2
    assert logs, "the requests were logged"
    assert token not in repr(logs)
