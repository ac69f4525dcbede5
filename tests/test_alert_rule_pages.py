"""Alert and rule pages over HTTP on both databases: roles, CSRF, filters, forms that refuse
bad input with a message and change nothing, the dry-run preview, and HTML 404 pages."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from tests.support.devices import new_device
from tests.support.rules import HOT, T0, alerts_of, make_rule, send, wait_for_alerts
from tests.support.tenants import Tenant, make_tenant
from tests.test_dashboard_pages import browser_like, csrf_of

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def open_alert(
    http: httpx.AsyncClient, org: Tenant, name: str = "Too hot", **device: Any
) -> tuple[dict[str, Any], str, str]:
    """A device with a threshold rule and its active alert; (alert, device id, token)."""
    device_id, token = await new_device(http, org, **device)
    await make_rule(http, org, name=name, device_id=device_id, condition=HOT, severity="major")
    await send(http, token, T0, t=35)
    [alert] = await wait_for_alerts(http, org, 1, device_id=device_id, status="active")
    return alert, device_id, token


def rule_form(scope: str, **fields: str) -> dict[str, str]:
    """The rule form's fields: a threshold t > 30 on `scope`, warning, enabled."""
    return {
        "name": "Hot fridge",
        "scope": scope,
        "cond_type": "threshold",
        "cond_key": "t",
        "cond_op": ">",
        "cond_value": "30",
        "clear_type": "none",
        "duration_s": "0",
        "severity": "warning",
        "enabled": "1",
        **fields,
    }


async def test_alert_list_filters_and_the_detail_page(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    hot, hot_device, _ = await open_alert(live_client, live_tenant, name="Too hot")
    other, other_device, _ = await open_alert(live_client, live_tenant, name="Also hot")
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:
        page = await http.get("/alerts")
        assert page.status_code == 200, page.text
        assert 'href="/alerts"' in page.text
        assert 'href="/rules"' in page.text
        assert page.text.count("data-alert-id=") == 2
        assert "Acknowledge" not in page.text  # a viewer gets no write controls
        only = await http.get("/alerts", params={"device": hot_device})
        assert f'data-alert-id="{hot["id"]}"' in only.text
        assert f'data-alert-id="{other["id"]}"' not in only.text
        rows = await http.get(
            "/alerts", params={"status": "cleared"}, headers={"HX-Request": "true"}
        )
        assert "<html" not in rows.text
        assert "data-alert-id=" not in rows.text
        assert "No alerts match." in rows.text
        major = await http.get("/alerts", params={"severity": "major", "status": "active"})
        assert major.text.count("data-alert-id=") == 2
        bad = await http.get("/alerts", params={"status": "sleeping"})
        assert bad.status_code == 422
        assert "status must be one of" in bad.json()["error"]["message"]
        detail = await http.get(f"/alerts/{hot['id']}")
        assert detail.status_code == 200
        assert "Too hot" in detail.text
        assert "No comments yet." in detail.text
        assert 'name="text"' not in detail.text  # no comment form for a viewer
        row = await http.get(f"/alerts/{other['id']}", params={"part": "row"})
        assert row.text.lstrip().startswith("<tr")
        assert other_device in row.text


async def test_operators_acknowledge_clear_and_comment_viewers_are_refused(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    alert, _, _ = await open_alert(live_client, live_tenant)
    url = f"/alerts/{alert['id']}"
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:
        csrf = csrf_of(await http.get("/alerts"))
        for action in ("acknowledge", "clear"):
            refused = await http.post(f"{url}/{action}", headers={"X-CSRF-Token": csrf})
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
        refused = await http.post(
            f"{url}/comments", headers={"X-CSRF-Token": csrf}, data={"text": "hi"}
        )
        assert refused.status_code == 403
    async with browser_like(live_app, live_tenant, Role.OPERATOR) as http:
        page = await http.get("/alerts")
        assert "Acknowledge" in page.text
        csrf = csrf_of(page)
        missing = await http.post(f"{url}/acknowledge", headers={"HX-Request": "true"})
        assert missing.status_code == 403
        assert missing.json()["error"]["code"] == "CSRF_FAILED"
        [still] = await alerts_of(live_client, live_tenant, status="active")
        assert still["id"] == alert["id"]
        acked = await http.post(
            f"{url}/acknowledge", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
        )
        assert acked.status_code == 200, acked.text
        assert "data-alert-status>acknowledged<" in acked.text
        assert acked.text.lstrip().startswith("<tr")
        empty = await http.post(
            f"{url}/comments",
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
            data={"text": "   "},
        )
        assert empty.status_code == 422
        assert "a comment needs text" in empty.json()["error"]["message"]
        said = await http.post(
            f"{url}/comments",
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
            data={"text": "on my way"},
        )
        assert said.status_code == 201, said.text
        assert "on my way" in said.text
        taken = await http.post(
            f"{url}/assign",
            headers={"X-CSRF-Token": csrf, "HX-Request": "true", "HX-Target": "alert-head"},
            data={"to": "me"},
        )
        assert taken.status_code == 200, taken.text
        assert 'id="alert-head"' in taken.text
        assert f"<dt>Assignee</dt><dd>{live_tenant.emails[Role.OPERATOR]}</dd>" in taken.text
        assert "Unassign me" in taken.text
        wrong = await http.post(
            f"{url}/assign", headers={"X-CSRF-Token": csrf}, data={"to": "boss"}
        )
        assert wrong.status_code == 422
        listed = await http.get("/alerts")
        assert live_tenant.emails[Role.OPERATOR] in listed.text  # the assignee column
        # A plain form (no JavaScript) posts the token as a field and is sent back.
        cleared = await http.post(f"{url}/clear", data={"csrf_token": csrf})
        assert cleared.status_code == 303
        assert cleared.headers["location"] == url
        detail = await http.get(url)
        assert "data-alert-status>cleared<" in detail.text
        assert "on my way" in detail.text
        assert detail.text.count("on my way") == 1
        again = await http.post(
            f"{url}/clear", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
        )
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "ALERT_CLEARED"
    detail_api = await live_client.get(
        f"/api/v1/alerts/{alert['id']}", headers=live_tenant.headers(Role.VIEWER)
    )
    assert [c["text"] for c in detail_api.json()["comments"]] == ["on my way"]
    assert detail_api.json()["clear_reason"] == "manual"


async def test_device_page_and_dashboard_show_open_alerts(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    alert, device_id, _ = await open_alert(live_client, live_tenant, name="Door open")
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:
        device = await http.get(f"/devices/{device_id}")
        assert f'data-alert-id="{alert["id"]}"' in device.text
        assert "Door open" in device.text
        dashboard = await http.get("/dashboard")
        assert '<span data-active-count="major">1</span>' in dashboard.text
        assert '<span data-active-count="critical">0</span>' in dashboard.text
    await live_client.post(
        f"/api/v1/alerts/{alert['id']}/acknowledge", headers=live_tenant.headers(Role.OPERATOR)
    )
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:
        summary = await http.get("/dashboard/alert-summary", headers={"HX-Request": "true"})
        assert '<span data-active-count="major">0</span>' in summary.text
        device = await http.get(f"/devices/{device_id}")
        assert "data-alert-status>acknowledged<" in device.text


async def test_rule_form_creates_edits_and_deletes(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, _ = await new_device(live_client, live_tenant, name="Fridge")
    async with browser_like(live_app, live_tenant, Role.MANAGER) as http:
        page = await http.get("/rules")
        assert 'href="/rules/new"' in page.text
        form = await http.get("/rules/new")
        assert form.status_code == 200
        csrf = csrf_of(form)
        no_token = await http.post("/rules", data=rule_form(f"device:{device_id}"))
        assert no_token.status_code == 403
        created = await http.post(
            "/rules", data={**rule_form(f"device:{device_id}"), "csrf_token": csrf}
        )
        assert created.status_code == 303, created.text
        rule_id = created.headers["location"].split("/")[-1].split("?")[0]
        listed = await http.get("/rules")
        assert "Hot fridge" in listed.text
        assert "device: <a" in listed.text
        # Edit: a range condition, a clear condition, disabled.
        edited = await http.post(
            f"/rules/{rule_id}",
            data={
                **rule_form(f"device:{device_id}"),
                "cond_type": "outside_range",
                "cond_min": "2",
                "cond_max": "8",
                "clear_type": "json",
                "clear_json": '{"type": "all", "conditions": [{"key": "t", "op": ">", '
                '"value": 3}, {"key": "t", "op": "<", "value": 7}]}',
                "enabled": "",
                "csrf_token": csrf,
            },
        )
        assert edited.status_code == 303, edited.text
        shown = await http.get(f"/rules/{rule_id}")
        assert 'value="outside_range" selected' in shown.text
        assert "&#34;type&#34;: &#34;all&#34;" in shown.text
    stored = await live_client.get(
        f"/api/v1/rules/{rule_id}", headers=live_tenant.headers(Role.VIEWER)
    )
    body = stored.json()
    assert body["condition"] == {"type": "outside_range", "key": "t", "min": 2.0, "max": 8.0}
    assert body["clear_condition"]["type"] == "all"
    assert body["enabled"] is False
    async with browser_like(live_app, live_tenant, Role.MANAGER) as http:
        csrf = csrf_of(await http.get("/rules"))
        gone = await http.post(
            f"/rules/{rule_id}/delete", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
        )
        assert gone.status_code == 200
        assert gone.text == ""
        assert "Hot fridge" not in (await http.get("/rules")).text


async def test_bad_rule_forms_are_4xx_with_messages_and_change_nothing(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, _ = await new_device(live_client, live_tenant, name="Fridge")
    await make_rule(live_client, live_tenant, name="Taken", device_id=device_id, condition=HOT)
    scope = f"device:{device_id}"
    cases: list[tuple[dict[str, str], int, str]] = [
        ({"name": ""}, 422, "name"),
        ({"scope": ""}, 422, "choose the device, profile or asset"),
        ({"scope": f"device:{uuid.uuid4()}"}, 404, "device not found"),
        ({"cond_value": "warm"}, 422, "value must be a number"),
        ({"cond_type": "outside_range", "cond_min": "9", "cond_max": "1"}, 422, "min must be"),
        ({"cond_type": "json", "cond_json": "{nope"}, 422, "not valid JSON"),
        (
            {"cond_type": "json", "cond_json": '{"type": "all", "conditions": []}'},
            422,
            "at least 1 item",
        ),
        ({"duration_s": "soon"}, 422, "whole number of seconds"),
        ({"severity": "dire"}, 422, "severity"),
        ({"name": "Taken"}, 409, "exists already"),
    ]
    async with browser_like(live_app, live_tenant, Role.MANAGER) as http:
        csrf = csrf_of(await http.get("/rules/new"))
        for fields, status, message in cases:
            answer = await http.post(
                "/rules", data={**rule_form(scope), **fields, "csrf_token": csrf}
            )
            assert answer.status_code == status, (fields, answer.text[:500])
            assert answer.headers["content-type"].startswith("text/html")
            assert 'class="form-errors" role="alert"' in answer.text, fields
            errors = re.search(r'<div class="form-errors".*?</div>', answer.text, re.S)
            assert errors is not None
            assert message in errors.group(0), (fields, errors.group(0))
            assert 'value="Taken"' in answer.text or fields.get("name") != "Taken"
    listed = await live_client.get("/api/v1/rules", headers=live_tenant.headers(Role.VIEWER))
    assert [r["name"] for r in listed.json()["items"]] == ["Taken"]


async def test_rule_writes_need_a_manager(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, _ = await new_device(live_client, live_tenant)
    rule = await make_rule(
        live_client, live_tenant, name="Kept", device_id=device_id, condition=HOT
    )
    for role in (Role.VIEWER, Role.OPERATOR):
        async with browser_like(live_app, live_tenant, role) as http:
            listed = await http.get("/rules")
            assert "Kept" in listed.text
            assert 'href="/rules/new"' not in listed.text
            assert "Delete" not in listed.text
            shown = await http.get(f"/rules/{rule['id']}")
            assert shown.status_code == 200
            assert "Save rule" not in shown.text
            assert '<fieldset class="plain" disabled>' in shown.text
            csrf = csrf_of(listed)
            assert (await http.get("/rules/new")).status_code == 403
            created = await http.post(
                "/rules", data={**rule_form(f"device:{device_id}"), "csrf_token": csrf}
            )
            assert created.status_code == 403
            changed = await http.post(
                f"/rules/{rule['id']}",
                data={**rule_form(f"device:{device_id}"), "csrf_token": csrf},
            )
            assert changed.status_code == 403
            deleted = await http.post(f"/rules/{rule['id']}/delete", headers={"X-CSRF-Token": csrf})
            assert deleted.status_code == 403
    stored = await live_client.get(
        f"/api/v1/rules/{rule['id']}", headers=live_tenant.headers(Role.VIEWER)
    )
    assert stored.json()["name"] == "Kept"


async def test_dry_run_preview_charts_the_key_and_lists_episodes(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant, name="Fridge")
    now = int(time.time() * 1000)
    values = [20, 35, 36, 20, 21, 40, 22]
    for i, t in enumerate(values):
        await send(live_client, token, now - (len(values) - i) * 60_000, t=t)
    async with browser_like(live_app, live_tenant, Role.MANAGER) as http:
        csrf = csrf_of(await http.get("/rules/new"))
        headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
        fields = {**rule_form(f"device:{device_id}"), "preview_device": device_id}
        preview = await http.post(
            "/rules/dry-run", headers=headers, data={**fields, "preview_range": "1h"}
        )
        assert preview.status_code == 200, preview.text
        assert 'data-episodes="2"' in preview.text
        assert "7 readings replayed" in preview.text
        chart = re.search(r"data-dryrun='([^']+)'", preview.text)
        assert chart is not None
        assert '"t":[[' in chart.group(1).replace(" ", "")
        bad = await http.post(
            "/rules/dry-run", headers=headers, data={**fields, "cond_value": "warm"}
        )
        assert bad.status_code == 422
        assert "value must be a number" in bad.text
        nowhere = await http.post(
            "/rules/dry-run", headers=headers, data={**fields, "preview_device": ""}
        )
        assert nowhere.status_code == 422
        assert "choose a device" in nowhere.text
    listed = await live_client.get("/api/v1/rules", headers=live_tenant.headers(Role.VIEWER))
    assert listed.json()["items"] == []  # a preview saves nothing


async def test_browsers_get_html_404_pages_the_api_keeps_the_envelope(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:
        for path in (
            f"/alerts/{uuid.uuid4()}",
            f"/rules/{uuid.uuid4()}",
            f"/devices/{uuid.uuid4()}",
            "/devices/not-an-id",
            "/alerts/not-an-id",
            "/no/such/page",
        ):
            page = await http.get(path, headers=HTML)
            assert page.status_code == 404, path
            assert page.headers["content-type"].startswith("text/html"), path
            assert "<h1>Not found</h1>" in page.text, path
            assert '<link rel="stylesheet" href="/static/css/app.css">' in page.text
            as_json = await http.get(path)  # no text/html in Accept: the envelope
            assert as_json.status_code == (422 if "not-an-id" in path else 404), path
            assert as_json.json()["error"]["code"]
        htmx = await http.get(f"/alerts/{uuid.uuid4()}", headers={**HTML, "HX-Request": "true"})
        assert htmx.json()["error"]["code"] == "ALERT_NOT_FOUND"
        api = await http.get(f"/api/v1/alerts/{uuid.uuid4()}", headers=HTML)
        assert api.status_code == 404
        assert api.json()["error"]["code"] == "ALERT_NOT_FOUND"
        refused = await http.get("/users", headers=HTML)
        assert refused.status_code == 403
        assert "<h1>Not allowed</h1>" in refused.text


async def test_a_viewer_previews_a_saved_rule_but_not_another_organizations(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant, name="Freezer")
    now = int(time.time() * 1000)
    for i, t in enumerate([20, 35, 20]):
        await send(live_client, token, now - (3 - i) * 60_000, t=t)
    rule = await make_rule(live_client, live_tenant, device_id=device_id, condition=HOT)
    other = await make_tenant(live_client, live_app.state.database)
    foreign = await make_rule(
        live_client, other, device_id=(await new_device(live_client, other))[0], condition=HOT
    )
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:
        page = await http.get(f"/rules/{rule['id']}")
        assert 'id="preview-form"' in page.text  # read only, but the preview is there
        assert f'name="rule_id" value="{rule["id"]}"' in page.text
        headers = {"X-CSRF-Token": csrf_of(page), "HX-Request": "true"}
        form = {"rule_id": rule["id"], "preview_device": device_id, "preview_range": "1h"}
        preview = await http.post("/rules/dry-run", headers=headers, data=form)
        assert preview.status_code == 200, preview.text
        assert 'data-episodes="1"' in preview.text
        assert "3 readings replayed" in preview.text
        refused = await http.post(
            "/rules/dry-run", headers=headers, data={**form, "rule_id": foreign["id"]}
        )
        assert refused.status_code == 422  # answered in the preview's place, not found
        assert "data-episodes" not in refused.text
