"""Recommendations through the API: every state change, who may make it, the two-person rule,
a safety refusal that changes nothing, concurrent approvals creating one command, and the
expiry and command-following jobs. Both databases, real commits; the rows are made as the
analytics engine would make them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fleetcore.advisory.recommendations import expire_due, sync_commands
from fleetcore.auth.principal import Role
from fleetcore.commands.models import CommandStatus, DeviceCommand
from fleetcore.commands.transitions import move
from fleetcore.db import Database
from tests.support.safety import audited, commands_of, pump, recommend, settled
from tests.support.tenants import Tenant, make_tenant

API = "/api/v1/recommendations"


async def act(
    client: httpx.AsyncClient,
    tenant: Tenant,
    rec_id: str,
    action: str,
    role: Role = Role.OPERATOR,
    **body: Any,
) -> httpx.Response:
    return await client.post(f"{API}/{rec_id}/{action}", headers=tenant.headers(role), json=body)


async def read(client: httpx.AsyncClient, tenant: Tenant, rec_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/{rec_id}", headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


async def sent_commands(client: httpx.AsyncClient, tenant: Tenant, device_id: str) -> list[Any]:
    """The device's commands but the one that set its speed two hours ago."""
    return [c for c in await commands_of(client, tenant, device_id) if c["rpc_id"] != 999]


async def finish(database: Database, command_id: str, status: CommandStatus) -> None:
    """The command's outcome, as delivery would record it."""
    async with database.session(write=True) as session:
        moved = await move(
            session,
            DeviceCommand.id == uuid.UUID(command_id),
            expected=(CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.DELIVERED),
            to=status,
        )
        assert moved
        await session.commit()


@pytest.fixture(autouse=True)
async def _jobs_run_by_the_tests(live_app: FastAPI) -> None:
    """The tests run the recommendation jobs themselves, between their steps: a tick of the
    app's own (every 15 s, on the clock) between two steps did a step's work and failed it."""
    for name in ("recommendations.expire", "recommendations.sync"):
        await live_app.state.jobs.halt(name)


@pytest.fixture
async def device(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> str:
    """A pump with the safety policy, at 1000 rpm since a command two hours ago."""
    device_id = await pump(live_client, live_tenant)
    await settled(live_database, live_tenant, device_id, 1000)
    return device_id


async def test_list_filters_pages_and_reads_one(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    other = await pump(live_client, live_tenant)
    first = await recommend(live_database, live_tenant, device, kind="inspect", method=None)
    second = await recommend(live_database, live_tenant, device, params={"rpm": 1100})
    third = await recommend(
        live_database, live_tenant, other, method="stop", kind="stop", params={}
    )
    headers = live_tenant.headers(Role.VIEWER)
    listed = ok(await live_client.get(API, headers=headers))
    assert [r["id"] for r in listed["items"]] == [third, second, first]  # newest first
    by_device = ok(await live_client.get(API, headers=headers, params={"device_id": device}))
    assert {r["id"] for r in by_device["items"]} == {first, second}
    page = ok(await live_client.get(API, headers=headers, params={"limit": 2}))
    rest = ok(await live_client.get(API, headers=headers, params={"cursor": page["next_cursor"]}))
    assert [r["id"] for r in page["items"] + rest["items"]] == [third, second, first]
    assert rest["next_cursor"] is None
    ok(await act(live_client, live_tenant, first, "reject", reason="looked fine"))
    proposed = ok(await live_client.get(API, headers=headers, params={"status": "proposed"}))
    assert {r["id"] for r in proposed["items"]} == {second, third}
    one = await read(live_client, live_tenant, third)
    assert one["evidence"] == {"finding_ids": [1, 2], "key": "vibration"}
    assert (one["approvals"], one["approvals_needed"], one["safety"]) == ([], 2, [])
    assert (one["command_id"], one["command_status"]) == (None, None)
    assert (await read(live_client, live_tenant, second))["approvals_needed"] == 1
    for params in ({"status": "maybe"}, {"cursor": "not-a-cursor"}, {"device_id": "x"}):
        error(await live_client.get(API, headers=headers, params=params), 422)
    missing = await live_client.get(f"{API}/{uuid.uuid4()}", headers=headers)
    assert error(missing, 404)["code"] == "RECOMMENDATION_NOT_FOUND"
    assert error(await act(live_client, live_tenant, str(uuid.uuid4()), "approve"), 404)


async def test_an_inspection_is_approved_then_marked_done(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, kind="inspect", method=None)
    assert error(await act(live_client, live_tenant, rec, "done"), 409)["code"] == (
        "RECOMMENDATION_NOT_APPROVED"
    )
    approved = ok(await act(live_client, live_tenant, rec, "approve", note="on my round"))
    assert approved["status"] == "approved"
    assert approved["command_id"] is None
    assert [a["by"] for a in approved["approvals"]] == [str(live_tenant.user_ids[Role.OPERATOR])]
    assert approved["decision_note"] == "on my round"
    assert await sent_commands(live_client, live_tenant, device) == []
    again = error(await act(live_client, live_tenant, rec, "approve", Role.MANAGER), 409)
    assert again["details"] == {"status": "approved"}
    done = ok(await act(live_client, live_tenant, rec, "done", note="bearing greased"))
    assert done["status"] == "executed"
    error(await act(live_client, live_tenant, rec, "done"), 409)
    actions = [e["action"] for e in await audited(live_client, live_tenant, "recommendation.done")]
    assert actions == ["recommendation.done"]


async def test_an_approved_setpoint_becomes_one_command_followed_to_its_end(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, params={"rpm": 1100})
    approved = ok(await act(live_client, live_tenant, rec, "approve"))
    assert approved["status"] == "approved"
    assert approved["command_status"] == "queued"
    commands = await sent_commands(live_client, live_tenant, device)
    assert [(c["id"], c["method"], c["params"]) for c in commands] == [
        (approved["command_id"], "set_speed", {"rpm": 1100})
    ]
    created = await audited(live_client, live_tenant, "command.create")
    assert created[0]["details"]["recommendation_id"] == rec
    assert await sync_commands(live_database) == 0  # still queued
    await finish(live_database, approved["command_id"], CommandStatus.SUCCEEDED)
    assert await sync_commands(live_database) == 1
    assert await sync_commands(live_database) == 0  # idempotent
    after = await read(live_client, live_tenant, rec)
    assert (after["status"], after["command_status"]) == ("executed", "succeeded")
    # A cancelled command fails its recommendation.
    other = await recommend(live_database, live_tenant, device, params={"rpm": 1050})
    command_id = ok(await act(live_client, live_tenant, other, "approve"))["command_id"]
    cancel = await live_client.post(
        f"/api/v1/devices/{device}/commands/{command_id}/cancel",
        headers=live_tenant.headers(Role.OPERATOR),
    )
    assert cancel.status_code == 200, cancel.text
    assert await sync_commands(live_database) == 1
    assert (await read(live_client, live_tenant, other))["status"] == "failed"


async def test_a_critical_method_needs_two_different_people(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, kind="stop", method="stop", params={})
    first = ok(await act(live_client, live_tenant, rec, "approve"))
    assert (first["status"], len(first["approvals"]), first["approvals_needed"]) == (
        "proposed",
        1,
        2,
    )
    assert first["command_id"] is None
    # The same person again does not count: refused with the reason, nothing stored.
    twice = error(await act(live_client, live_tenant, rec, "approve"), 422)
    assert twice["code"] == "SAFETY_REFUSED"
    assert "APPROVAL_DUPLICATE" in [r["code"] for r in twice["details"]["reasons"]]
    assert len((await read(live_client, live_tenant, rec))["approvals"]) == 1
    assert await sent_commands(live_client, live_tenant, device) == []
    viewer = await act(live_client, live_tenant, rec, "approve", Role.VIEWER)
    assert error(viewer, 403)["code"] == "PERMISSION_DENIED"
    second = ok(await act(live_client, live_tenant, rec, "approve", Role.MANAGER))
    assert second["status"] == "approved"
    assert [a["role"] for a in second["approvals"]] == ["operator", "manager"]
    assert second["safety"] == []
    commands = await sent_commands(live_client, live_tenant, device)
    assert [c["id"] for c in commands] == [second["command_id"]]


async def test_a_safety_refusal_shows_its_reasons_and_changes_nothing_else(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, params={"rpm": 1500})
    before = await read(live_client, live_tenant, rec)
    answer = error(await act(live_client, live_tenant, rec, "approve"), 422)
    assert answer["code"] == "SAFETY_REFUSED"
    assert [r["code"] for r in answer["details"]["reasons"]] == ["STEP_TOO_LARGE", "RATE_TOO_HIGH"]
    after = await read(live_client, live_tenant, rec)
    assert after["safety"] == answer["details"]["reasons"]
    assert (after["status"], after["approvals"], after["command_id"]) == ("proposed", [], None)
    assert {k: v for k, v in after.items() if k not in ("safety", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("safety", "updated_at")
    }
    assert await sent_commands(live_client, live_tenant, device) == []
    refusal = await audited(live_client, live_tenant, "recommendation.approve_refused")
    assert refusal[0]["target_id"] == rec
    assert refusal[0]["details"]["reasons"] == ["STEP_TOO_LARGE", "RATE_TOO_HIGH"]
    gate = await audited(live_client, live_tenant, "command.safety_refused")
    assert gate[0]["details"]["recommendation_id"] == rec


async def test_reject_needs_a_reason_and_an_operator(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, params={"rpm": 1100})
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 1001}, {"reason": 5}):
        assert error(await act(live_client, live_tenant, rec, "reject", **body), 422)
    assert error(await act(live_client, live_tenant, rec, "reject", reason="no", extra=1), 422)
    assert error(await act(live_client, live_tenant, rec, "approve", note=["x"]), 422)
    viewer = await act(live_client, live_tenant, rec, "reject", Role.VIEWER, reason="no")
    assert error(viewer, 403)
    rejected = ok(await act(live_client, live_tenant, rec, "reject", reason=" not now "))
    assert (rejected["status"], rejected["decision_note"]) == ("rejected", "not now")
    assert rejected["decided_by"] == str(live_tenant.user_ids[Role.OPERATOR])
    for action, body in (("reject", {"reason": "again"}), ("approve", {})):
        assert error(await act(live_client, live_tenant, rec, action, **body), 409)
    events = await audited(live_client, live_tenant, "recommendation.reject")
    assert [e["details"]["reason"] for e in events] == ["not now"]
    assert await sent_commands(live_client, live_tenant, device) == []


async def test_undecided_recommendations_expire(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    past = timedelta(minutes=-1)
    due = [await recommend(live_database, live_tenant, device, expires_in=past) for _ in range(3)]
    fresh = await recommend(live_database, live_tenant, device)
    assert await expire_due(live_database, batch=2) == 2  # bounded batches
    assert await expire_due(live_database, batch=2) == 1
    assert await expire_due(live_database) == 0
    assert [(await read(live_client, live_tenant, r))["status"] for r in due] == ["expired"] * 3
    assert (await read(live_client, live_tenant, fresh))["status"] == "proposed"
    # Past its time before the job ran: not approvable, and expired on the spot.
    late = await recommend(live_database, live_tenant, device, expires_in=past)
    answer = error(await act(live_client, live_tenant, late, "approve"), 409)
    assert answer["details"] == {"status": "expired"}
    assert (await read(live_client, live_tenant, late))["status"] == "expired"
    assert await sent_commands(live_client, live_tenant, device) == []


async def test_a_recommendation_of_a_deleted_device_is_kept_but_not_approvable(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, params={"rpm": 1100})
    other = await recommend(live_database, live_tenant, device, kind="inspect", method=None)
    deleted = await live_client.delete(
        f"/api/v1/devices/{device}", headers=live_tenant.headers(Role.MANAGER)
    )
    assert deleted.status_code == 204, deleted.text
    assert (await read(live_client, live_tenant, rec))["status"] == "proposed"
    for rec_id in (rec, other):
        gone = error(await act(live_client, live_tenant, rec_id, "approve"), 409)
        assert gone["code"] == "RECOMMENDATION_DEVICE_GONE"
    assert ok(await act(live_client, live_tenant, rec, "reject", reason="device gone"))


async def test_concurrent_approvals_create_one_command(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, params={"rpm": 1100})
    roles = [Role.OPERATOR, Role.MANAGER, Role.ADMIN, Role.OPERATOR]
    answers = await asyncio.gather(
        *(act(live_client, live_tenant, rec, "approve", r) for r in roles)
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409, 409, 409], [a.text for a in answers]
    final = await read(live_client, live_tenant, rec)
    assert final["status"] == "approved"
    assert [c["id"] for c in await sent_commands(live_client, live_tenant, device)] == [
        final["command_id"]
    ]
    # Two first approvals of a critical method at once: both count, one command.
    stop = await recommend(
        live_database, live_tenant, device, kind="stop", method="stop", params={}
    )
    answers = await asyncio.gather(
        *(act(live_client, live_tenant, stop, "approve", r) for r in (Role.OPERATOR, Role.MANAGER))
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    final = await read(live_client, live_tenant, stop)
    assert (final["status"], len(final["approvals"])) == ("approved", 2)
    assert len(await sent_commands(live_client, live_tenant, device)) == 2


async def test_another_organization_sees_nothing(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, device: str
) -> None:
    rec = await recommend(live_database, live_tenant, device, params={"rpm": 1100})
    intruder = await make_tenant(live_client, live_database)
    for action, body in (("approve", {}), ("reject", {"reason": "x"}), ("done", {})):
        assert error(await act(live_client, intruder, rec, action, Role.ADMIN, **body), 404)
    other = await live_client.get(f"{API}/{rec}", headers=intruder.headers(Role.ADMIN))
    assert error(other, 404)
    listed = ok(await live_client.get(API, headers=intruder.headers(Role.ADMIN)))
    assert listed["items"] == []
    assert (await read(live_client, live_tenant, rec))["status"] == "proposed"
