"""Command params schemas cost bounded work: a catastrophic pattern cannot freeze the server
(patterns run on RE2), patterns RE2 cannot run are refused when saved, and references that
fan out or loop are stopped (issue 14, finding 3)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from tests.support.agent_rig import Platform
from tests.support.devices import new_device
from tests.support.http_clients import local_client
from tests.support.tenants import Tenant

PROFILES = "/api/v1/device-profiles"
CATASTROPHIC = "^(a+)+$"  # with Python's re: ~4x longer per 2 more characters
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def limits(schema: dict[str, Any], method: str = "set") -> dict[str, Any]:
    return {"command_limits": {"allowed": {method: schema}}}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"not": schema}
    return schema


def name_schema(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}}


# jsonschema picks its validator class again from a "$schema" wherever it descends: a "$ref"
# to the root must not bring back Python's re.
RECURSIVE = {
    "$schema": DRAFT,
    "type": "object",
    "properties": {"name": {"type": "string", "pattern": CATASTROPHIC}, "child": {"$ref": "#"}},
}


async def test_a_catastrophic_pattern_does_not_freeze_the_server(tmp_path: Path) -> None:
    """A real `fleetcore serve`: with Python's re each 41-character parameter would take
    hours and block every request; the test gives them 10 s, so a regression fails, not
    hangs."""
    platform = Platform(tmp_path / "platform")
    await platform.prepare()
    await platform.start()
    try:
        headers = await platform.admin_headers()
        async with local_client(base_url=platform.base, headers=headers) as http:
            allowed = {"set": name_schema(CATASTROPHIC), "nest": RECURSIVE}
            body: dict[str, Any] = {"name": "redos", "command_limits": {"allowed": allowed}}
            profile = await http.post(PROFILES, json=body)
            assert profile.status_code == 201, profile.text
            body = {"name": "d", "serial_number": "R-1", "profile_id": profile.json()["id"]}
            device = await http.post("/api/v1/devices", json=body)
            assert device.status_code == 201, device.text
            commands = f"/api/v1/devices/{device.json()['id']}/commands"

            async def command(method: str, params: dict[str, Any]) -> httpx.Response:
                body = {"method": method, "params": params, "persistent": True}
                return await http.post(commands, json=body, timeout=10)

            bad, good = "a" * 40 + "!", "a" * 40
            async with asyncio.timeout(10):
                refused, health, accepted, nested = await asyncio.gather(
                    command("set", {"name": bad}),
                    http.get("/health"),
                    command("set", {"name": good}),
                    command("nest", {"child": {"child": {"name": bad}}}),
                )
        assert health.status_code == 200
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "INVALID_PARAMS"
        assert refused.json()["error"]["details"]["field"] == "params.name"
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["status"] == "queued"
        assert nested.status_code == 422, nested.text
        assert nested.json()["error"]["details"]["field"] == "params.child.child.name"
    finally:
        platform.kill()  # on a regression the process is stuck in the regex: no SIGTERM


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        pytest.param(name_schema("^(a)\\1$"), ["\\1", "RE2"], id="backreference"),
        pytest.param(name_schema("^(?=a)a+$"), ["(?=", "RE2"], id="lookahead"),
        pytest.param(name_schema("(?<!x)y"), ["(?<!", "RE2"], id="lookbehind"),
        pytest.param(
            {"type": "object", "patternProperties": {"^(a)\\1$": {"type": "integer"}}},
            ["\\1", "patternProperties"],
            id="pattern-properties-key",
        ),
        pytest.param(name_schema("a{1001}"), ["repetition"], id="too-large"),
        pytest.param(
            {"unevaluatedProperties": False, "patternProperties": {"^x": {}}},
            ["unevaluatedProperties"],
            id="unevaluated-with-pattern-properties",
        ),
        # The JSON encoder and the stack overflow a few hundred levels down.
        pytest.param(nested(40), ["deeper than 32"], id="too-deep"),
        pytest.param(
            {"properties": {"name": {"$schema": DRAFT, "pattern": CATASTROPHIC}}},
            ['"$schema" below the root'],
            id="schema-below-root",
        ),
    ],
)
async def test_a_schema_the_bounds_cannot_hold_is_refused_when_saved(
    client: httpx.AsyncClient, tenant: Tenant, schema: dict[str, Any], words: list[str]
) -> None:
    refused = await client.post(
        PROFILES, json={"name": "bad", **limits(schema)}, headers=tenant.headers(Role.MANAGER)
    )
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["error"]["details"]["errors"]
    assert error["field"] == "body.command_limits.allowed"
    message = error["message"]
    for word in ["'set'", *words]:
        assert word in message
    listed = await client.get(PROFILES, headers=tenant.headers(Role.VIEWER))
    assert listed.json()["items"] == []


def fan_out(levels: int) -> dict[str, Any]:
    """Each definition is "either of" two references to the next: 2^levels evaluations."""
    defs: dict[str, Any] = {
        f"d{n}": {"anyOf": [{"$ref": f"#/$defs/d{n + 1}"}, {"$ref": f"#/$defs/d{n + 1}"}]}
        for n in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


@pytest.mark.parametrize(
    ("schema", "code"),
    [
        pytest.param(fan_out(16), "PARAMS_CHECK_TOO_COSTLY", id="fan-out"),
        pytest.param({"$ref": "#"}, "INVALID_PARAMS_SCHEMA", id="reference-loop"),
    ],
)
async def test_the_work_of_a_params_check_is_bounded(
    client: httpx.AsyncClient, tenant: Tenant, schema: dict[str, Any], code: str
) -> None:
    manager = tenant.headers(Role.MANAGER)
    profile = await client.post(
        PROFILES, json={"name": "costly", **limits(schema)}, headers=manager
    )
    assert profile.status_code == 201, profile.text
    device_id, _ = await new_device(client, tenant, profile_id=profile.json()["id"])
    refused = await client.post(
        f"/api/v1/devices/{device_id}/commands",
        json={"method": "set", "params": {}},
        headers=tenant.headers(Role.OPERATOR),
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == code


async def test_patterns_keep_their_json_schema_meaning_on_re2(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """ECMA-262 \\u escapes, search (not full match) semantics, patternProperties with
    additionalProperties: false."""
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "[\\u0041-\\u005A]{3}"}},
        "patternProperties": {"^x_": {"type": "integer"}},
        "additionalProperties": False,
    }
    manager = tenant.headers(Role.MANAGER)
    profile = await client.post(PROFILES, json={"name": "re2", **limits(schema)}, headers=manager)
    assert profile.status_code == 201, profile.text
    device_id, _ = await new_device(client, tenant, profile_id=profile.json()["id"])

    async def send(params: dict[str, Any]) -> httpx.Response:
        body = {"method": "set", "params": params, "persistent": True}
        url = f"/api/v1/devices/{device_id}/commands"
        return await client.post(url, json=body, headers=tenant.headers(Role.OPERATOR))

    assert (await send({"code": "id ABC!", "x_a": 1})).status_code == 201
    lower = await send({"code": "abc"})
    assert lower.status_code == 422
    assert lower.json()["error"]["details"]["field"] == "params.code"
    wrong = await send({"x_a": "one"})
    assert wrong.json()["error"]["details"]["field"] == "params.x_a"
    extra = await send({"y": 1})
    assert extra.status_code == 422
    assert "'y' does not match any of the regexes: '^x_'" in extra.json()["error"]["message"]


async def test_the_cost_of_saving_an_allow_list_is_bounded(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Checking a schema costs about a millisecond per object in it (the meta-schema): 500
    methods of 16 KiB took minutes. The objects of all the schemas together are capped."""
    wide = {"type": "object", "properties": {f"p{n}": {} for n in range(700)}}
    allowed = {f"m{n}": wide for n in range(3)}  # 3 x 702 objects
    refused = await client.post(
        PROFILES,
        json={"name": "wide", "command_limits": {"allowed": allowed}},
        headers=tenant.headers(Role.MANAGER),
    )
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["error"]["details"]["errors"]
    assert "2106 JSON objects" in error["message"]
    two = {f"m{n}": wide for n in range(2)}
    saved = await client.post(
        PROFILES,
        json={"name": "wide", "command_limits": {"allowed": two}},
        headers=tenant.headers(Role.MANAGER),
    )
    assert saved.status_code == 201, saved.text
